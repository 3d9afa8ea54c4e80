"""The teacher-forced forward over prompt + response that scores response tokens, in bounded memory.

The model runs with its output head bypassed, so it returns the last hidden states (B×R×H) instead of logits;
the head is then applied to ``logits_chunk`` response positions at a time and each chunk's logits are reduced
at once to what the caller reads (log-prob of one token, entropy, a label's or top-k's log-probs, a teacher's
label). With gradients, each chunk runs under activation checkpointing, so its logits are recomputed in the
backward instead of kept: what exists at once is chunk × vocabulary, never batch × length × vocabulary, and
nothing vocabulary-wide leaves the model's device. A model whose output is not its head's (logit soft-capping,
a logit scale) or whose head carries a hook is scored through its full logits instead.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import NamedTuple

import torch
from torch import Tensor
from torch.nn import Module
from torch.utils.checkpoint import checkpoint

from guidedrl.algorithms.logprobs import Predictions, entropy_from_logits, predictions, token_logprobs

DEFAULT_LOGITS_CHUNK = 1024  # response positions whose vocabulary-wide logits exist at once
_HEAD_IS_LAST: weakref.WeakKeyDictionary[Module, bool] = weakref.WeakKeyDictionary()


class ResponseLogprobs(NamedTuple):
    """Per-response-token values, each B×R; the optional ones are None unless requested."""

    logp: Tensor
    entropy: Tensor | None
    label_logp: Tensor | None
    topk_logp: Tensor | None  # B×R×k


def position_ids_from_mask(mask: Tensor) -> Tensor:
    """Positions counted over real tokens only, so left padding does not shift a prompt's positions."""
    return (mask.long().cumsum(-1) - 1).clamp(min=0)


def _unwrapped(model: Module) -> Module:
    """The model inside a DDP wrapper (whose forward must still be the one called)."""
    return getattr(model, "module", model)


@contextmanager
def _head_bypassed(head: Module) -> Iterator[Callable[[Tensor], Tensor]]:
    """While inside, the output head passes its input through (the model's forward returns hidden states where
    it returned logits); yields the head's real forward. Parameters and their state are not touched; a forward
    set on the instance (accelerate's device hooks) is put back."""
    own = head.__dict__.get("forward")
    real = head.forward
    head.forward = lambda hidden: hidden  # an instance attribute shadows the class's forward
    try:
        yield real
    finally:
        if own is None:
            del head.forward
        else:
            head.forward = own


def _model_inputs(model: Module, input_ids: Tensor, attention_mask: Tensor) -> dict[str, Tensor]:
    device = next(model.parameters()).device
    input_ids, attention_mask = input_ids.to(device), attention_mask.to(device)
    return {"input_ids": input_ids, "attention_mask": attention_mask,
            "position_ids": position_ids_from_mask(attention_mask), "use_cache": False}


def chunkable_head(model: Module) -> Module | None:
    """The model's output head when it may be applied in chunks outside the model's forward — the logits are
    exactly the head applied to what it receives (checked once per model on two tokens) and no hook is set on
    it — else None (the model is then scored through its full logits)."""
    inner = _unwrapped(model)
    head = inner.get_output_embeddings() if hasattr(inner, "get_output_embeddings") else None
    if head is None or head._forward_hooks or head._forward_pre_hooks:
        return None
    if inner not in _HEAD_IS_LAST:
        probe = torch.zeros((1, 2), dtype=torch.long)
        inputs = _model_inputs(inner, probe, torch.ones_like(probe))
        with torch.no_grad():
            direct = inner(**inputs).logits
            with _head_bypassed(head) as real_head:
                via_head = real_head(inner(**inputs).logits)
        _HEAD_IS_LAST[inner] = direct.shape == via_head.shape and torch.allclose(
            direct.float(), via_head.float(), rtol=1e-4, atol=1e-4)
    return head if _HEAD_IS_LAST[inner] else None


def response_logits(model: Module, input_ids: Tensor, attention_mask: Tensor, prompt_width: int) -> Tensor:
    """Logits (B×R×V) at the positions that predict each response token, in one piece: only for models whose
    head cannot be chunked (:func:`head_is_last`); prompt logits are never projected."""
    width = input_ids.shape[1] - prompt_width
    out = model(**_model_inputs(model, input_ids, attention_mask), logits_to_keep=width + 1)
    return out.logits[:, :-1]


def _scored_positions(model: Module, input_ids: Tensor, attention_mask: Tensor, prompt_width: int
                      ) -> tuple[Tensor, Callable[[Tensor], Tensor]]:
    """Flattened states at the B·R positions that predict response tokens (B·R × H) and the map from a chunk of
    them to logits: hidden states and the head when the head can be chunked, else full logits and identity."""
    width, head = input_ids.shape[1] - prompt_width, chunkable_head(model)
    if head is None:
        logits = response_logits(model, input_ids, attention_mask, prompt_width)
        return logits.flatten(0, 1), lambda chunk: chunk
    with _head_bypassed(head) as real_head:
        hidden = model(**_model_inputs(model, input_ids, attention_mask), logits_to_keep=width + 1).logits[:, :-1]
    return hidden.flatten(0, 1), real_head


