"""Data parallelism through accelerate: what a rank does and how ranks agree.

``accelerate launch --num_processes N -m guidedrl train CONFIG`` starts N ranks. Each takes a contiguous
share of the step's prompts (a group never straddles ranks), rolls out, scores and guides its own groups;
the loss of every micro-batch is divided by counts summed over all ranks (the global token or row count of
the aggregation mode) and multiplied by N, so DDP's averaged gradient is the gradient of the whole batch's
loss; rank 0 evaluates, logs and writes checkpoints. One process is the same code with ``world == 1``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from typing import Any, TypeVar

import torch
import torch.distributed as dist

T = TypeVar("T")
ADDITIVE = ("loss", "pg_loss", "reg/", "entropy", "clip_frac", "ratio_mean", "teacher_prob_mean", "hint_ratio_mean")


class Ranks:
    """This process's place among the run's processes, and the collectives the trainer needs."""

    def __init__(self, accelerator: Any | None = None) -> None:
        self.accelerator = accelerator
        self.world = accelerator.num_processes if accelerator is not None else 1
        self.rank = accelerator.process_index if accelerator is not None else 0

    @classmethod
    def detect(cls) -> Ranks:
        """Several ranks when launched by ``accelerate launch`` (or torchrun) with more than one process."""
        if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
            return cls()
        from accelerate import Accelerator
        return cls(Accelerator())

    @property
    def sharded(self) -> bool:
        """Whether the weights are sharded over ranks (FSDP, ZeRO-3), which the built-in engine cannot sample from."""
        if self.accelerator is None:
            return False
        kind = str(self.accelerator.distributed_type)
        plugin = getattr(self.accelerator.state, "deepspeed_plugin", None)
        return "FSDP" in kind or (plugin is not None and getattr(plugin, "zero_stage", 0) == 3)

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def device(self) -> torch.device | None:
        """The device accelerate gave this rank (None in one process: the config decides)."""
        return None if self.accelerator is None else self.accelerator.device

    def share(self, items: Sequence[T]) -> tuple[list[T], int]:
        """This rank's contiguous share of ``items`` and the position of its first item."""
        if len(items) % self.world:
            raise ValueError(f"{len(items)} prompts per step do not split over {self.world} processes")
        size = len(items) // self.world
        return list(items[self.rank * size:(self.rank + 1) * size]), self.rank * size

    def sum(self, values: Sequence[float]) -> list[float]:
        """Element-wise sums over ranks."""
        if self.world == 1:
            return list(values)
        t = torch.tensor(list(values), dtype=torch.float64)
        dist.all_reduce(t)
        return t.tolist()

    def gather(self, obj: T) -> list[T]:
        """Every rank's ``obj``, in rank order."""
        if self.world == 1:
            return [obj]
        out: list[Any] = [None] * self.world
        dist.all_gather_object(out, obj)
        return out

    def any(self, flag: bool) -> bool:
        return bool(self.sum([float(flag)])[0])

    def broadcast(self, obj: T) -> T:
        """Rank 0's ``obj`` on every rank."""
        if self.world == 1:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()

    def prepare(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> tuple[Any, Any]:
        """The model (wrapped for gradient all-reduce) and optimizer as this rank trains them."""
        if self.accelerator is None:
            return model, optimizer
        return self.accelerator.prepare(model, optimizer)

    def no_sync(self, model: Any, sync: bool) -> Any:
        """Accumulate without the all-reduce, except on the micro-batch that ends a mini-batch."""
        return nullcontext() if sync or self.world == 1 else model.no_sync()

    def combine(self, metrics: dict[str, float]) -> dict[str, float]:
        """One step's metrics over ranks: loss-like sums (each rank's share of the global normalization),
        times the slowest rank's, everything else the mean over ranks (each holds as many groups)."""
        if self.world == 1:
            return metrics
        every = self.gather(metrics)
        out: dict[str, float] = {}
        for key in sorted({k for m in every for k in m}):
            values = [m[key] for m in every if key in m]
            if key.startswith(ADDITIVE):
                out[key] = sum(values)
            elif key.startswith("time/") or key == "step_time":
                out[key] = max(values)
            else:
                out[key] = sum(values) / len(values)
        return out


@contextmanager
def main_first(ranks: Ranks) -> Iterator[None]:
    """Run the block on rank 0, then let the others through (files rank 0 writes exist for them)."""
    if not ranks.main:
        ranks.barrier()
    yield
    if ranks.main:
        ranks.barrier()
