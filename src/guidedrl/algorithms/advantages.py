"""Advantage estimators: pure functions from rewards and masks to per-token advantages, registered by name.

Layout: per-token tensors are B×R over the response positions only; ``group_index`` (B, long) ties
the rows of one prompt together (groups need not be contiguous). Every registered estimator returns a
B×R tensor that is already broadcast over the tokens and zero outside ``response_mask``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import torch
from torch import Tensor

from guidedrl.registry import ADVANTAGE_ADDONS, ADVANTAGES
from guidedrl.rows import Groups, RowKind

if TYPE_CHECKING:
    from guidedrl.config import AlgorithmConfig

@dataclass(frozen=True)
class AdvantageInputs:
    """What an estimator may read; optional fields are ``None`` when the run does not produce them."""

    rewards: Tensor  # B float: the verifiable reward of each row
    response_mask: Tensor  # B×R: 1 on real response tokens
    group_index: Tensor  # B long: rows of the same prompt share an index
    kind: Tensor | None = None  # B long: each row's RowKind (None: every row is the student's own)
    behaviour_logp: Tensor | None = None  # B×R: log-probs of the sampling policy
    teacher_logp: Tensor | None = None  # B×R: the teacher's log-probs of the sampled tokens
    old_label_logp: Tensor | None = None  # B×R: log π_old of the teacher's label at each position (TGPO-Adv)
    teacher_tokens: Tensor | None = None  # B×R bool: where the label terms apply (None: every response token)
    values: Tensor | None = None  # B×R: a critic's value of the state before each response token (PPO)
    returns: Tensor | None = None  # B×R: the critic's GAE(γ, λ) returns of those states (PPO)

    def rows_of(self, *kinds: RowKind) -> Tensor:
        """B bool: rows of the given kinds (every row counts as the student's own when ``kind`` is None)."""
        if self.kind is None:
            return torch.full_like(self.rewards, RowKind.POLICY in kinds, dtype=torch.bool)
        return torch.isin(self.kind, torch.tensor(kinds, device=self.kind.device))


class AdvantageFn(Protocol):
    """A registered estimator: B×R advantages, zero outside the response mask."""

    def __call__(self, x: AdvantageInputs, eps: float = 1e-6) -> Tensor: ...


class AdvantageAddon(Protocol):
    """A registered add-on: advantages (B×R) plus a term weighted by ``coef``."""

    def __call__(self, advantages: Tensor, x: AdvantageInputs, coef: float) -> Tensor: ...


def group_stats(values: Tensor, group_index: Tensor, rows_mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Per-row mean and unbiased std of the row's group, counting only rows where ``rows_mask`` is set.

    Vectorized with ``index_add``; a group with fewer than two counted rows has std 0 (and mean 0 with none).
    """
    values = values.to(torch.promote_types(values.dtype, torch.float32))
    groups = Groups.of(group_index)
    weight = torch.ones_like(values) if rows_mask is None else rows_mask.to(values.dtype)
    count = groups.count(weight)
    mean = groups.count(values * weight) / count.clamp_min(1)
    squares = groups.count((values - mean[groups.slot]) ** 2 * weight)
    std = torch.where(count > 1, squares / (count - 1).clamp_min(1), torch.zeros_like(squares)).sqrt()
    return mean[groups.slot], std[groups.slot]


def broadcast(per_row: Tensor, response_mask: Tensor) -> Tensor:
    """A per-row value (B) repeated over that row's response tokens (B×R), zero on padding."""
    return per_row.unsqueeze(-1) * response_mask.to(per_row.dtype)


@ADVANTAGES.register("grpo")
def grpo(x: AdvantageInputs, eps: float = 1e-6) -> Tensor:
    """GRPO: (r − group mean) / (group unbiased std + eps); a group of equal rewards gets 0."""
    mean, std = group_stats(x.rewards, x.group_index)
    return broadcast((x.rewards - mean) / (std + eps), x.response_mask)


@ADVANTAGES.register("dr_grpo")
def dr_grpo(x: AdvantageInputs, eps: float = 1e-6) -> Tensor:
    """Dr.GRPO: r − group mean, no std division (AMPO's runs); ``eps`` is unused."""
    mean, _ = group_stats(x.rewards, x.group_index)
    return broadcast(x.rewards - mean, x.response_mask)


@ADVANTAGES.register("grpo_split")
def grpo_split(x: AdvantageInputs, eps: float = 1e-6) -> Tensor:
    """GRPO with mean/std from the group's on-policy rows only (teacher rows excluded), applied to all its rows.

    As the AMPO authors' estimator: a group with fewer than two on-policy rows gets mean 0 and std 1, and a
    zero std is replaced by 1, so an all-wrong group with teacher rows gives them r − 0 rather than r / eps.
    """
    on = ~x.rows_of(RowKind.TEACHER)
    mean, std = group_stats(x.rewards, x.group_index, on)
    groups = Groups.of(x.group_index)
    on_rows = groups.count(on)[groups.slot]
    mean = torch.where(on_rows >= 2, mean, torch.zeros_like(mean))
    std = torch.where((on_rows >= 2) & (std > 0), std, torch.ones_like(std))
    return broadcast((x.rewards - mean) / (std + eps), x.response_mask)


@ADVANTAGES.register("rkl", needs={"teacher_logp"})
def rkl(x: AdvantageInputs, eps: float = 1e-6) -> Tensor:
    """Pure on-policy distillation: A_t = teacher_logp − behaviour_logp per token (no normalization, no future sum)."""
    if x.teacher_logp is None or x.behaviour_logp is None:
        raise ValueError("advantage 'rkl' needs teacher_logp and behaviour_logp (run a teacher scorer)")
    mask = x.response_mask.to(x.teacher_logp.dtype)
    return (x.teacher_logp - x.behaviour_logp) * mask


@ADVANTAGE_ADDONS.register("reverse_kl", needs={"teacher_logp"})
def reverse_kl(advantages: Tensor, x: AdvantageInputs, coef: float) -> Tensor:
    """RLVR advantages plus w·(teacher_logp − behaviour_logp) on the tokens of the student's sampled rows
    (reverse-KL distillation combined with RLVR); teacher-written rows have no student behaviour log-prob."""
    rows = ~x.rows_of(RowKind.TEACHER)
    mask = x.response_mask.bool() & rows[:, None]
    return advantages + coef * torch.where(mask, x.teacher_logp - x.behaviour_logp, 0.0)


@ADVANTAGE_ADDONS.register("label_bonus", needs={"teacher_label", "old_label_logp", "teacher_tokens"})
def label_bonus(advantages: Tensor, x: AdvantageInputs, coef: float) -> Tensor:
    """TGPO-Adv: A_t + λ·π_old(ŷ_t), the student's probability (before the update) of the teacher's label,
    added to the advantage of the token it sampled at that position, on its own rows' label-term tokens."""
    mask = x.response_mask.bool() & x.rows_of(RowKind.POLICY)[:, None]
    if x.teacher_tokens is not None:
        mask = mask & x.teacher_tokens.bool()
    return advantages + coef * x.old_label_logp.exp() * mask


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


@ADVANTAGES.register("gae", needs={"values"})
def gae_whitened(x: AdvantageInputs, eps: float = 1e-6) -> Tensor:
    """PPO: the critic's GAE(γ, λ) advantages (its returns minus its values), whitened over all response tokens
    of the batch."""
    if x.values is None or x.returns is None:
        raise ValueError("advantage 'gae' needs a critic's values and returns (PPO)")
    mask = x.response_mask.bool()
    advantages = torch.where(mask, x.returns - x.values, 0.0)
    real = advantages[mask]
    if real.numel() < 2:
        return advantages
    return torch.where(mask, (advantages - real.mean()) / (real.std() + eps), 0.0)


def estimate_advantages(x: AdvantageInputs, algo: AlgorithmConfig, step: int) -> Tensor:
    """The configured estimator's advantages plus every active add-on at its coefficient for ``step`` (from 1)."""
    advantages = ADVANTAGES.get(algo.advantage)(x, algo.adv_eps)
    for name in algo.active_addons():
        advantages = ADVANTAGE_ADDONS.get(name)(advantages, x, algo.advantage_addons[name].at(step))
    return advantages
