"""Procedural integer-arithmetic problems: generation, exact evaluation and reproducible splits.

Expressions like ``7+4*8-5`` over single-digit operands; every intermediate value stays in
``[0, max_value]`` so that each step is a small, learnable fact.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

OPERATIONS = {"+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b}


@dataclass(frozen=True)
class Step:
    """One binary operation of a solution: ``left op right = result``."""

    left: int
    op: str
    right: int
    result: int


@dataclass(frozen=True)
class Expression:
    """A flat expression: operands interleaved with operators, evaluated with ``*`` first."""

    operands: tuple[int, ...]
    operators: tuple[str, ...]

    @property
    def text(self) -> str:
        """The expression as written, e.g. ``7+4*8-5``."""
        parts = [str(self.operands[0])]
        for op, x in zip(self.operators, self.operands[1:]):
            parts += [op, str(x)]
        return "".join(parts)

    def terms(self) -> list[tuple[str, list[int]]]:
        """Additive terms as (sign, factors): ``7+4*8-5`` -> [('+',[7]), ('+',[4,8]), ('-',[5])]."""
        out: list[tuple[str, list[int]]] = [("+", [self.operands[0]])]
        for op, x in zip(self.operators, self.operands[1:]):
            if op == "*":
                out[-1][1].append(x)
            else:
                out.append((op, [x]))
        return out


def product_steps(factors: list[int]) -> list[Step]:
    """Steps multiplying a term's factors left to right."""
    steps, acc = [], factors[0]
    for x in factors[1:]:
        steps.append(Step(acc, "*", x, acc * x))
        acc *= x
    return steps


def precedence_steps(expr: Expression) -> list[Step]:
    """All multiplications left to right, then additions/subtractions left to right."""
    steps: list[Step] = []
    values: list[tuple[str, int]] = []
    for sign, factors in expr.terms():
        term_steps = product_steps(factors)
        steps += term_steps
        values.append((sign, term_steps[-1].result if term_steps else factors[0]))
    acc = values[0][1]
    for sign, v in values[1:]:
        res = OPERATIONS[sign](acc, v)
        steps.append(Step(acc, sign, v, res))
        acc = res
    return steps


def running_steps(expr: Expression) -> list[Step]:
    """Left to right with a running total: each term is multiplied out when it is reached."""
    steps: list[Step] = []
    acc: int | None = None
    for sign, factors in expr.terms():
        term_steps = product_steps(factors)
        steps += term_steps
        value = term_steps[-1].result if term_steps else factors[0]
        if acc is None:
            acc = value
        else:
            res = OPERATIONS[sign](acc, value)
            steps.append(Step(acc, sign, value, res))
            acc = res
    return steps


def evaluate(expr: Expression) -> int:
    """Exact value of the expression with the usual precedence (no eval of text)."""
    steps = precedence_steps(expr)
    return steps[-1].result if steps else expr.operands[0]


def within_range(expr: Expression, max_value: int) -> bool:
    """True when every intermediate value of both step orders lies in ``[0, max_value]``."""
    return all(0 <= s.result <= max_value for s in precedence_steps(expr) + running_steps(expr))


def sample_expression(rng: random.Random, n_operands: int, operand_max: int, operators: str,
                      max_value: int, wide: tuple[int, int] | None = None) -> Expression:
    """Rejection-sample one expression whose intermediate values all stay in range; with ``wide`` = (lo, hi)
    one operand, at a random position, is drawn from lo..hi instead."""
    while True:
        operands = [rng.randint(1, operand_max) for _ in range(n_operands)]
        if wide is not None:
            operands[rng.randrange(n_operands)] = rng.randint(*wide)
        operands = tuple(operands)
        ops = tuple(rng.choice(operators) for _ in range(n_operands - 1))
        expr = Expression(operands, ops)
        if within_range(expr, max_value):
            return expr
