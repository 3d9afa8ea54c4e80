"""Where and in what precision a run computes: the device (``auto`` picks CUDA when present), bf16 autocast
over fp32 master weights (or pure bf16 weights, by choice), and dropout switched off for RL updates."""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass

import torch
from torch import nn


def resolve_device(spec: str) -> torch.device:
    """``auto`` (CUDA if available, else CPU), ``cpu``, ``cuda``, ``cuda:N`` or ``mps``; an unknown or unavailable
    one is a ``ValueError``."""
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(spec)
    except RuntimeError:
        raise ValueError(f"unknown device {spec!r}; expected auto, cpu, mps, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {spec!r} asked for, but torch sees no CUDA device (torch {torch.__version__})")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise ValueError(f"device {spec!r} asked for, but torch sees {torch.cuda.device_count()} CUDA device(s)")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"device {spec!r} asked for, but torch sees no MPS device (torch {torch.__version__})")
    if device.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"device {spec!r}: guidedrl runs on cpu, cuda or mps")
    return device


def device_memory_gib(precision: Precision, configured: float | None = None) -> float | None:
    """The memory a run must fit per process: ``configured`` (``memory.gpu_memory_gib``) when set, else the CUDA
    device's own, else None (a CPU: no limit is checked)."""
    if configured is not None:
        return configured
    if precision.device.type == "cuda":
        return torch.cuda.get_device_properties(precision.device).total_memory / 1024 ** 3
    return None


@dataclass(frozen=True)
class Precision:
    """``fp32``; ``bf16``: bf16 autocast of every forward, weights and optimizer state in fp32 (the default
    mixed precision); ``bf16-pure``: weights stored in bf16 (half their memory; the optimizer keeps the
    small updates, :class:`~guidedrl.trainer.optim.CompensatedAdamW`)."""

    mode: str = "fp32"
    device: torch.device = torch.device("cpu")

    @property
    def weights_dtype(self) -> torch.dtype:
        """The dtype a trained model's parameters are loaded in."""
        return torch.bfloat16 if self.mode == "bf16-pure" else torch.float32

    @property
    def frozen_dtype(self) -> torch.dtype:
        """The dtype of models that are never trained (teacher, reference): bf16 unless the run is fp32."""
        return torch.float32 if self.mode == "fp32" else torch.bfloat16

    def autocast(self) -> AbstractContextManager:
        """bf16 autocast on the run's device for ``bf16``; nothing otherwise."""
        if self.mode != "bf16":
            return nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)


def disable_dropout(model: nn.Module) -> int:
    """Set every dropout probability to 0, as TRL does for RL: the policy that samples is the one trained.
    Returns how many dropout modules there were."""
    found = 0
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.p = 0.0
            found += 1
    return found
