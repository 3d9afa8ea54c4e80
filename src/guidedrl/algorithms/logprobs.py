"""Token log-probabilities and entropies from logits, as pure tensor functions.

Both scale the logits by the sampling temperature first, so training sees the distribution the
rollouts were actually drawn from.
"""

from __future__ import annotations

import torch
from torch import Tensor


def token_logprobs(logits: Tensor, tokens: Tensor, temperature: float = 1.0) -> Tensor:
    """``log_softmax(logits / temperature)`` at ``tokens`` — B×R, or B×R×k for k tokens per position — without
    materialising the B×R×V log-softmax."""
    scaled = logits.float() / temperature
    several = tokens.dim() == logits.dim()
    picked = scaled.gather(-1, tokens if several else tokens.unsqueeze(-1)) - torch.logsumexp(scaled, -1, keepdim=True)
    return picked if several else picked.squeeze(-1)


def entropy_from_logits(logits: Tensor, temperature: float = 1.0) -> Tensor:
    """Entropy of ``softmax(logits / temperature)`` at every position (B×R)."""
    scaled = logits.float() / temperature
    logp = torch.log_softmax(scaled, dim=-1)
    return -(logp.exp() * logp).sum(-1)
