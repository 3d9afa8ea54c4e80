"""Batch filters, registered by name: which rows of a guided batch the update keeps (pure)."""

from __future__ import annotations

from torch import Tensor

from guidedrl.algorithms.advantages import group_stats
from guidedrl.registry import BATCH_FILTERS


@BATCH_FILTERS.register("flat_groups")
def flat_groups(rewards: Tensor, group_index: Tensor) -> Tensor:
    """DAPO's dynamic-sampling filter: B bool, False on rows of groups whose rewards are all equal (no signal)."""
    _, std = group_stats(rewards, group_index)
    return std > 0
