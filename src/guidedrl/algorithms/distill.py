"""Per-token quantities of the teacher signal (TGPO, on-policy distillation): where the label terms apply,
and the student–teacher gap TGPO measures. Pure functions."""

from __future__ import annotations

import torch
from torch import Tensor

from guidedrl.config import TEACHER_TOKEN_SETS


def teacher_token_mask(kind: str, mask: Tensor, tokens: Tensor | None = None, label: Tensor | None = None,
                       entropy: Tensor | None = None, share: float = 0.2) -> Tensor:
    """Tokens the label terms apply to (B×R bool): every response token, those where the sampled token
    differs from the teacher's label, or each row's ``share`` of tokens with the highest / lowest entropy."""
    m = mask.bool()
    if kind == "all":
        return m
    if kind == "disagree":
        return m & (tokens != label)
    if kind not in TEACHER_TOKEN_SETS:
        raise ValueError(f"unknown teacher token set {kind!r}; expected one of {', '.join(TEACHER_TOKEN_SETS)}")
    ent = entropy.detach().float().masked_fill(~m, float("nan"))
    if kind == "high_entropy":
        return m & (ent >= torch.nanquantile(ent, 1.0 - share, dim=-1, keepdim=True))
    return m & (ent <= torch.nanquantile(ent, share, dim=-1, keepdim=True))


def mismatch_ratio(teacher_argmax: Tensor, tokens: Tensor, mask: Tensor) -> float:
    """Share of masked tokens where the teacher's argmax differs from the sampled token (TGPO's gap measure)."""
    m = mask.bool()
    return float(((teacher_argmax != tokens) & m).sum()) / max(int(m.sum()), 1)


def mean_reverse_kl(logp: Tensor, teacher_logp: Tensor, mask: Tensor) -> float:
    """k1 estimate of the reverse KL to the teacher: masked mean of logp − teacher_logp over sampled tokens."""
    m = mask.to(logp.dtype)
    return float(((logp - teacher_logp).detach() * m).sum() / m.sum().clamp_min(1))
