"""GSPO (Zheng et al., 2025) added to guidedrl in one file: a sequence-level importance ratio, clipped.

Every token of row i carries the value of s_i = exp(mean_t log ρ_{i,t}) and the gradient s_i·∇log π_θ(o_{i,t})
(GSPO-token), so rows of any length are weighted alike; with ``agg_mode: seq-mean-token-mean`` the loss is
GSPO's mean over sequences of −min(s_i·A_i, clip(s_i)·A_i). Use it by naming this file in ``plugins`` and the
surrogate in ``algorithm.surrogate`` (``examples/gspo.yaml``); any kind of token may use it.
"""

from __future__ import annotations

import torch
from torch import Tensor

from guidedrl.algorithms.surrogates import LOG_RATIO_CLAMP, SurrogateParams
from guidedrl.registry import SURROGATES


@SURROGATES.register("gspo")
def gspo(logp: Tensor, old_logp: Tensor, adv: Tensor, mask: Tensor, p: SurrogateParams) -> tuple[Tensor, Tensor]:
    """Per-token loss −A·s (clipped to 1 ± ε) with s the row's geometric-mean ratio; clipped where clipping binds."""
    m = mask.to(logp.dtype)
    log_ratio = ((logp - old_logp) * m).sum(-1, keepdim=True) / m.sum(-1, keepdim=True).clamp_min(1)
    ratio = torch.exp(log_ratio.detach().clamp(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP) + logp - logp.detach())
    unclipped, clipped = -adv * ratio, -adv * ratio.clamp(1 - p.eps_low, 1 + p.eps_high)
    return torch.maximum(unclipped, clipped), clipped > unclipped
