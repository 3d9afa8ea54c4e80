"""The policy loss of one micro-batch: each kind of token gets its registered surrogate, the token losses are
aggregated once, and the configured regularizers are added; plus PPO's value loss. Pure functions.

Layout: per-token tensors are B×R over the response positions, ``response_mask`` marks real tokens and
``kind`` (B) says whose tokens a row holds (:class:`~guidedrl.rows.RowKind`): the student's own samples, a
teacher's text, or a hinted re-roll trained without its hint. Every number is divided by the counts of the whole
mini-batch (:class:`Denominators`), so the micro-batch losses of a mini-batch add up to its loss.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from guidedrl.algorithms.aggregation import Denominators, aggregate
from guidedrl.algorithms.surrogates import SurrogateParams, ratio_of
from guidedrl.registry import REGULARIZERS, SURROGATES
from guidedrl.rows import RowKind

if TYPE_CHECKING:
    from guidedrl.config import AlgorithmConfig

@dataclass(frozen=True)
class LossInputs:
    """One micro-batch as a loss sees it; B×R tensors over the response positions."""

    logp: Tensor  # log π_θ of the response tokens in the training (hint-free) context; has grad
    behaviour_logp: Tensor  # log-probs of the sampling policy; 0 on teacher tokens (ratio = π_θ, as LUFFY)
    advantages: Tensor
    response_mask: Tensor
    kind: Tensor  # B long: each row's RowKind
    prepared: dict[str, dict[str, Tensor]] = field(default_factory=dict)  # per kind: the surrogate parameters
    # its mini-batch hook took from the mini-batch (Guide's quantile γ)
    entropy: Tensor | None = None  # per-token entropy of π_θ
    ref_logp: Tensor | None = None  # log π_ref, for the k3 KL
    teacher_logp: Tensor | None = None  # log π_T of the sampled tokens, for KDRL's k2
    label_logp: Tensor | None = None  # log π_θ of the teacher's label ŷ_t, for TGPO's CE
    topk_logp: Tensor | None = None  # B×R×k: log π_θ of the teacher's top-k tokens, for the top-k forward KL
    teacher_topk_logp: Tensor | None = None  # B×R×k: the teacher's log-probs of those tokens
    teacher_tokens: Tensor | None = None  # B×R bool: where the label terms apply (None = every response token)
    rollout_weight: Tensor | None = None  # B×R: rollout correction's weight of each token (1 outside own tokens)
    rollout_masked: Tensor | None = None  # B×R bool: own tokens its mask mode dropped

    def tokens_of(self, kind: RowKind) -> Tensor:
        """B×R bool: the real response tokens of rows of one kind."""
        return self.response_mask.bool() & (self.kind == kind)[:, None]


def token_losses(x: LossInputs, algo: AlgorithmConfig) -> tuple[Tensor, Tensor]:
    """The policy-gradient loss of every response token (B×R), each kind's by its own surrogate and weighted by
    the rollout correction when there is one, and where a clip is the active branch (B×R bool)."""
    adv = x.advantages.detach()
    loss_mat = torch.zeros_like(x.logp)
    clipped = torch.zeros_like(x.response_mask.bool())
    for kind in RowKind:
        tokens = x.tokens_of(kind)
        if not tokens.any():
            continue
        spec = getattr(algo.surrogate, kind.key)
        params = replace(SurrogateParams(algo.eps_low, algo.eps_high, algo.dual_clip, spec.gamma, spec.tau_pos,
                                         spec.tau_neg), **x.prepared.get(kind.key, {}))
        loss_k, clipped_k = SURROGATES.get(spec.name)(x.logp, x.behaviour_logp, adv, tokens, params)
        loss_mat = torch.where(tokens, loss_k, loss_mat)
        clipped |= clipped_k & tokens
    if x.rollout_weight is not None:
        loss_mat = loss_mat * x.rollout_weight
    return loss_mat, clipped


def pg_loss_by_kind(x: LossInputs, algo: AlgorithmConfig, norm_length: int,
                    denominators: Denominators | None = None) -> dict[RowKind, Tensor]:
    """The policy-gradient term of each kind of token present, aggregated with the mini-batch's counts: they add
    up to ``pg_loss`` (a row holds one kind, so every aggregation mode splits by rows), and the gradient of each
    says how much of the update that kind's tokens make."""
    d = denominators or Denominators.of(x.response_mask, x.kind)
    loss_mat, _ = token_losses(x, algo)
    return {kind: aggregate(loss_mat, x.tokens_of(kind), algo.agg_mode, norm_length, d)
            for kind in RowKind if x.tokens_of(kind).any()}


def policy_loss(x: LossInputs, algo: AlgorithmConfig, step: int, norm_length: int,
                denominators: Denominators | None = None) -> tuple[Tensor, dict[str, float]]:
    """Surrogates per kind of token + Σ λ_k(step)·regularizer, and additive statistics.

    Statistics are sums divided by mini-batch counts, so summing them over micro-batches gives the
    mini-batch's: ``loss``, ``pg_loss``, ``reg/<name>``, ``entropy``, ``clip_frac`` and ``ratio_mean`` (of
    the student's own tokens), ``teacher_prob_mean`` (π_θ of teacher tokens), ``hint_ratio_mean``, and with a
    rollout correction (its weights multiply the surrogates' token losses) ``rollout_correction/weight_mean``
    and ``/masked_frac`` of the student's own tokens.
    """
    d = denominators or Denominators.of(x.response_mask, x.kind)
    mask = x.response_mask.bool()
    loss_mat, clipped = token_losses(x, algo)
    pg_loss = aggregate(loss_mat, mask, algo.agg_mode, norm_length, d)
    total = pg_loss
    stats = {"pg_loss": float(pg_loss.detach())}
    for name in algo.active_regularizers():
        spec = algo.regularizers[name]
        value = aggregate(REGULARIZERS.get(name)(x), mask, spec.agg_mode or algo.agg_mode, norm_length, d)
        stats[f"reg/{name}"] = float(value.detach())
        total = total + spec.at(step) * value
    stats["loss"] = float(total.detach())
    ratio = ratio_of(x.logp, x.behaviour_logp).detach()
    per_kind = {"clip_frac": (clipped.float(), RowKind.POLICY), "ratio_mean": (ratio, RowKind.POLICY),
                "teacher_prob_mean": (ratio, RowKind.TEACHER), "hint_ratio_mean": (ratio, RowKind.HINTED)}
    if x.rollout_weight is not None and x.rollout_masked is not None:
        per_kind |= {"rollout_correction/weight_mean": (x.rollout_weight, RowKind.POLICY),
                     "rollout_correction/masked_frac": (x.rollout_masked.float(), RowKind.POLICY)}
    for key, (values, k) in per_kind.items():
        if d.kind_tokens[k] > 0:
            stats[key] = float((values * x.tokens_of(k)).sum()) / d.kind_tokens[k]
    if x.entropy is not None:
        stats["entropy"] = float((x.entropy.detach() * mask).sum()) / max(d.tokens, 1.0)
    return total, stats


def value_loss(values: Tensor, old_values: Tensor, returns: Tensor, mask: Tensor, clip: float | None,
               agg_mode: str = "token-mean", denominators: Denominators | None = None) -> Tensor:
    """PPO critic loss ½·max((v − R)², (clip(v, v_old ± clip) − R)²), aggregated over ``mask``."""
    loss = (values - returns) ** 2
    if clip is not None:
        clipped = old_values + (values - old_values).clamp(-clip, clip)
        loss = torch.maximum(loss, (clipped - returns) ** 2)
    return aggregate(0.5 * loss, mask, agg_mode, denominators=denominators)
