"""Token log-probabilities, entropies and a teacher's predictions from logits, as pure tensor functions.

Each scales the logits by the sampling temperature first, so training sees the distribution the rollouts were
actually drawn from. None materializes a log-softmax over the vocabulary: a log-prob is the logit minus the
log-sum-exp, and the entropy is ``lse − Σ softmax · logits``. Callers hand them one chunk of positions at a
time (:mod:`guidedrl.rollout.forward`), so what exists at once is chunk × vocabulary, never batch × length ×
vocabulary.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor


def scaled_logits(logits: Tensor, temperature: float) -> Tensor:
    """``logits / temperature`` in fp32 (no copy of fp32 logits at temperature 1)."""
    logits = logits.float()
    return logits if temperature == 1.0 else logits / temperature


def token_logprobs(logits: Tensor, tokens: Tensor, temperature: float = 1.0) -> Tensor:
    """``log_softmax(logits / temperature)`` at ``tokens`` — one per position (…), or k per position (…×k)."""
    scaled = scaled_logits(logits, temperature)
    several = tokens.dim() == logits.dim()
    picked = scaled.gather(-1, tokens if several else tokens.unsqueeze(-1)) - torch.logsumexp(scaled, -1, keepdim=True)
    return picked if several else picked.squeeze(-1)


def entropy_from_logits(logits: Tensor, temperature: float = 1.0) -> Tensor:
    """Entropy of ``softmax(logits / temperature)`` at every position: ``lse − Σ p · z`` with z the scaled logits."""
    scaled = scaled_logits(logits, temperature)
    lse = torch.logsumexp(scaled, -1, keepdim=True)
    return (lse - (torch.exp(scaled - lse) * scaled).sum(-1, keepdim=True)).squeeze(-1)


class Predictions(NamedTuple):
    """A model's predictions at N positions: log-prob of the given token, its label (argmax or sample), and
    its k most likely tokens with their log-probs (N×k, best first; None unless asked)."""

    logp: Tensor
    label: Tensor
    topk_ids: Tensor | None
    topk_logp: Tensor | None


def predictions(logits: Tensor, tokens: Tensor, temperature: float = 1.0, top_k: int = 0,
                sample: bool = False, generator: torch.Generator | None = None) -> Predictions:
    """What a scoring teacher reads off its logits (N×V) at N positions: log-prob of ``tokens`` (N), its label
    — the argmax, or with ``sample`` a draw from ``softmax(logits / temperature)`` — and its top ``top_k``."""
    scaled = scaled_logits(logits, temperature)
    lse = torch.logsumexp(scaled, -1, keepdim=True)
    logp = (scaled.gather(-1, tokens[:, None]) - lse).squeeze(-1)
    if sample:
        label = torch.multinomial(torch.exp(scaled - lse), 1, generator=generator).squeeze(-1)
    else:
        label = scaled.argmax(-1)
    if top_k == 0:
        return Predictions(logp, label, None, None)
    values, ids = scaled.topk(top_k, dim=-1)
    return Predictions(logp, label, ids, values - lse)
