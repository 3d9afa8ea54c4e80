"""RLOO (Ahmadian et al., 2024) added to guidedrl in one file: a leave-one-out baseline.

Each row's advantage is its reward minus the mean reward of the *other* rows of its group,
A_i = r_i − (Σ_j r_j − r_i)/(G − 1), broadcast over its response tokens: no std division, and a row never sits
in its own baseline. Use it by naming this file in ``plugins`` and the estimator in ``algorithm.advantage``
(``examples/rloo.yaml``).
"""

from __future__ import annotations

from torch import Tensor

from guidedrl.algorithms.advantages import AdvantageInputs, broadcast, group_stats
from guidedrl.registry import ADVANTAGES


@ADVANTAGES.register("rloo")
def rloo(x: AdvantageInputs, eps: float = 1e-6) -> Tensor:
    """r − the mean of the group's other rows, i.e. G/(G − 1)·(r − group mean); ``eps`` is unused."""
    mean, _ = group_stats(x.rewards, x.group_index)
    size = x.group_index.bincount()[x.group_index].to(mean.dtype)  # G of each row's group
    return broadcast(size / (size - 1).clamp_min(1) * (x.rewards - mean), x.response_mask)
