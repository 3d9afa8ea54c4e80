"""Reproducible, disjoint problem sets of the embedded world, and their dataset rows."""

from __future__ import annotations

import random
from collections.abc import Iterable

from guidedrl.world.problems import Expression, evaluate, sample_expression
from guidedrl.world.styles import STYLES, hint_for

PROMPT_TEMPLATE = "{problem}\n"
REFERENCE_STYLE = "steps"


def prompt_for(expr: Expression) -> str:
    """The prompt the models see: the bare expression and a newline."""
    return PROMPT_TEMPLATE.format(problem=expr.text)


def sample_unique(rng: random.Random, count: int, operand_counts: list[int], operand_max: int, operators: str,
                  max_value: int, exclude: set[str], max_tries: int = 200) -> list[Expression]:
    """``count`` distinct expressions not in ``exclude``; fails loudly if the space is too small."""
    out: list[Expression] = []
    seen = set(exclude)
    misses = 0
    while len(out) < count:
        expr = sample_expression(rng, rng.choice(operand_counts), operand_max, operators, max_value)
        if expr.text in seen:
            misses += 1
            if misses > max_tries * max(count, 1):
                raise ValueError(f"only {len(out)} distinct problems available, {count} requested")
            continue
        seen.add(expr.text)
        out.append(expr)
    return out


def make_splits(seed: int, id_operands: list[int], ood_operands: list[int], operand_max: int, operators: str,
                max_value: int, n_train: int, n_test_id: int, n_test_ood: int, n_sft: int
                ) -> dict[str, list[Expression]]:
    """Test sets first, then training and SFT problems that never repeat a test problem.

    ``sft`` is the teachers' and student's supervised corpus (may repeat itself and overlap ``train``,
    the RL split); ``test_id`` and ``test_ood`` are disjoint from everything else.
    """
    rng = random.Random(seed)
    test_ood = sample_unique(rng, n_test_ood, ood_operands, operand_max, operators, max_value, set())
    test_id = sample_unique(rng, n_test_id, id_operands, operand_max, operators, max_value,
                            {e.text for e in test_ood})
    held_out = {e.text for e in test_id + test_ood}
    train = sample_unique(rng, n_train, id_operands, operand_max, operators, max_value, held_out)
    sft: list[Expression] = []
    while len(sft) < n_sft:
        expr = sample_expression(rng, rng.choice(id_operands), operand_max, operators, max_value)
        if expr.text not in held_out:
            sft.append(expr)
    return {"train": train, "test_id": test_id, "test_ood": test_ood, "sft": sft}


def rows_for(exprs: Iterable[Expression], split: str) -> list[dict]:
    """Dataset rows with the columns every guidedrl dataset uses (plus ``n_operands``)."""
    return [{
        "prompt": prompt_for(e), "answer": str(evaluate(e)), "solution": STYLES[REFERENCE_STYLE](e),
        "hint": hint_for(e), "style": REFERENCE_STYLE, "split": split, "n_operands": len(e.operands),
    } for e in exprs]
