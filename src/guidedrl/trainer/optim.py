"""AdamW and the learning-rate schedule of a run (transformers' schedulers, stepped once per training step)."""

from __future__ import annotations

import torch
from transformers import get_scheduler

from guidedrl.config import OptimConfig

SCHEDULES = {"constant": "constant_with_warmup", "cosine": "cosine", "linear": "linear"}


def build_optimizer(model: torch.nn.Module, cfg: OptimConfig, total_steps: int
                    ) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    """AdamW over trainable parameters and its per-training-step schedule (linear warm-up, then the decay)."""
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay)
    sched = get_scheduler(SCHEDULES[cfg.schedule], opt, num_warmup_steps=cfg.warmup_steps,
                          num_training_steps=total_steps)
    return opt, sched
