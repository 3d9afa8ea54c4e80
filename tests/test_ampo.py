"""AMPO end to end on the micro world: guidance happens on demand, and less as the student learns."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console

from guidedrl.config import TrainConfig
from guidedrl.trainer.loop import Trainer
from guidedrl.yaml_config import load_config

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def _micro_run(config: str, world: Path, out: Path, dataset: Path, steps: int) -> TrainConfig:
    return load_config(CONFIGS / config, TrainConfig, [
        f"world={world}", f"output_dir={out}", f"dataset={dataset}", f"steps={steps}", "save_every=0",
        "rollout.prompts_per_step=16", "rollout.max_new_tokens=40", "optim.lr=1e-3", "optim.micro_batch_size=64"])


def test_ampo_guidance_rate_is_positive_at_first_and_falls(micro_world: Path, tmp_path: Path) -> None:
    subset = tmp_path / "train48.jsonl"
    subset.write_text("".join((micro_world / "data" / "train.jsonl").read_text().splitlines(keepends=True)[:48]))
    trainer = Trainer(_micro_run("ampo.yaml", micro_world, tmp_path / "run", subset, 40), console=Console(quiet=True))
    steps = [trainer.train_step() for _ in range(40)]
    rate = [m["guidance/rate"] for m in steps]
    first, last = sum(rate[:10]) / 10, sum(rate[-10:]) / 10
    assert first > 0.2, rate
    assert last < first - 0.05, rate
    assert sum(m["guidance/inserted"] for m in steps) > 0
    assert any(key.startswith("guidance/selected/teacher_") for m in steps for key in m)


def test_luffy_guides_every_group_with_one_teacher(micro_world: Path, tmp_path: Path) -> None:
    subset = tmp_path / "train16.jsonl"
    subset.write_text("".join((micro_world / "data" / "train.jsonl").read_text().splitlines(keepends=True)[:16]))
    cfg = _micro_run("luffy.yaml", micro_world, tmp_path / "run", subset, 2)
    metrics = Trainer(cfg, console=Console(quiet=True)).train_step()
    assert metrics["guidance/rate"] == 1.0
    assert set(k for k in metrics if k.startswith("guidance/selected/")) <= {"guidance/selected/teacher_steps"}
