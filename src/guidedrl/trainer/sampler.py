"""Prompt order: seeded shuffled passes over the dataset, with a position that a checkpoint stores."""

from __future__ import annotations

import random

from guidedrl.seeding import derive_seed


class PromptSampler:
    """Yields batches of row indices; pass ``e`` is a permutation seeded by (seed, e), so resuming is exact."""

    def __init__(self, n_rows: int, batch_size: int, seed: int) -> None:
        if n_rows < 1:
            raise ValueError("the training dataset is empty")
        self.n_rows, self.batch_size, self.seed = n_rows, batch_size, seed
        self.epoch, self.position = 0, 0

    def _order(self, epoch: int) -> list[int]:
        order = list(range(self.n_rows))
        random.Random(derive_seed(self.seed, "data", epoch)).shuffle(order)
        return order

    def next_batch(self) -> list[int]:
        """The next ``batch_size`` indices, continuing into the next pass when this one runs out."""
        out: list[int] = []
        while len(out) < self.batch_size:
            take = self._order(self.epoch)[self.position:self.position + self.batch_size - len(out)]
            out += take
            self.position += len(take)
            if self.position >= self.n_rows:
                self.epoch, self.position = self.epoch + 1, 0
        return out

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "position": self.position}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.epoch, self.position = int(state["epoch"]), int(state["position"])
