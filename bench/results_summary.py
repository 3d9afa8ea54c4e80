"""Compact, committed summaries of a comparison bench's runs (bench/results/NAME.json), which
render_readme.py turns into the README's tables: per method and seed, the held-out figures after training,
the untrained student's, the guidance rate and the median step time, with the environment."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

from bench_env import environment

KEYS = ("pass@1", "pass@16", "greedy", "distinct_paths")


def summarize(results: dict[str, list[dict]], settings: dict, contended: bool = False) -> dict:
    """Per method, per seed: after-training figures (ID, OOD), guidance/hint rate, median step time."""
    def after(run: dict) -> dict:
        return {f"{split}/{k}": run["after"].get(f"eval/test_{split}/{k}") for split in ("id", "ood") for k in KEYS}

    def rate(run: dict, key: str) -> float | None:
        values = [s[key] for s in run["steps"] if key in s]
        return statistics.fmean(values) if values else None

    first = next(iter(results.values()))[0]
    return {
        "environment": environment(), "settings": settings, "contended": contended,
        "before": {f"{s}/{k}": first["before"].get(f"eval/test_{s}/{k}") for s in ("id", "ood") for k in KEYS},
        "methods": {method: [{**after(run), "step_time": statistics.median(s["step_time"] for s in run["steps"][1:]),
                              "teacher_rate": rate(run, "guidance/teacher/rate"),
                              "hint_rate": rate(run, "guidance/hint/rate")} for run in runs]
                    for method, runs in results.items()},
    }


def write_summary(results: dict[str, list[dict]], settings: dict, path: Path, contended: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(summarize(results, settings, contended), indent=1))
