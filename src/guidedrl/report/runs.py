"""What a run folder holds, read without touching it: config, metrics, evaluations (and the results of
``eval --benchmarks`` written into it), status.

A folder is a run when it holds ``metrics.jsonl`` or ``config.yaml``; its status is ``running`` (its lock is
held by a live process), ``finished`` (``summary.json`` written) or ``crashed`` (neither: stopped at its last
logged step). A damaged file (config, summary, an evaluation report or result) does not stop the reading: the
run says which (``damaged``), and a torn metrics line is left out. Used by ``guidedrl runs`` and ``guidedrl report``.
"""

from __future__ import annotations

import errno
import fcntl
import os
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from guidedrl.errors import GuidedError
from guidedrl.eval.capability import read_report
from guidedrl.eval.suite import read_results
from guidedrl.files import DamagedFile, read_json, read_text
from guidedrl.trainer.logger import read_metrics
from guidedrl.trainer.run_dir import LOCK


class NotARun(GuidedError, ValueError):
    """A folder that holds no run (or not enough of one to read), with what is missing."""


@dataclass
class Run:
    """One run folder's contents."""

    path: Path
    config: dict
    records: list[dict]
    status: str
    summary: dict | None = None
    evals: dict[str, dict[str, dict]] = field(default_factory=dict)  # tag (before/after) -> split -> report
    benchmarks: dict[str, dict] = field(default_factory=dict)  # tag -> the result of eval --benchmarks
    name: str = ""  # how tables and legends call the run (see ``label_runs``)
    damaged: list[str] = field(default_factory=list)  # one line per file of the run that could not be read

    def __post_init__(self) -> None:
        self.name = self.name or self.path.name

    @property
    def steps(self) -> list[dict]:
        """The per-step training records (not the evaluation-only ones, nor the final evaluation)."""
        return [r for r in self.records if not r.get("final")
                and any(not k.startswith("eval/") for k in r if k not in ("step", "run_id"))]

    @property
    def last_step(self) -> int:
        return max((r["step"] for r in self.records), default=0)

    def series(self, key: str) -> list[tuple[int, float]]:
        """(step, value) of a metric over training."""
        return [(r["step"], r[key]) for r in self.steps if key in r]

    @property
    def method(self) -> str:
        """A short description of the method from the config: estimator, guidance, teacher terms."""
        if self.config.get("sft"):
            return "sft"
        a, g = self.config.get("algorithm", {}), self.config.get("guidance", {})
        parts = [a.get("advantage", "grpo")]
        parts += [f"{name} guidance" for name in g.get("ladder", [])]
        parts += [n for n, spec in a.get("regularizers", {}).items() if n != "entropy" and spec.get("coef", 0) > 0]
        parts += [n for n, spec in a.get("advantage_addons", {}).items() if spec.get("coef", 0) > 0]
        return " + ".join(parts)

    def pass_at_1(self, split: str = "test_id") -> float | None:
        """Held-out pass@1 at the latest evaluation of ``split`` (None if never evaluated)."""
        key = f"eval/{split}/pass@1"
        if self.summary and key in self.summary.get("after", {}):
            return self.summary["after"][key]
        values = [r[key] for r in self.records if key in r]
        return values[-1] if values else None


def lock_held(path: Path) -> bool:
    """Whether a live process holds the run's lock (a crashed run's lock file is unlocked)."""
    try:
        fd = os.open(path / LOCK, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return False
    except OSError as err:
        return err.errno in (errno.EAGAIN, errno.EACCES)
    finally:
        os.close(fd)


def label_runs(runs: list[Run]) -> list[Run]:
    """Give each run the shortest tail of its path that no other run shares (``grpo/seed0``, not ``seed0``)."""
    for depth in range(1, max((len(r.path.parts) for r in runs), default=1) + 1):
        names = ["/".join(r.path.parts[-depth:]) for r in runs]
        if len(set(names)) == len(names):
            for run, name in zip(runs, names):
                run.name = name
            break
    return runs


def read_run(path: Path) -> Run:
    """A run folder's contents; :class:`NotARun` naming the folder and what is missing."""
    if not path.is_dir():
        raise NotARun(f"{path}: no such folder")
    if not (path / "metrics.jsonl").exists() and not (path / "config.yaml").exists():
        raise NotARun(f"{path}: not a run folder (no metrics.jsonl or config.yaml)")
    damaged: list[str] = []
    config: dict = {}
    if (path / "config.yaml").exists():
        try:
            config = yaml.safe_load(read_text(path / "config.yaml")) or {}
        except (yaml.YAMLError, DamagedFile) as err:
            damaged.append(str(err) if isinstance(err, DamagedFile) else f"{path / 'config.yaml'}: not valid YAML")
        if not isinstance(config, dict):
            config = {}
            damaged.append(f"{path / 'config.yaml'}: not a mapping of keys")
    summary = None
    if (path / "summary.json").exists():
        try:
            summary = read_json(path / "summary.json")
        except DamagedFile as err:
            damaged.append(str(err))
    status = "running" if lock_held(path) else "finished" if summary is not None else "crashed"
    evals: dict[str, dict[str, dict]] = {}
    for report in sorted((path / "eval").glob("*_*.json")):
        tag, _, split = report.stem.partition("_")
        try:
            evals.setdefault(tag, {})[split] = read_report(report)
        except DamagedFile as err:
            damaged.append(str(err))
    benchmarks: dict[str, dict] = {}
    for result in sorted(path.glob("benchmarks_*.json")):
        try:
            benchmarks[result.stem.removeprefix("benchmarks_")] = read_results(result)
        except DamagedFile as err:
            damaged.append(str(err))
    return Run(path, config, read_metrics(path / "metrics.jsonl"), status, summary, evals, benchmarks=benchmarks,
               damaged=damaged)


def find_runs(root: Path) -> list[Run]:
    """Every run folder at or under ``root`` (a folder of runs, or one run), by path."""
    candidates = {p.parent for p in root.rglob("metrics.jsonl")} | {p.parent for p in root.rglob("config.yaml")
                                                                    if (p.parent / "run.json").exists()}
    return label_runs([read_run(p) for p in sorted(candidates)])