def _chunked(reduce: Callable[..., tuple[Tensor, ...]], states: Tensor, per_position: list[Tensor | None],
             chunk: int | None) -> list[Tensor]:
    """``reduce(states[a:b], *per_position[a:b])`` over chunks of positions, outputs concatenated; with gradients
    each chunk is checkpointed, so its logits are rebuilt in the backward rather than kept."""
    size = chunk or max(states.shape[0], 1)
    grad = torch.is_grad_enabled() and states.requires_grad
    parts: list[tuple[Tensor, ...]] = []
    for start in range(0, states.shape[0], size):
        args = [states[start:start + size], *(None if t is None else t[start:start + size] for t in per_position)]
        parts.append(checkpoint(reduce, *args, use_reentrant=False) if grad else reduce(*args))
    if not parts:
        parts = [reduce(states, *per_position)]
    return [torch.cat(column) for column in zip(*parts)]


def response_logprobs(model: Module, input_ids: Tensor, attention_mask: Tensor, prompt_width: int,
                      temperature: float = 1.0, labels: Tensor | None = None, with_entropy: bool = False,
                      topk_ids: Tensor | None = None, logits_chunk: int | None = DEFAULT_LOGITS_CHUNK,
                      entropy_grad: bool = True) -> ResponseLogprobs:
    """Log-probs at ``temperature`` of the response tokens (columns from ``prompt_width`` on), from one forward,
    on the model's device (inputs are moved there).

    ``labels`` (B×R) are alternative tokens to score at the same positions, e.g. a teacher's argmax, and
    ``topk_ids`` (B×R×k) several per position. ``with_entropy`` adds the entropy at every position, with
    gradient only when ``entropy_grad`` (a loss term reads it), else detached (a metric). ``logits_chunk``
    positions' logits exist at once (None: all of them).
    """
    b, width = input_ids.shape[0], input_ids.shape[1] - prompt_width
    states, head = _scored_positions(model, input_ids, attention_mask, prompt_width)
    device = states.device
    flat = lambda t: None if t is None else t.to(device).flatten(0, 1)  # noqa: E731

    def reduce(part: Tensor, tokens: Tensor, label: Tensor | None, topk: Tensor | None) -> tuple[Tensor, ...]:
        logits = head(part)
        out = [token_logprobs(logits, tokens, temperature)]
        if label is not None:
            out.append(token_logprobs(logits, label, temperature))
        if topk is not None:
            out.append(token_logprobs(logits, topk, temperature))
        if with_entropy:
            if entropy_grad:
                out.append(entropy_from_logits(logits, temperature))
            else:
                with torch.no_grad():
                    out.append(entropy_from_logits(logits.detach(), temperature))
        return tuple(out)

    columns = iter(_chunked(reduce, states, [flat(input_ids[:, prompt_width:]), flat(labels), flat(topk_ids)],
                            logits_chunk))
    shape = lambda t: t.view(b, width, *t.shape[1:])  # noqa: E731
    logp = shape(next(columns))
    label_logp = shape(next(columns)) if labels is not None else None
    topk_logp = shape(next(columns)) if topk_ids is not None else None
    entropy = shape(next(columns)) if with_entropy else None
    return ResponseLogprobs(logp, entropy, label_logp, topk_logp)


def response_predictions(model: Module, input_ids: Tensor, attention_mask: Tensor, prompt_width: int,
                         temperature: float = 1.0, top_k: int = 0, sample: bool = False,
                         generator: torch.Generator | None = None,
                         logits_chunk: int | None = DEFAULT_LOGITS_CHUNK) -> Predictions:
    """A frozen model's :func:`~guidedrl.algorithms.logprobs.predictions` at every response position (B×R, top-k
    B×R×k), chunk by chunk on its device, without gradients."""
    b, width = input_ids.shape[0], input_ids.shape[1] - prompt_width
    with torch.no_grad():
        states, head = _scored_positions(model, input_ids, attention_mask, prompt_width)
        tokens = input_ids[:, prompt_width:].to(states.device).flatten()
        size = logits_chunk or max(states.shape[0], 1)
        parts = [predictions(head(states[s:s + size]), tokens[s:s + size], temperature, top_k, sample, generator)
                 for s in range(0, states.shape[0], size)]
    if not parts:
        parts = [predictions(head(states), tokens, temperature, top_k, sample, generator)]
    joined = [None if column[0] is None else torch.cat(column).view(b, width, *column[0].shape[1:])
              for column in zip(*parts)]
    return Predictions(*joined)
