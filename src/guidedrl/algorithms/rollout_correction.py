"""Rollout correction: the importance weight π_old / π_sampler of a token sampled by an engine whose log-probs
differ from the training forward's (another kernel, bf16, vLLM). Truncated importance sampling caps the weight;
masked importance sampling drops the tokens (or rows) whose weight passes the threshold. Pure functions."""

from __future__ import annotations

import torch
from torch import Tensor


def rollout_weights(old_logp: Tensor, sampler_logp: Tensor, tokens: Tensor, level: str, mode: str,
                    threshold: float) -> tuple[Tensor, Tensor]:
    """Weights (B×R, detached; 1 outside ``tokens``) and the masked tokens (B×R bool).

    ``level`` token: w_t = π_old(y_t) / π_sampler(y_t); sequence: every token of a row gets
    exp(Σ_t log π_old(y_t) − log π_sampler(y_t)) over the row's ``tokens``. ``mode`` truncate: min(w, threshold);
    mask: w where w ≤ threshold, else 0 (the token or the whole row then adds nothing to the loss)."""
    if level not in ("token", "sequence") or mode not in ("truncate", "mask"):
        raise ValueError(f"rollout correction: unknown level {level!r} or mode {mode!r}")
    log_ratio = torch.where(tokens, old_logp.detach().float() - sampler_logp.float(), 0.0)
    if level == "sequence":
        log_ratio = log_ratio.sum(-1, keepdim=True).expand_as(log_ratio)
    weights = log_ratio.exp()
    if mode == "truncate":
        masked = torch.zeros_like(tokens, dtype=torch.bool)
        weights = weights.clamp(max=threshold)
    else:
        masked = tokens & (weights > threshold)
        weights = torch.where(masked, 0.0, weights)
    return torch.where(tokens, weights, 1.0), masked
