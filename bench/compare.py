"""Shared runner of the method-comparison experiments: train each config for each seed, summarize.

Every run uses the same world, steps, prompts per step, group size and evaluation; only the method's
config differs. Results go to ``OUT/<method>/seed<S>/`` (summary.json, metrics.jsonl) and a table.
"""

from __future__ import annotations

import json
import shutil
import statistics
from collections.abc import Sequence
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from guidedrl.config import TrainConfig
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
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return {**summary, "steps": [r for r in records if "reward" in r], "evals": [r for r in records if
                                                                                any(k.startswith("eval/") for k in r)]}


def mean_std(values: Sequence[float]) -> str:
    """'mean ± std' in percent points (std over seeds; 0 for one seed)."""
    mean = statistics.fmean(values)
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{100 * mean:.1f} ± {100 * std:.1f}"


def step_time(result: dict) -> float:
    """Median step time of a run, its first step (warm-up) left out."""
    return statistics.median(r["step_time"] for r in result["steps"][1:])


def table(results: dict[str, list[dict]], ks: Sequence[int], title: str) -> Table:
    """Methods x (ID/OOD pass@k after training, distinct correct paths, step time), mean ± std over seeds."""
    t = Table(title=title)
    cols = [f"{split} pass@{k}" for split in ("ID", "OOD") for k in ks] + ["ID distinct paths", "s/step"]
    for col in ["method", *cols]:
        t.add_column(col, justify="left" if col == "method" else "right")
    for method, runs in results.items():
        cells = [mean_std([r["after"][f"eval/test_{s}/pass@{k}"] for r in runs]) for s in ("id", "ood") for k in ks]
        paths = statistics.fmean(r["after"]["eval/test_id/distinct_paths"] for r in runs)
        t.add_row(method, *cells, f"{paths:.2f}", f"{statistics.fmean(step_time(r) for r in runs):.2f}")
    base = next(iter(results.values()))[0]["before"]
    t.add_row("(student before)", *[f"{100 * base[f'eval/test_{s}/pass@{k}']:.1f}" for s in ("id", "ood") for k in ks],
              f"{base['eval/test_id/distinct_paths']:.2f}", "")
    return t


def setup() -> None:
    """The settings every experiment shares: two CPU threads, deterministic seeds."""
    torch.set_num_threads(2)


def save(results: dict[str, list[dict]], out: Path) -> None:
    """All runs' summaries in one JSON file (step logs included)."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=1))
