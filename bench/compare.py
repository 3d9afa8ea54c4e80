"""Shared runner of the method-comparison benches: train one config for one seed from scratch.

Every run uses the same world, steps, prompts per step, group size and evaluation; only the method's
config and the bench's overrides differ. A run goes to ``OUT/<method>/seed<S>/`` (summary.json, metrics.jsonl).
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path

import torch
from rich.console import Console

from guidedrl.config import TrainConfig
from guidedrl.trainer.logger import read_metrics
from guidedrl.trainer.loop import Trainer
from guidedrl.yaml_config import load_config

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def run(config: str, seed: int, steps: int, out: Path, overrides: Sequence[str] = ()) -> dict:
    """Train one config for one seed (from scratch) and return its before/after summary and step log."""
    run_dir = out / Path(config).stem / f"seed{seed}"
    shutil.rmtree(run_dir, ignore_errors=True)
    cfg = load_config(CONFIGS / config, TrainConfig, [
        f"seed={seed}", f"steps={steps}", f"output_dir={run_dir}", "save_every=0", *overrides])
    summary = Trainer(cfg, console=Console(quiet=True)).train()
    records = read_metrics(run_dir / "metrics.jsonl")
    return {**summary, "steps": [r for r in records if "reward" in r], "evals": [r for r in records if
                                                                                any(k.startswith("eval/") for k in r)]}


def setup() -> None:
    """The settings every experiment shares: two CPU threads, deterministic seeds."""
    torch.set_num_threads(2)
