"""Advantage estimators: pure functions from rewards and masks to per-token advantages, registered by name.

Layout: per-token tensors are B×R over the response positions only; ``group_index`` (B, long) ties
the rows of one prompt together (groups need not be contiguous). Every registered estimator returns a
B×R tensor that is already broadcast over the tokens and zero outside ``response_mask``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import Tensor


@dataclass(frozen=True)
class AdvantageInputs:
    """What an estimator may read; optional fields are ``None`` when the run does not produce them."""

    rewards: Tensor  # B float: the verifiable reward of each row
    response_mask: Tensor  # B×R: 1 on real response tokens
    group_index: Tensor  # B long: rows of the same prompt share an index
    on_policy: Tensor | None = None  # B bool: False on teacher (off-policy) rows
    behaviour_logp: Tensor | None = None  # B×R: log-probs of the sampling policy
    teacher_logp: Tensor | None = None  # B×R: the teacher's log-probs of the sampled tokens
    values: Tensor | None = None  # B×R: a critic's value of the state before each response token (PPO)
    gamma: float = 1.0  # GAE discount
    lam: float = 1.0  # GAE λ


class AdvantageFn(Protocol):
    """A registered estimator: B×R advantages, zero outside the response mask."""

    def __call__(self, x: AdvantageInputs, eps: float = 1e-6) -> Tensor: ...


ADVANTAGES: dict[str, AdvantageFn] = {}


def register_advantage(name: str) -> Callable[[AdvantageFn], AdvantageFn]:
    """Decorator adding an estimator to ``ADVANTAGES`` under ``name`` (the config's ``algorithm.advantage``)."""
    def add(fn: AdvantageFn) -> AdvantageFn:
        if name in ADVANTAGES:
            raise ValueError(f"advantage estimator {name!r} is already registered")
        ADVANTAGES[name] = fn
        return fn
    return add


def _group_slots(group_index: Tensor) -> tuple[Tensor, int]:
    """Each row's group renumbered 0..G−1 (any long ids, in any order), and G."""
    ids, slot = torch.unique(group_index, return_inverse=True)
    return slot, ids.numel()


def group_stats(values: Tensor, group_index: Tensor, rows_mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Per-row mean and unbiased std of the row's group, counting only rows where ``rows_mask`` is set.

    Vectorized with ``index_add``; a group with fewer than two counted rows has std 0 (and mean 0 with none).
    """
    values = values.to(torch.promote_types(values.dtype, torch.float32))
    slot, n_groups = _group_slots(group_index)
    weight = torch.ones_like(values) if rows_mask is None else rows_mask.to(values.dtype)
    count = values.new_zeros(n_groups).index_add_(0, slot, weight)
    mean = values.new_zeros(n_groups).index_add_(0, slot, values * weight) / count.clamp_min(1)
    squares = values.new_zeros(n_groups).index_add_(0, slot, (values - mean[slot]) ** 2 * weight)
    std = torch.where(count > 1, squares / (count - 1).clamp_min(1), torch.zeros_like(squares)).sqrt()
    return mean[slot], std[slot]


def rows_with_signal(rewards: Tensor, group_index: Tensor) -> Tensor:
    """B bool: rows whose group's rewards are not all equal — the groups DAPO's dynamic sampling keeps."""
    _, std = group_stats(rewards, group_index)
    return std > 0


def broadcast(per_row: Tensor, response_mask: Tensor) -> Tensor:
    """A per-row value (B) repeated over that row's response tokens (B×R), zero on padding."""
    return per_row.unsqueeze(-1) * response_mask.to(per_row.dtype)


@register_advantage("grpo")
def grpo(x: AdvantageInputs, eps: float = 1e-6) -> Tensor:
    """GRPO: (r − group mean) / (group unbiased std + eps); a group of equal rewards gets 0."""
    mean, std = group_stats(x.rewards, x.group_index)
    return broadcast((x.rewards - mean) / (std + eps), x.response_mask)


@register_advantage("dr_grpo")
def dr_grpo(x: AdvantageInputs, eps: float = 1e-6) -> Tensor:
    """Dr.GRPO: r − group mean, no std division (AMPO's runs); ``eps`` is unused."""
    mean, _ = group_stats(x.rewards, x.group_index)
    return broadcast(x.rewards - mean, x.response_mask)


@register_advantage("grpo_split")
def grpo_split(x: AdvantageInputs, eps: float = 1e-6) -> Tensor:
    """GRPO with mean/std from the group's on-policy rows only, applied to all its rows (teacher rows too).

    A group with fewer than two on-policy rows has no usable on-policy std, so it falls back to the
    statistics of the whole mixed group (plain ``grpo``). With ``on_policy`` None every row counts.
    """
    mean, std = group_stats(x.rewards, x.group_index)
    if x.on_policy is not None:
        on = x.on_policy.bool()
        on_mean, on_std = group_stats(x.rewards, x.group_index, on)
        slot, n_groups = _group_slots(x.group_index)
        on_rows = torch.zeros(n_groups, device=on.device).index_add_(0, slot, on.float())
        enough = (on_rows >= 2)[slot]
        mean, std = torch.where(enough, on_mean, mean), torch.where(enough, on_std, std)
    return broadcast((x.rewards - mean) / (std + eps), x.response_mask)


@register_advantage("rkl")
def rkl(x: AdvantageInputs, eps: float = 1e-6) -> Tensor:
    """Pure on-policy distillation: A_t = teacher_logp − behaviour_logp per token (no normalization, no future sum)."""
    if x.teacher_logp is None or x.behaviour_logp is None:
        raise ValueError("advantage 'rkl' needs teacher_logp and behaviour_logp (run a teacher scorer)")
    mask = x.response_mask.to(x.teacher_logp.dtype)
    return (x.teacher_logp - x.behaviour_logp) * mask


def plus_reverse_kl(advantages: Tensor, x: AdvantageInputs, weight: float) -> Tensor:
    """RLVR advantages plus w·(teacher_logp − behaviour_logp) on the tokens of on-policy rows (reverse-KL
    distillation combined with RLVR); teacher-written rows have no student behaviour log-prob and keep theirs."""
    if x.teacher_logp is None or x.behaviour_logp is None:
        raise ValueError("plus_reverse_kl needs teacher_logp and behaviour_logp (run a teacher scorer)")
    rows = torch.ones_like(x.rewards, dtype=torch.bool) if x.on_policy is None else x.on_policy
    mask = x.response_mask.bool() & rows[:, None]
    return advantages + weight * torch.where(mask, x.teacher_logp - x.behaviour_logp, 0.0)


def gae(rewards: Tensor, values: Tensor, response_mask: Tensor, gamma: float = 1.0, lam: float = 1.0
        ) -> tuple[Tensor, Tensor]:
    """PPO's GAE(γ, λ) with the outcome reward ``rewards`` (B) placed on each row's last real response token.

    ``values`` (B×R) are the critic's estimates (treated as constants). Computed right to left; padded
    positions are skipped (the next value and advantage carry over them) so rows of any length work.
    Returns (advantages, returns = advantages + values), both B×R and zero outside the mask.
    """
    mask = response_mask.bool()
    values = values.detach().to(torch.promote_types(values.dtype, torch.float32))
    last = mask & (mask.long().cumsum(-1) == mask.long().sum(-1, keepdim=True))
    token_rewards = last.to(values.dtype) * rewards.to(values.dtype).unsqueeze(-1)
    next_value = values.new_zeros(values.shape[0])
    next_adv = values.new_zeros(values.shape[0])
    columns = []
    for t in reversed(range(values.shape[1])):
        delta = token_rewards[:, t] + gamma * next_value - values[:, t]
        adv = delta + gamma * lam * next_adv
        next_adv = torch.where(mask[:, t], adv, next_adv)
        next_value = torch.where(mask[:, t], values[:, t], next_value)
        columns.append(adv)
    advantages = torch.where(mask, torch.stack(columns[::-1], dim=1), 0.0)
    return advantages, torch.where(mask, advantages + values, 0.0)


@register_advantage("gae")
def gae_whitened(x: AdvantageInputs, eps: float = 1e-6) -> Tensor:
    """PPO: GAE(γ, λ) from the critic's values, whitened over all response tokens of the batch."""
    if x.values is None:
        raise ValueError("advantage 'gae' needs a critic's values (PPO)")
    advantages, _ = gae(x.rewards, x.values, x.response_mask, x.gamma, x.lam)
    mask = x.response_mask.bool()
    real = advantages[mask]
    if real.numel() < 2:
        return advantages
    return torch.where(mask, (advantages - real.mean()) / (real.std() + eps), 0.0)


def linear_decay(step: int, start: float, delta: float, floor: float = 0.0) -> float:
    """TGPO's λ_k = max(start − (k − 1)·delta, floor), with the step k counted from 1."""
    return max(start - (step - 1) * delta, floor)
