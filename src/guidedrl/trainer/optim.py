"""AdamW and the learning-rate schedule of a run (transformers' schedulers, stepped once per training step).

Weights stored in bf16 (``precision: bf16-pure``) get :class:`CompensatedAdamW`: torch's AdamW would keep its
moments in bf16 too, and an update far below a weight's bf16 resolution (lr 1e-6 on a weight near 0.02, whose
bf16 neighbours are 1e-4 apart) would round to nothing at every step.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from transformers import get_scheduler

from guidedrl.config import OptimConfig

SCHEDULES = {"constant": "constant_with_warmup", "cosine": "cosine", "linear": "linear"}
MOMENTS = ("exp_avg", "exp_avg_sq")


class CompensatedAdamW(torch.optim.AdamW):
    """AdamW for bf16 weights: both moments in fp32, and each update's rounding error kept in a bf16 buffer
    (``compensation``) and added to the next update (Kahan summation), so tiny updates accumulate until they move
    the bf16 weight instead of being lost. The weight plus its compensation follows fp32 AdamW to ~16 bits;
    the state costs 10 bytes per parameter (torch's AdamW on bf16 weights: 4, fp32 weights: 8)."""

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        loss = None if closure is None else closure()
        for group in self.param_groups:
            lr, (beta1, beta2), eps, decay = group["lr"], group["betas"], group["eps"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state.update(step=torch.tensor(0.0), compensation=torch.zeros_like(p),
                                 **{k: torch.zeros_like(p, dtype=torch.float32) for k in MOMENTS})
                state["step"] += 1
                t = float(state["step"])
                grad, weight = p.grad.float(), p.float()
                state["exp_avg"].lerp_(grad, 1 - beta1)
                state["exp_avg_sq"].mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
                denominator = (state["exp_avg_sq"] / (1 - beta2 ** t)).sqrt_().add_(eps)
                update = state["exp_avg"] / (1 - beta1 ** t) / denominator + decay * weight
                exact = weight + (state["compensation"].float() - lr * update)
                p.copy_(exact)  # rounded to bf16
                state["compensation"].copy_(exact - p.float())
        return loss

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """torch's loading casts every state tensor to its parameter's dtype; the moments are put back in fp32."""
        ids = [i for group in state_dict["param_groups"] for i in group["params"]]
        moments = {i: {k: v for k, v in state_dict["state"][i].items() if k in MOMENTS}
                   for i in ids if i in state_dict["state"]}
        super().load_state_dict(state_dict)
        params = [p for group in self.param_groups for p in group["params"]]
        for i, p in zip(ids, params):
            if i in moments:  # (an empty entry would outlive accelerate's switch to sharded parameters)
                self.state[p].update({k: v.to(device=p.device, dtype=torch.float32) for k, v in moments[i].items()})


def build_optimizer(model: torch.nn.Module, cfg: OptimConfig, total_steps: int
                    ) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    """AdamW over trainable parameters (:class:`CompensatedAdamW` when they are bf16) and its per-training-step
    schedule (linear warm-up, then the decay)."""
    params = [p for p in model.parameters() if p.requires_grad]
    kind = CompensatedAdamW if any(p.dtype == torch.bfloat16 for p in params) else torch.optim.AdamW
    opt = kind(params, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay)
    sched = get_scheduler(SCHEDULES[cfg.schedule], opt, num_warmup_steps=cfg.warmup_steps,
                          num_training_steps=total_steps)
    return opt, sched
