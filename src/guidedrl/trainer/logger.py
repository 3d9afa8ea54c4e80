"""Metrics to JSONL and TensorBoard, one record per logged step, each carrying the run's id."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from torch.utils.tensorboard import SummaryWriter

from guidedrl.errors import RunError


class MetricsLogger:
    """Appends ``{"step": N, "run_id": ..., ...}`` lines to ``metrics.jsonl``, and scalars to TensorBoard and
    Weights & Biases when ``report_to`` names them.

    Resuming at step N drops the records a killed run wrote after its checkpoint (a torn last line too)
    and TensorBoard's events past N, so no step appears twice; a W&B run is resumed under the same id.
    """

    def __init__(self, output_dir: Path, run_id: str, resume_step: int | None = None,
                 report_to: Sequence[str] = ("tensorboard",), config: dict | None = None, enabled: bool = True) -> None:
        self.path, self.run_id, self.enabled = output_dir / "metrics.jsonl", run_id, enabled
        self.writer = self.wandb = None
        if not enabled:  # a rank other than 0 logs nothing
            return
        output_dir.mkdir(parents=True, exist_ok=True)
        if resume_step is not None:
            self.truncate_after(resume_step)
        self.writer = (SummaryWriter(str(output_dir / "tensorboard"),
                                     purge_step=None if resume_step is None else resume_step + 1)
                       if "tensorboard" in report_to else None)
        self.wandb = None
        if "wandb" in report_to:
            wandb = check_report_to(report_to)
            try:
                self.wandb = wandb.init(project="guidedrl", id=run_id, name=f"{output_dir.name}-{run_id}",
                                        dir=str(output_dir), config=config or {}, resume="allow")
            except wandb.errors.Error as err:
                raise RunError(f"report_to: wandb: {err}") from None

    def log(self, step: int, metrics: dict[str, float], final: bool = False) -> None:
        """One record; ``final`` marks the held-out evaluation after training (redone by a resume)."""
        if not self.enabled:
            return
        record = {"step": step, "run_id": self.run_id, **({"final": True} if final else {}), **metrics}
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")
        if self.writer is not None:
            for key, value in metrics.items():
                self.writer.add_scalar(key, value, step)
            self.writer.flush()
        if self.wandb is not None:
            self.wandb.log(metrics, step=step)

    def truncate_after(self, step: int) -> None:
        """Keep the records of steps up to ``step`` (not the final evaluation, nor a line cut by a kill)."""
        if not self.path.exists():
            return
        keep = [json.dumps(r) for r in read_metrics(self.path) if r["step"] <= step and not r.get("final")]
        self.path.write_text("".join(line + "\n" for line in keep))

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        if self.wandb is not None:
            self.wandb.finish()


def read_metrics(path: Path) -> list[dict]:
    """The records of a ``metrics.jsonl``; a line that is not one (torn by a kill mid-write, or damaged: not
    UTF-8, not JSON, no integer ``step``) is left out."""
    records = []
    for line in path.read_bytes().splitlines() if path.exists() else []:
        try:
            record = json.loads(line.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            continue
        if isinstance(record, dict) and isinstance(record.get("step"), int):
            records.append(record)
    return records


def check_report_to(report_to: Sequence[str]) -> Any:
    """Before a run claims its folder: every ``report_to`` target can be used (W&B: installed, and logged in
    unless ``WANDB_MODE`` is offline or disabled); returns the wandb module when it is named."""
    if "wandb" not in report_to:
        return None
    try:
        import wandb
    except ImportError:
        raise RunError("report_to: wandb needs the wandb package (pip install 'guidedrl[wandb]')") from None
    if os.environ.get("WANDB_MODE") not in ("offline", "disabled", "dryrun"):
        try:
            wandb.login(verify=False)
        except wandb.errors.Error as err:
            wandb.teardown()  # a failed login leaves wandb's process-wide state set up for it
            raise RunError(f"report_to: wandb: {err} (or set WANDB_MODE=offline to log without an account)") from None
    return wandb


class PhaseTimer:
    """Wall-clock seconds of the named phases of a step (``time/<phase>``) and of the whole step."""

    def __init__(self) -> None:
        self.start = time.perf_counter()
        self.seconds: dict[str, float] = {}

    @contextmanager
    def __call__(self, phase: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[phase] = self.seconds.get(phase, 0.0) + time.perf_counter() - start

    def metrics(self) -> dict[str, float]:
        return {"step_time": time.perf_counter() - self.start, **{f"time/{k}": v for k, v in self.seconds.items()}}
