"""Reproducible, disjoint problem sets of the embedded world, and their dataset rows."""

from __future__ import annotations

import random
from collections.abc import Iterable

from guidedrl.world.problems import Expression, evaluate, sample_expression
from guidedrl.world.settings import WorldConfig
from guidedrl.world.styles import STYLES, hint_for

EVAL_SPLITS = ("test_id", "test_ood")  # the world's held-out sets, in distribution and out of it
PROMPT_TEMPLATE = "{problem}\n"
REFERENCE_STYLE = "steps"


def prompt_for(expr: Expression) -> str:
    """The prompt the models see: the bare expression and a newline."""
    return PROMPT_TEMPLATE.format(problem=expr.text)


def sample_unique(rng: random.Random, count: int, operand_counts: list[int], operand_max: int, operators: str,
                  max_value: int, exclude: set[str], max_tries: int = 200,
                  wide: tuple[int, int] | None = None) -> list[Expression]:
    """``count`` distinct expressions not in ``exclude``; fails loudly if the space is too small."""
    out: list[Expression] = []
    seen = set(exclude)
    misses = 0
    while len(out) < count:
        expr = sample_expression(rng, rng.choice(operand_counts), operand_max, operators, max_value, wide)
        if expr.text in seen:
            misses += 1
            if misses > max_tries * max(count, 1):
                raise ValueError(f"only {len(out)} distinct problems available, {count} requested")
            continue
        seen.add(expr.text)
        out.append(expr)
    return out


def make_splits(cfg: WorldConfig) -> dict[str, list[Expression]]:
    """Test sets first, then training and SFT problems that never repeat a test problem.

    ``sft`` is the supervised corpus of in-distribution problems (may repeat itself and overlap ``train``,
    the RL split); ``sft_wide`` (with ``ood_kind: wide``) holds problems of the OOD kind, never a test one,
    that each model's SFT mixes in at its own share; ``test_id`` and ``test_ood`` are disjoint from all else.
    """
    rng = random.Random(cfg.seed)
    wide = cfg.wide_range if cfg.ood_kind == "wide" else None
    draw = lambda counts, n, exclude, w=None: sample_unique(  # noqa: E731
        rng, n, counts, cfg.operand_max, cfg.operators, cfg.max_value, exclude, wide=w)
    test_ood = draw(cfg.ood_operands, cfg.n_test_ood, set(), wide)
    test_id = draw(cfg.id_operands, cfg.n_test_id, {e.text for e in test_ood})
    held_out = {e.text for e in test_id + test_ood}
    train = draw(cfg.id_operands, cfg.n_train, held_out)

    def corpus(counts: list[int], w: tuple[int, int] | None) -> list[Expression]:
        out: list[Expression] = []
        while len(out) < cfg.n_sft:
            expr = sample_expression(rng, rng.choice(counts), cfg.operand_max, cfg.operators, cfg.max_value, w)
            if expr.text not in held_out:
                out.append(expr)
        return out

    splits = {"train": train, "test_id": test_id, "test_ood": test_ood, "sft": corpus(cfg.id_operands, None)}
    if wide is not None:
        splits["sft_wide"] = corpus(cfg.ood_operands, wide)
    return splits


def rows_for(exprs: Iterable[Expression], split: str) -> list[dict]:
    """Dataset rows with the columns every guidedrl dataset uses (plus ``n_operands``)."""
    return [{
        "prompt": prompt_for(e), "answer": str(evaluate(e)), "solution": STYLES[REFERENCE_STYLE](e),
        "hint": hint_for(e), "style": REFERENCE_STYLE, "split": split, "n_operands": len(e.operands),
    } for e in exprs]
