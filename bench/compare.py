"""Shared runner of the method-comparison benches: train one config for one seed from scratch.

Every run uses the same world, steps, prompts per step, group size and evaluation; only the method's
config and the bench's overrides differ. A run goes to ``OUT/<method>/seed<S>/`` (summary.json, metrics.jsonl).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from pathlib import Path

import torch
from pydantic import BaseModel
from rich.console import Console

from guidedrl.config import TrainConfig
from guidedrl.trainer.logger import read_metrics
from guidedrl.trainer.loop import Trainer
from guidedrl.yaml_config import load_config

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def finished(run_dir: Path, cfg: BaseModel) -> bool:
    """Whether ``run_dir`` holds a finished run (summary and final weights) of exactly the config ``cfg``."""
    return ((run_dir / "summary.json").is_file() and (run_dir / "final").is_dir()
            and load_config(run_dir / "config.yaml", type(cfg)) == cfg)


def run(config: str, seed: int, steps: int, out: Path, overrides: Sequence[str] = (), reuse: bool = False) -> dict:
    """Train one config for one seed (from scratch) and return its before/after summary and step log; with
    ``reuse`` a finished run of the very same config in its folder is read instead of trained again."""
    run_dir = out / Path(config).stem / f"seed{seed}"
    cfg = load_config(CONFIGS / config, TrainConfig, [
        f"seed={seed}", f"steps={steps}", f"output_dir={run_dir}", "save_every=0", *overrides])
    if not (reuse and finished(run_dir, cfg)):
        shutil.rmtree(run_dir, ignore_errors=True)
        Trainer(cfg, console=Console(quiet=True)).train()
    summary = json.loads((run_dir / "summary.json").read_text())
    records = read_metrics(run_dir / "metrics.jsonl")
    return {**summary, "steps": [r for r in records if "reward" in r], "evals": [r for r in records if
                                                                                any(k.startswith("eval/") for k in r)]}


def setup() -> None:
    """The settings every experiment shares: two CPU threads, deterministic seeds."""
    torch.set_num_threads(2)
