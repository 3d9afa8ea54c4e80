"""Atomic checkpoints: weights (safetensors), optimizer, scheduler, data position, step and RNG.

A checkpoint is written into a temporary folder and renamed into place, so a kill leaves the previous ones
intact; one whose weights are not all finite is never written; a full disk is a one-line error that keeps
the previous checkpoints. ``is_complete`` tells a loadable checkpoint from a torn one without loading it.
"""

from __future__ import annotations

import json
import re
import shutil
import struct
import zipfile
from pathlib import Path
from typing import Any

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from guidedrl.errors import RunError, storage_fault
from guidedrl.files import atomic_dir

STATE_FILE = "trainer_state.pt"
OPTIMIZER_SHARDS = "optimizer_0"  # a sharded run's optimizer state, one file per rank (accelerate's FSDP folder)
STEP_DIR = re.compile(r"^step_(\d+)$")


def save_checkpoint(root: Path, step: int, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase,
                    state: dict[str, Any], keep: int, weights: dict[str, torch.Tensor] | None = None,
                    shards: Path | None = None) -> Path:
    """Write ``root/step_N`` via a temporary directory and a rename; keep the newest ``keep``. A sharded run
    passes its whole ``weights`` (gathered on this rank) and the folder where every rank wrote its shard of the
    optimizer state (``shards``), moved in."""
    named = model.named_parameters() if weights is None else weights.items()
    bad = [name for name, p in named if not torch.isfinite(p).all()]
    if bad:
        if shards is not None:
            shutil.rmtree(shards, ignore_errors=True)
        raise RunError(f"refusing to write checkpoint step_{step}: parameter {bad[0]} is not finite "
                       f"({len(bad)} such); the previous checkpoints are kept")
    final = root / f"step_{step}"
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise RunError(f"cannot write checkpoint {final}: {storage_fault(err) or err.strerror}; the previous "
                       "checkpoints are kept") from None
    with atomic_dir(final, "checkpoint", "the previous checkpoints are kept (free space or make the folder "
                    "writable, then --resume)") as tmp:
        model.save_pretrained(tmp, state_dict=weights)
        tokenizer.save_pretrained(tmp)
        torch.save({**state, "step": step, "torch_rng": torch.get_rng_state()}, tmp / STATE_FILE)
        if shards is not None:
            shutil.move(shards / OPTIMIZER_SHARDS, tmp / OPTIMIZER_SHARDS)
            shutil.rmtree(shards)
    for old in checkpoints(root)[:-keep]:
        shutil.rmtree(old)
    return final


def checkpoints(root: Path) -> list[Path]:
    """Checkpoint folders under ``root`` that were renamed into place, oldest first (temporary ones ignored)."""
    found = [(int(m.group(1)), p) for p in root.glob("step_*") if (m := STEP_DIR.match(p.name))
             and (p / STATE_FILE).exists()]
    return [p for _, p in sorted(found)]


def safetensors_complete(path: Path) -> bool:
    """Whether a safetensors file holds every byte its header declares (a truncated copy does not)."""
    try:
        with path.open("rb") as f:
            (length,) = struct.unpack("<Q", f.read(8))
            header = json.loads(f.read(length))
    except (OSError, struct.error, ValueError):
        return False
    ends = [v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"]
    return path.stat().st_size == 8 + length + max(ends, default=0)


def is_complete(path: Path) -> bool:
    """Whether a checkpoint's weights and trainer state are whole (checked by their sizes and zip directory), and
    its optimizer shards, if any, have their index (written last)."""
    weights = list(path.glob("*.safetensors"))
    try:
        with zipfile.ZipFile(path / STATE_FILE) as z:
            z.namelist()
    except (OSError, zipfile.BadZipFile):
        return False
    shards = path / OPTIMIZER_SHARDS
    return (bool(weights) and all(safetensors_complete(w) for w in weights)
            and (not shards.exists() or (shards / ".metadata").is_file()))


def load_state(path: Path) -> dict[str, Any]:
    """The trainer state of a checkpoint (tensors and plain values only: ``weights_only``), read onto the CPU
    (the optimizer moves its state to each rank's own device as it loads it)."""
    state = torch.load(path / STATE_FILE, map_location="cpu", weights_only=True)
    torch.set_rng_state(state["torch_rng"])
    return state
