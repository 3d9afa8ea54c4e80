"""Comprehension-based selection (AMPO): rank verified teacher solutions by how well the student follows them."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor
from transformers import PreTrainedTokenizerBase

from guidedrl.rewards import last_boxed_span


def answer_slot_tokens(tokenizer: PreTrainedTokenizerBase, text: str,
                       answer: str) -> tuple[list[int], list[int]] | None:
    """The solution with the ground truth written into its last ``\\boxed{}``, tokenized without special
    tokens, and the positions of the tokens that carry the answer; None when it has no answer block.

    The text before the answer, the answer and the text after it are tokenized separately, so that no token
    straddles the answer (a BPE merge such as ``{1`` would make the score the probability of the brace too)."""
    span = last_boxed_span(text)
    if span is None:
        return None
    start, end = span
    encode = lambda s: tokenizer(s, add_special_tokens=False)["input_ids"] if s else []  # noqa: E731
    before, middle, after = encode(text[:start]), encode(answer), encode(text[end:])
    return before + middle + after, list(range(len(before), len(before) + len(middle)))


def comprehension_scores(answer_logp: Tensor, answer_mask: Tensor) -> Tensor:
    """Mean probability the student gives the ground-truth answer tokens (B); 0 for rows with none."""
    probs = answer_logp.exp() * answer_mask
    count = answer_mask.sum(1)
    return torch.where(count > 0, probs.sum(1) / count.clamp(min=1), torch.zeros_like(count, dtype=probs.dtype))


def rank_candidates(scores: Sequence[float], format_ok: Sequence[float], format_weight: float, k: int,
                    teachers: Sequence[str] | None = None, per_teacher: int | None = None) -> list[int]:
    """Indices of the top-k by (1-w)·score + w·format, ties in pool order (stable sort), taking at most
    ``per_teacher`` candidates of one teacher (AMPO keeps one solution per teacher)."""
    ranked = sorted(range(len(scores)), key=lambda i: -((1 - format_weight) * scores[i] + format_weight * format_ok[i]))
    picked: list[int] = []
    taken: dict[str, int] = {}
    for i in ranked:
        teacher = teachers[i] if teachers is not None else None
        if per_teacher is not None and teacher is not None and taken.get(teacher, 0) >= per_teacher:
            continue
        picked.append(i)
        taken[teacher] = taken.get(teacher, 0) + 1
        if len(picked) == k:
            break
    return picked
