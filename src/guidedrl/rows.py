"""A row's kind and a batch's groups, each defined once: every stage that asks "whose tokens are these?" or
"how many rows of this group are correct?" asks here.

A kind decides which surrogate a row's tokens get (``algorithm.surrogate.<kind>``), which rows an advantage
add-on touches and which per-kind statistics a step logs; a new kind of row is one more member here plus its
surrogate setting.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

import torch
from torch import Tensor


class RowKind(IntEnum):
    """Whose tokens a row holds."""

    POLICY = 0  # the student's own samples
    TEACHER = 1  # a teacher's text (behaviour log-prob 0, so the ratio is π_θ, as LUFFY)
    HINTED = 2  # sampled with a hint in the context, trained without it (Guide)

    @property
    def key(self) -> str:
        """The kind's name in configs and metrics (``policy``, ``teacher``, ``hinted``)."""
        return self.name.lower()


def kinds_of(rows: int, kind: RowKind) -> Tensor:
    """B long: ``rows`` rows of one kind."""
    return torch.full((rows,), int(kind), dtype=torch.long)


@dataclass(frozen=True)
class Groups:
    """The groups of a batch's rows: each row's group renumbered 0..G−1 (``slot``), the groups' own ids in that
    order (``ids``, any long values, sorted) and their sizes."""

    slot: Tensor
    ids: Tensor
    sizes: Tensor

    @classmethod
    def of(cls, group_index: Tensor) -> Groups:
        ids, slot = torch.unique(group_index, return_inverse=True)
        sizes = torch.zeros(ids.numel(), device=group_index.device).index_add_(
            0, slot, torch.ones_like(slot, dtype=torch.float))
        return cls(slot, ids, sizes)

    def count(self, flags: Tensor) -> Tensor:
        """G: per group, the sum of a per-row value (a count for a bool: correct rows, rows of a kind)."""
        return torch.zeros(self.ids.numel(), dtype=torch.promote_types(flags.dtype, torch.float32),
                           device=flags.device).index_add_(0, self.slot, flags.to(torch.float32))

    def by_id(self, per_group: Tensor) -> Tensor:
        """A per-group value placed at each group's id (0 at ids no group has): for callers indexing by id."""
        out = per_group.new_zeros(int(self.ids.max()) + 1 if self.ids.numel() else 0)
        out[self.ids] = per_group
        return out

    def first_rows(self) -> Tensor:
        """Each group's first row, indexed by the group's id (as :meth:`by_id`)."""
        rows = torch.arange(self.slot.numel(), device=self.slot.device)
        first = torch.full((self.ids.numel(),), self.slot.numel(), dtype=torch.long, device=self.slot.device)
        return self.by_id(first.scatter_reduce(0, self.slot, rows, reduce="amin"))
