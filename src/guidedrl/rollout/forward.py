"""The teacher-forced forward over prompt + response that training uses to score response tokens."""

from __future__ import annotations

from typing import NamedTuple

from torch import Tensor
from torch.nn import Module

from guidedrl.algorithms.logprobs import entropy_from_logits, token_logprobs


class ResponseLogprobs(NamedTuple):
    """Per-response-token values, each B×R; the optional ones are None unless requested."""

    logp: Tensor
    entropy: Tensor | None
    label_logp: Tensor | None
    topk_logp: Tensor | None  # B×R×k


def position_ids_from_mask(mask: Tensor) -> Tensor:
    """Positions counted over real tokens only, so left padding does not shift a prompt's positions."""
    return (mask.long().cumsum(-1) - 1).clamp(min=0)


def response_logits(model: Module, input_ids: Tensor, attention_mask: Tensor, prompt_width: int) -> Tensor:
    """Logits (B×R×V) at the positions that predict each response token; prompt logits are never projected."""
    width = input_ids.shape[1] - prompt_width
    device = next(model.parameters()).device
    input_ids, attention_mask = input_ids.to(device), attention_mask.to(device)
    out = model(input_ids=input_ids, attention_mask=attention_mask,
                position_ids=position_ids_from_mask(attention_mask), use_cache=False, logits_to_keep=width + 1)
    return out.logits[:, :-1]


def response_logprobs(model: Module, input_ids: Tensor, attention_mask: Tensor, prompt_width: int,
                      temperature: float = 1.0, labels: Tensor | None = None,
                      with_entropy: bool = False, topk_ids: Tensor | None = None) -> ResponseLogprobs:
    """Log-probs at ``temperature`` of the response tokens (columns from ``prompt_width`` on), from one forward,
    on the model's device (inputs are moved there).

    ``labels`` (B×R) are alternative tokens to score at the same positions, e.g. a teacher's argmax, and
    ``topk_ids`` (B×R×k) several per position; logits are only projected where they predict response tokens.
    """
    logits = response_logits(model, input_ids, attention_mask, prompt_width)
    device = logits.device
    return ResponseLogprobs(
        token_logprobs(logits, input_ids[:, prompt_width:].to(device), temperature),
        entropy_from_logits(logits, temperature) if with_entropy else None,
        token_logprobs(logits, labels.to(device), temperature) if labels is not None else None,
        token_logprobs(logits, topk_ids.to(device), temperature) if topk_ids is not None else None,
    )
