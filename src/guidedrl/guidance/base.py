"""What every guidance strategy is given, and the group bookkeeping they share."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import torch
from torch import Tensor
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from guidedrl.batch import RolloutBatch
from guidedrl.precision import Precision
from guidedrl.rewards import Reward
from guidedrl.rollout.budget import ForwardBudget
from guidedrl.rollout.engine import RolloutEngine, SamplingParams


@dataclass
class GuidanceContext:
    """The live pieces of a run a strategy may use: the current policy, its engine and the reward."""

    policy: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    engine: RolloutEngine
    reward: Reward
    correct_threshold: float
    group_size: int
    sampling: SamplingParams  # how the run samples (hinted re-rolls take it with seeds of their own)
    seed: int
    max_prompt_length: int | None = None  # a hinted prompt longer than this is not re-rolled
    context_length: int | None = None  # the student's context: a teacher solution that does not fit is unusable
    precision: Precision = field(default_factory=Precision)  # device and autocast of the student's forwards
    cache_dir: Path | None = None  # where served teachers cache their answers (the run folder's teacher_cache/)
    budget: ForwardBudget = field(default_factory=ForwardBudget)  # how the student's scoring forwards are cut


class Guidance(Protocol):
    """Rewrites a scored batch: ``(batch, rows of its groups, step, first_group) -> (new batch, metrics)``;
    ``first_group`` is the global index of the batch's group 0 (a rank holds a share of the step's groups), so
    a group's random choices are seeded by its global index. The rows a strategy fills itself in every group
    are ``GuidanceConfig.reserved_rows`` (the engine samples the rest)."""

    def __call__(self, batch: RolloutBatch, rows: list[dict], step: int, first_group: int = 0
                 ) -> tuple[RolloutBatch, dict[str, float]]: ...


def rewards_of(ctx: GuidanceContext, rows: list[dict], texts: list[str]) -> Tensor:
    """The run's reward of ``texts[i]`` as an answer to ``rows[i]`` (how guidance verifies what it inserts)."""
    return ctx.reward(rows, texts)[0] if texts else torch.zeros(0)


def prompt_tokens(batch: RolloutBatch, row: int) -> list[int]:
    """The unpadded prompt ids of one row of the batch."""
    r = batch.rollouts
    return r.prompt_ids[row][r.prompt_mask[row].bool()].tolist()


class Ladder:
    """Strategies tried in order; each acts only on groups still failing after the ones before it."""

    def __init__(self, steps: list[Guidance]) -> None:
        self.steps = steps

    def __call__(self, batch: RolloutBatch, rows: list[dict], step: int, first_group: int = 0
                 ) -> tuple[RolloutBatch, dict[str, float]]:
        metrics: dict[str, float] = {}
        for strategy in self.steps:
            batch, stats = strategy(batch, rows, step, first_group)
            metrics.update(stats)
        return batch, metrics
