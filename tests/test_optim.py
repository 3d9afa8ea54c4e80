"""AdamW on bf16 weights (``precision: bf16-pure``): fp32 moments and compensated updates, so an update at lr 1e-6
is not rounded to zero, as it is with torch's AdamW on bf16 weights."""

from __future__ import annotations

import pytest
import torch

from guidedrl.config import OptimConfig
from guidedrl.trainer.optim import CompensatedAdamW, build_optimizer


def bf16_weights(values: list[float]) -> torch.nn.Parameter:
    return torch.nn.Parameter(torch.tensor(values, dtype=torch.bfloat16))


def test_one_step_at_lr_1e6_is_kept_to_the_bf16_precision_of_its_compensation() -> None:
    w = bf16_weights([0.02, -0.5, 1.0])
    start = w.detach().float().clone()
    torch_adamw = torch.optim.AdamW([w], lr=1e-6, weight_decay=0.0)
    w.grad = torch.tensor([1.0, -2.0, 0.5], dtype=torch.bfloat16)
    torch_adamw.step()
    assert torch.equal(w.float(), start)  # the defect: every weight's update rounded away
    ours = CompensatedAdamW([w], lr=1e-6, weight_decay=0.0)
    ours.step()
    state = ours.state[w]
    assert state["exp_avg"].dtype == state["exp_avg_sq"].dtype == torch.float32
    # Adam's first step moves each weight by lr against the sign of its gradient (m̂/√v̂ = g/|g|); the bf16
    # weight does not move, its compensation holds the update (1e-6 in bf16: within 2^-9 of it)
    assert torch.equal(w.float(), start)
    effective = w.float() + state["compensation"].float()
    torch.testing.assert_close(effective, start - 1e-6 * torch.tensor([1.0, -1.0, 1.0]), atol=2e-9, rtol=0)


def test_tiny_updates_accumulate_until_they_move_the_bf16_weight() -> None:
    """300 steps at lr 1e-6 move fp32 AdamW's weights by 3e-4, a step or two of bf16 weights in [0.02, 0.04)
    (1.2e-4 or 2.4e-4 apart): the compensated bf16 weights follow to within one bf16 step, their compensation
    to within 10% of the distance; torch's AdamW on bf16 weights stays put (each update is below half a step)."""
    torch.manual_seed(0)
    start = ((0.02 + 0.02 * torch.rand(256)) * torch.randn(256).sign()).bfloat16()
    grad = torch.randn(256)
    reference = torch.nn.Parameter(start.float().clone())
    ours, plain = torch.nn.Parameter(start.clone()), torch.nn.Parameter(start.clone())
    optimizers = [torch.optim.AdamW([reference], lr=1e-6), CompensatedAdamW([ours], lr=1e-6),
                  torch.optim.AdamW([plain], lr=1e-6)]
    for _ in range(300):
        for p, opt in zip((reference, ours, plain), optimizers):
            p.grad = grad.to(p.dtype)
            opt.step()
    assert torch.equal(plain, start)
    exact = reference.detach()
    moved = exact - start.float()
    assert moved.abs().min() > 2.9e-4
    assert (ours != start).all()  # every bf16 weight moved
    assert ((ours.float() - exact).abs() <= 2.0 ** (exact.abs().log2().floor() - 7)).all()  # one bf16 step
    effective = ours.float() + optimizers[1].state[ours]["compensation"].float()
    assert ((effective - exact).abs() / moved.abs()).max() < 0.1


def test_a_resumed_optimizer_keeps_its_moments_in_fp32() -> None:
    """torch's loading casts state to the parameter's dtype: the moments come back in fp32, exactly; an empty
    state loads as none (accelerate loads one before it swaps in FSDP's sharded parameters)."""
    w = bf16_weights([0.02, -0.5])
    opt = CompensatedAdamW([w], lr=1e-3)
    opt.load_state_dict(opt.state_dict())
    assert len(opt.state) == 0
    w.grad = torch.tensor([0.3, -0.7], dtype=torch.bfloat16)
    opt.step()
    saved = {k: v.clone() for k, v in opt.state[w].items()}
    again = CompensatedAdamW([w], lr=1e-3)
    again.load_state_dict(opt.state_dict())
    for key, value in again.state[w].items():
        assert value.dtype == saved[key].dtype and torch.equal(value, saved[key]), key


@pytest.mark.parametrize("dtype, kind", [(torch.bfloat16, CompensatedAdamW), (torch.float32, torch.optim.AdamW)])
def test_the_run_picks_the_optimizer_by_its_weights_dtype(dtype: torch.dtype, kind: type) -> None:
    model = torch.nn.Linear(2, 2).to(dtype)
    opt, _ = build_optimizer(model, OptimConfig(), total_steps=3)
    assert type(opt) is kind
