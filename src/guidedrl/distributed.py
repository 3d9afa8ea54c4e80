"""Data parallelism and sharding through accelerate: what a rank does and how ranks agree.

``accelerate launch --num_processes N -m guidedrl train CONFIG`` starts N ranks. Each takes a contiguous
share of the step's prompts (a group never straddles ranks), rolls out, scores and guides its own groups;
the loss of every micro-batch is divided by counts summed over all ranks (the global token or row count of
the aggregation mode) and multiplied by N, so the gradient the ranks average (DDP's all-reduce, FSDP's
reduce-scatter) is the gradient of the whole batch's loss. Every rank runs as many training forwards per
mini-batch as the rank with the most (the extra ones real forwards weighted 0), so the wrapped model's
collectives match. Evaluation is split over ranks and gathered on rank 0, which logs and writes checkpoints.
One process is the same code with ``world == 1``.

Sharding is FSDP2 (``configs/accelerate/fsdp.yaml``): weights, gradients and AdamW state are split over ranks.
Sampling, scoring and evaluation run inside :meth:`Ranks.full_weights`, where every rank holds the whole
weights, so their forwards make no collective and ranks may run different numbers of them. A checkpoint
holds the full weights (gathered on rank 0) and each rank's own shard of the optimizer state. accelerate
applies FSDP on accelerators only; on CPU processes (gloo) the launch's FSDP2 plugin is switched on here, so
the CPU tests run the path a GPU run takes. DeepSpeed and the FSDP settings guidedrl does not run are refused
at start: they cannot be tested here (DeepSpeed needs CUDA).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any, Literal, TypeVar

import torch
import torch.distributed as dist

from guidedrl.errors import RunError

T = TypeVar("T")
Sharding = Literal["none", "optimizer", "full"]
ADDITIVE = ("loss", "pg_loss", "reg/", "entropy", "clip_frac", "ratio_mean", "teacher_prob_mean", "hint_ratio_mean",
            "rollout_correction/", "refill/groups")
FSDP_ADVICE = "(configs/accelerate/fsdp.yaml shows a launch guidedrl runs)"


class Ranks:
    """This process's place among the run's processes, and the collectives the trainer needs."""

    def __init__(self, accelerator: Any | None = None) -> None:
        self.accelerator = accelerator
        self.world = accelerator.num_processes if accelerator is not None else 1
        self.rank = accelerator.process_index if accelerator is not None else 0
        plugin = getattr(accelerator.state, "fsdp_plugin", None) if self.fsdp else None
        self.sharding: Sharding = "none" if plugin is None else "full" if plugin.reshard_after_forward else "optimizer"

    @classmethod
    def detect(cls, device: str = "auto") -> Ranks:
        """Several ranks when launched by ``accelerate launch`` (or torchrun) with more than one process; CPU
        processes (gloo) when ``device`` is cpu or there is no CUDA device."""
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world <= 1:
            return cls()
        if _flag("ACCELERATE_USE_DEEPSPEED"):
            raise RunError("DeepSpeed is not supported: it needs CUDA, so guidedrl could not test it; shard with "
                           f"FSDP2 instead {FSDP_ADVICE}")
        from accelerate import Accelerator
        accelerator = Accelerator(cpu=device == "cpu" or not torch.cuda.is_available())
        if accelerator.num_processes != world:
            raise RunError(f"{world} processes were launched but accelerate joined {accelerator.num_processes}; "
                           "launch with `accelerate launch --num_processes N` and a config file or --multi_gpu")
        if _flag("ACCELERATE_USE_FSDP"):
            _shard(accelerator)
        return cls(accelerator)

    @property
    def fsdp(self) -> bool:
        """Whether the model is sharded by FSDP2."""
        return self.accelerator is not None and str(self.accelerator.distributed_type).endswith("FSDP")

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def device(self) -> torch.device | None:
        """The device accelerate gave this rank (None in one process: the config decides)."""
        return None if self.accelerator is None else self.accelerator.device

    def split(self, items: Sequence[T]) -> tuple[list[T], int]:
        """This rank's contiguous share of ``items`` (shares differ by one at most) and the position of its
        first item."""
        first, end = len(items) * self.rank // self.world, len(items) * (self.rank + 1) // self.world
        return list(items[first:end]), first

    def share(self, items: Sequence[T]) -> tuple[list[T], int]:
        """This rank's contiguous share of ``items``, which must split evenly, and the position of its first."""
        if len(items) % self.world:
            raise ValueError(f"{len(items)} prompts per step do not split over {self.world} processes")
        return self.split(items)

    # ---- collectives: every tensor on this rank's device (NCCL reduces accelerator tensors only) ----------------
    def sum(self, values: Sequence[float]) -> list[float]:
        """Element-wise sums over ranks."""
        if self.world == 1:
            return list(values)
        t = torch.tensor(list(values), dtype=torch.float64, device=self.device)
        dist.all_reduce(t)
        return t.tolist()

    def max(self, value: int) -> int:
        """The largest ``value`` of any rank."""
        if self.world == 1:
            return value
        t = torch.tensor([value], dtype=torch.int64, device=self.device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return int(t.item())

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

    # ---- the trained model: wrapping, backward, clipping, full weights, optimizer shards -------------------------
    def prepare(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> tuple[Any, Any]:
        """The model (wrapped for gradient all-reduce, or sharded in place by FSDP2) and optimizer as this rank
        trains them."""
        if self.accelerator is None:
            return model, optimizer
        return self.accelerator.prepare(model, optimizer)

    def backward(self, loss: torch.Tensor) -> None:
        """``loss.backward()``, through accelerate when there are ranks (its FSDP and scaling hooks)."""
        if self.accelerator is None:
            loss.backward()
        else:
            self.accelerator.backward(loss)

    def clip_grad_norm(self, model: torch.nn.Module, max_norm: float) -> float:
        """Clip the gradient of ``model`` (the prepared one) to ``max_norm``; its norm before clipping, over
        every rank's shard when sharded."""
        if self.accelerator is None:
            return float(torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm))
        return float(self.accelerator.clip_grad_norm_(model.parameters(), max_norm))

    def no_sync(self, model: Any, sync: bool) -> Any:
        """DDP: accumulate without the all-reduce, except on the micro-batch that ends a mini-batch. FSDP
        reduce-scatters every micro-batch's gradient into its shard (skipping it would keep whole gradients)."""
        return nullcontext() if sync or self.world == 1 or self.fsdp else model.no_sync()

    @contextmanager
    def full_weights(self, model: torch.nn.Module) -> Iterator[None]:
        """While inside, an FSDP-sharded ``model`` holds its whole weights on every rank (gathered once on entry,
        every rank entering together) and keeps them through its forwards, which then make no collective: each
        rank samples, scores and evaluates its own share. Without sharding: nothing to do."""
        if not self.fsdp:
            yield
            return
        from torch.distributed.fsdp import FSDPModule
        units = [m for m in model.modules() if isinstance(m, FSDPModule)]
        inner = [m for m in units if m is not model]  # the root keeps its weights after forward by itself
        reshard = self.sharding == "full"
        for unit in units:
            unit.unshard()
        for unit in inner:
            unit.set_reshard_after_forward(False, recurse=False)
        try:
            yield
        finally:
            for unit in inner:
                unit.set_reshard_after_forward(reshard, recurse=False)
            for unit in units:
                unit.reshard()

    def full_state_dict(self, model: torch.nn.Module) -> dict[str, torch.Tensor] | None:
        """An FSDP-sharded model's whole weights on rank 0's CPU (None on the other ranks; every rank must call
        it); None without sharding (the module's own weights are whole)."""
        if not self.fsdp:
            return None
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
        weights = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        if not self.main:
            return None
        # a tied weight comes once per name, as separate copies: keep the name the module itself lists (as a
        # checkpoint of the unsharded module holds it)
        own = {name for name, _ in model.named_parameters()} | {name for name, _ in model.named_buffers()}
        return {name: tensor for name, tensor in weights.items() if name in own}

    def save_optimizer(self, optimizer: Any, model: torch.nn.Module, folder: Path) -> None:
        """Each rank writes its own shard of the optimizer state under ``folder`` (accelerate's sharded FSDP
        checkpoint, torch.distributed.checkpoint); every rank must call it."""
        from accelerate.utils import save_fsdp_optimizer
        save_fsdp_optimizer(self.accelerator.state.fsdp_plugin, self.accelerator, optimizer, model, str(folder))

    def load_optimizer(self, optimizer: Any, model: torch.nn.Module, folder: Path) -> None:
        """Each rank reads its own shard of the optimizer state :meth:`save_optimizer` wrote, onto its device."""
        from accelerate.utils import load_fsdp_optimizer
        load_fsdp_optimizer(self.accelerator.state.fsdp_plugin, self.accelerator, optimizer, model, str(folder))

    def combine(self, metrics: dict[str, float]) -> dict[str, float]:
        """One step's metrics over ranks: loss-like sums (each rank's share of the global normalization) and counts
        (``refill/groups``) summed, times the slowest rank's, everything else the mean over ranks (each holds as many
        groups)."""
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


def _flag(name: str) -> bool:
    return os.environ.get(name, "false").lower() == "true"


def _shard(accelerator: Any) -> None:
    """Check the launch's FSDP plugin against what guidedrl runs and tests, each other setting refused in one
    line; on CPU processes, where accelerate leaves FSDP off, switch it on with the same plugin."""
    from accelerate import FullyShardedDataParallelPlugin
    from accelerate.state import PartialState
    from accelerate.utils import DistributedType
    from torch.distributed.fsdp import CPUOffloadPolicy
    from torch.distributed.fsdp.fully_sharded_data_parallel import StateDictType
    plugin = getattr(accelerator.state, "fsdp_plugin", None) or FullyShardedDataParallelPlugin()
    refused = {
        "fsdp_version: 1 is not supported (set fsdp_version: 2)": plugin.fsdp_version != 2,
        "fsdp_state_dict_type: guidedrl writes the whole weights itself and each rank's shard of the optimizer "
        "state (set SHARDED_STATE_DICT)": plugin.state_dict_type != StateDictType.SHARDED_STATE_DICT,
        "fsdp_offload_params: offloading to the CPU is not supported": isinstance(plugin.cpu_offload,
                                                                                  CPUOffloadPolicy),
        "fsdp_activation_checkpointing: use guidedrl's gradient_checkpointing key instead":
            plugin.activation_checkpointing,
        "fsdp_cpu_ram_efficient_loading: guidedrl loads the model on every rank (set false)":
            plugin.cpu_ram_efficient_loading,
    }
    for line, bad in refused.items():
        if bad:
            raise RunError(f"{line} {FSDP_ADVICE}")
    if accelerator.distributed_type != DistributedType.FSDP:
        accelerator.state.fsdp_plugin = plugin
        accelerator.state.distributed_type = DistributedType.FSDP
        PartialState._shared_state["distributed_type"] = DistributedType.FSDP

