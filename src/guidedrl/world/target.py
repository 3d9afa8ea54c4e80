"""The guidance regime's target class: training-split problems of an operand count the student was never
fine-tuned on, so it cannot solve them alone and its teachers can; held-out problems of that class measure
whether a method teaches it (docs/benchmarks.md, "The guidance regime")."""

from __future__ import annotations

import random
from pathlib import Path

from guidedrl.data import load_rows
from guidedrl.files import read_json
from guidedrl.world.settings import WorldConfig
from guidedrl.world.splits import EVAL_SPLITS, rows_for, sample_unique


def target_operands(cfg: WorldConfig) -> list[int]:
    """Operand counts of the training split that the student's supervised data never held."""
    return sorted(set(cfg.id_operands) - set(cfg.student_operands or cfg.id_operands))


def target_rows(world: Path, count: int) -> list[dict]:
    """``count`` held-out problems of the target class, none of them a training or test problem of the world
    (drawn by the world's generator from a seed of their own, so every machine draws the same); none when the
    student was fine-tuned on every training operand count."""
    cfg = WorldConfig.model_validate(read_json(world / "world.json")["config"])
    operands = target_operands(cfg)
    if not operands:
        return []
    taken = {row["prompt"].strip() for split in ("train", *EVAL_SPLITS)
             for row in load_rows(world / "data" / f"{split}.jsonl")}
    rng = random.Random(f"guidance regime target set, world seed {cfg.seed}")  # a str seed: stable everywhere
    exprs = sample_unique(rng, count, operands, cfg.operand_max, cfg.operators, cfg.max_value, taken)
    return rows_for(exprs, "target")
