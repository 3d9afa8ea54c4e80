"""Fresh held-out problems for the guidance regime (docs/benchmarks.md, "The guidance regime"): its target
class — training-split problems of an operand count the student was never fine-tuned on, so it cannot solve them
alone and its teachers can — and a validation set of the training distribution to choose a learning rate on.
Both are drawn by the world's generator from seeds of their own, never a training or test problem."""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path

from guidedrl.data import load_rows
from guidedrl.files import read_json
from guidedrl.world.problems import Expression
from guidedrl.world.settings import WorldConfig
from guidedrl.world.splits import EVAL_SPLITS, rows_for, sample_unique


def target_operands(cfg: WorldConfig) -> list[int]:
    """Operand counts of the training split that the student's supervised data never held."""
    return sorted(set(cfg.id_operands) - set(cfg.student_operands or cfg.id_operands))


def _world(world: Path) -> tuple[WorldConfig, list[dict], set[str]]:
    """The world's config, its training rows, and the prompts its training and test splits hold."""
    cfg = WorldConfig.model_validate(read_json(world / "world.json")["config"])
    train = load_rows(world / "data" / "train.jsonl")
    taken = {row["prompt"].strip() for rows in (train, *(load_rows(world / "data" / f"{split}.jsonl")
                                                         for split in EVAL_SPLITS)) for row in rows}
    return cfg, train, taken


def target_rows(world: Path, count: int) -> list[dict]:
    """``count`` held-out problems of the target class; none when the student was fine-tuned on every training
    operand count."""
    cfg, _, taken = _world(world)
    operands = target_operands(cfg)
    if not operands:
        return []
    rng = random.Random(f"guidance regime target set, world seed {cfg.seed}")  # a str seed: stable everywhere
    return rows_for(sample_unique(rng, count, operands, cfg.operand_max, cfg.operators, cfg.max_value, taken),
                    "target")


def validation_rows(world: Path, count: int, operands: list[int], exclude: list[dict]) -> list[dict]:
    """``count`` problems of the training distribution restricted to ``operands``: each operand count in its share
    of the training split (largest remainders), none a training, test or ``exclude`` problem (the target set)."""
    cfg, train, taken = _world(world)
    shares = Counter(row["n_operands"] for row in train if row["n_operands"] in operands)
    if not shares:
        raise ValueError(f"{world}: its training split has no problem of {operands} operands")
    total = sum(shares.values())
    counts = {n: count * k // total for n, k in shares.items()}
    by_remainder = sorted(shares, key=lambda n: (-(count * shares[n] % total), n))
    for n in by_remainder[:count - sum(counts.values())]:
        counts[n] += 1
    rng = random.Random(f"guidance regime validation set, world seed {cfg.seed}")  # a str seed: stable everywhere
    exprs: list[Expression] = []
    held = taken | {r["prompt"].strip() for r in exclude}
    for n, k in sorted(counts.items()):
        exprs += sample_unique(rng, k, [n], cfg.operand_max, cfg.operators, cfg.max_value,
                               held | {e.text for e in exprs})
    return rows_for(exprs, "validation")
