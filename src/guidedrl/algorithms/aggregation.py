"""Aggregation of a B×R token-loss matrix into one number, normalized by the counts of the whole mini-batch.

A mini-batch is cut into micro-batches (a memory setting) and, on several processes, into ranks. Each
piece divides its sums by the *mini-batch's* token or row count (:class:`Denominators`), so the pieces'
losses add up to the mini-batch's loss exactly, whatever the split (verl's "global token" normalization).
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from guidedrl.config import AGG_MODES
from guidedrl.rows import RowKind


@dataclass(frozen=True)
class Denominators:
    """Counts of a whole mini-batch: real response tokens, rows with at least one token, and tokens per kind of
    row (indexed by :class:`~guidedrl.rows.RowKind`) for the per-kind statistics."""

    tokens: float
    rows: float
    kind_tokens: tuple[float, ...] = (0.0,) * len(RowKind)

    @classmethod
    def of(cls, response_mask: Tensor, kind: Tensor | None = None) -> Denominators:
        """The counts of one batch (B×R mask, B kinds)."""
        lengths = response_mask.sum(-1)
        per_kind = ((0.0,) * len(RowKind) if kind is None else
                    tuple(float(lengths[kind == k].sum()) for k in RowKind))
        return cls(float(lengths.sum()), float((lengths > 0).sum()), per_kind)


def aggregate(loss_mat: Tensor, mask: Tensor, mode: str, norm_length: int | None = None,
              denominators: Denominators | None = None) -> Tensor:
    """Reduce a B×R token-loss matrix over ``mask``'s tokens; an empty mask gives 0 (with grad).

    ``token-mean``: sum over tokens / tokens. ``seq-mean-token-mean``: each row's token mean, summed, / rows
    with ≥1 token (original GRPO). ``seq-mean-token-sum``: each row's token sum, summed, / rows.
    ``seq-mean-token-sum-norm`` (Dr.GRPO): each row's sum / ``norm_length`` (default R), summed, / rows.
    Counts come from ``denominators`` (the whole mini-batch's) or, without them, from this matrix.
    """
    if mode not in AGG_MODES:
        raise ValueError(f"unknown aggregation mode {mode!r}; expected one of {', '.join(AGG_MODES)}")
    m = mask.to(loss_mat.dtype)
    d = denominators or Denominators.of(m)
    masked = loss_mat * m
    if mode == "token-mean":
        return masked.sum() / max(d.tokens, 1.0)
    tokens = m.sum(-1)
    row_sums = masked.sum(-1)
    if mode == "seq-mean-token-mean":
        per_row = row_sums / tokens.clamp_min(1)
    elif mode == "seq-mean-token-sum":
        per_row = row_sums
    else:
        per_row = row_sums / (norm_length or mask.shape[-1])
    return per_row.sum() / max(d.rows, 1.0)
