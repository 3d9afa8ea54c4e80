"""Atomic checkpoints: weights (safetensors), optimizer, scheduler, data position, step and RNG."""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

STATE_FILE = "trainer_state.pt"
STEP_DIR = re.compile(r"^step_(\d+)$")


def save_checkpoint(root: Path, step: int, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase,
                    state: dict[str, Any], keep: int) -> Path:
    """Write ``root/step_N`` via a temporary directory and a rename; keep the newest ``keep``."""
    root.mkdir(parents=True, exist_ok=True)
    final, tmp = root / f"step_{step}", root / f".step_{step}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    torch.save({**state, "step": step, "torch_rng": torch.get_rng_state()}, tmp / STATE_FILE)
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
    for old in checkpoints(root)[:-keep]:
        shutil.rmtree(old)
    return final


def checkpoints(root: Path) -> list[Path]:
    """Complete checkpoints under ``root``, oldest first (temporary directories are ignored)."""
    found = [(int(m.group(1)), p) for p in root.glob("step_*") if (m := STEP_DIR.match(p.name))
             and (p / STATE_FILE).exists()]
    return [p for _, p in sorted(found)]


def load_state(path: Path) -> dict[str, Any]:
    """The trainer state of a checkpoint (tensors and plain values only: ``weights_only``)."""
    state = torch.load(path / STATE_FILE, weights_only=True)
    torch.set_rng_state(state["torch_rng"])
    return state
