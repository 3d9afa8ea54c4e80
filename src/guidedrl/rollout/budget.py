"""The token budget: every forward of a step (training, recompute, reference, critic, teacher signal, AMPO's
comprehension scoring, Guide's γ, evaluation) takes rows cut by the padded tokens they hold, not by a row count,
and the built-in engine generates in chunks of prompts bounded by their KV cache. What a step holds is then set
by the budget, not by batch × length (as verl's ``ppo_max_token_len_per_gpu``)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from guidedrl.rollout.engine import Rollouts
from guidedrl.rollout.forward import DEFAULT_LOGITS_CHUNK

if TYPE_CHECKING:
    from guidedrl.config import TrainConfig


def budget_cuts(prompt_lengths: Sequence[int], response_lengths: Sequence[int], tokens: int | None,
                rows: int) -> list[list[int]]:
    """Consecutive runs of row positions, each of at most ``rows`` rows whose padded size — rows × (longest
    prompt + longest response among them), what a left/right-padded forward allocates — stays within
    ``tokens`` (None: no token bound). A single row over the budget is a run of its own."""
    cuts: list[list[int]] = []
    current: list[int] = []
    widest_p = widest_r = 0
    for i, (p, r) in enumerate(zip(prompt_lengths, response_lengths, strict=True)):
        p_max, r_max = max(widest_p, p), max(widest_r, r)
        fits = len(current) < rows and (tokens is None or (len(current) + 1) * (p_max + r_max) <= tokens)
        if current and not fits:
            cuts.append(current)
            current, p_max, r_max = [], p, r
        current.append(i)
        widest_p, widest_r = p_max, r_max
    if current:
        cuts.append(current)
    return cuts


@dataclass(frozen=True)
class ForwardBudget:
    """How the rows of a forward are cut (``tokens`` padded tokens, at most ``rows`` rows) and how many response
    positions' vocabulary-wide logits exist at once (``logits_chunk``; None: a whole forward's)."""

    tokens: int | None = None
    rows: int = 64
    logits_chunk: int | None = DEFAULT_LOGITS_CHUNK

    @classmethod
    def of(cls, cfg: TrainConfig) -> ForwardBudget:
        """A run's budget: ``memory.tokens_per_forward`` and ``logits_chunk``, ``optim.micro_batch_size`` rows."""
        return cls(cfg.memory.tokens_per_forward, cfg.optim.micro_batch_size, cfg.memory.logits_chunk)

    def cuts(self, rollouts: Rollouts, order: Tensor | None = None) -> list[Tensor]:
        """Row indices of each forward over ``rollouts``: rows in ``order`` (default: shortest first, so each
        forward is padded little), cut by the budget."""
        lengths = rollouts.prompt_mask.sum(1) + rollouts.response_mask.sum(1)
        order = lengths.argsort(stable=True) if order is None else order
        p = rollouts.prompt_mask.sum(1)[order].tolist()
        r = rollouts.response_mask.sum(1)[order].long().tolist()
        return [order[cut] for cut in budget_cuts(p, r, self.tokens, self.rows)]

    def per_token(self, rollouts: Rollouts, score: Callable[[Rollouts, Tensor], Tensor | tuple[Tensor, ...]]
                  ) -> list[Tensor]:
        """``score(part, rows)`` — per response token values (rows × R' × …) of the trimmed sub-batch ``part``
        holding ``rows`` — over the budget's forwards, placed back in B×R(×…) tensors on the CPU; zero on
        padding."""
        out: list[Tensor] = []
        width = rollouts.response_ids.shape[1]
        for rows in self.cuts(rollouts):
            values = score(rollouts.select(rows).trimmed(), rows)
            values = values if isinstance(values, tuple) else (values,)
            if not out:
                out = [torch.zeros((rollouts.size, width, *v.shape[2:]), dtype=v.dtype) for v in values]
            for full, part in zip(out, values, strict=True):
                full[rows, :part.shape[1]] = part.detach().cpu()
        return out
