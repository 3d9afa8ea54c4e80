"""When to guide: how many rows of each group to replace, from the group's correctness (pure)."""

from __future__ import annotations

import torch
from torch import Tensor

from guidedrl.rows import Groups


def guidance_demand(correct: Tensor, group_index: Tensor, trigger: str, k: int, max_k: int) -> Tensor:
    """Per group id, the number of guided rows wanted (0 = leave the group on-policy).

    ``all_wrong``: k where no row is correct (AMPO, Guide). ``adaptive_k``: where fewer than half
    are correct, min(max_k, size/2 - #correct) (AMPO's newer rule, about one correct per wrong).
    ``always``: k for every group (LUFFY).
    """
    groups = Groups.of(group_index)
    n_correct, sizes = groups.count(correct), groups.sizes
    if trigger == "all_wrong":
        demand = torch.where(n_correct == 0, k, 0)
    elif trigger == "adaptive_k":
        demand = torch.where(n_correct < sizes / 2, torch.clamp(sizes // 2 - n_correct, max=max_k), 0)
    elif trigger == "always":
        demand = torch.full_like(sizes, k)
    else:
        raise ValueError(f"unknown guidance trigger {trigger!r}; known: all_wrong, adaptive_k, always")
    return groups.by_id(demand.long())
