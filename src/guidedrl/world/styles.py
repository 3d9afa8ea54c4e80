"""Four chain-of-thought solution styles (the teachers' styles) and the per-problem hint.

Each style renders the same arithmetic differently, so that teachers trained on different styles
are diverse, as the AMPO paper's teachers are. Every solution ends with ``\\boxed{ANSWER}``.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from guidedrl.world.problems import Expression, Step, evaluate, precedence_steps, product_steps

WORDS = {"+": "plus", "-": "minus", "*": "times"}


def boxed(value: int) -> str:
    """The final-answer block every style ends with."""
    return f"\\boxed{{{value}}}"


def style_steps(expr: Expression) -> str:
    """Precedence first, one ``a op b = c`` per line."""
    lines = [f"{s.left}{s.op}{s.right}={s.result}" for s in precedence_steps(expr)]
    return "\n".join(lines + [boxed(evaluate(expr))])


def _apply(terms: list[tuple[str, list[int]]], step: Step) -> None:
    """Rewrite the term list after one precedence step (multiply in a term, or merge two terms)."""
    if step.op == "*":
        for _, factors in terms:
            if len(factors) > 1:
                factors[:2] = [step.result]
                return
    else:
        terms[:2] = [("+", [step.result])]


def _render(terms: list[tuple[str, list[int]]]) -> str:
    """Terms back to text, e.g. [('+',[7]), ('-',[4,8])] -> ``7-4*8``."""
    text = "*".join(map(str, terms[0][1]))
    for sign, factors in terms[1:]:
        text += sign + "*".join(map(str, factors))
    return text


def style_rewrite(expr: Expression) -> str:
    """Rewrite the whole remaining expression after every step."""
    terms = [(sign, list(f)) for sign, f in expr.terms()]
    lines = []
    for step in precedence_steps(expr):
        _apply(terms, step)
        lines.append("=" + _render(terms))
    return "\n".join(lines + [boxed(evaluate(expr))])


def style_words(expr: Expression) -> str:
    """Precedence first, each step spelled out in words."""
    lines = [f"{s.left} {WORDS[s.op]} {s.right} is {s.result}" for s in precedence_steps(expr)]
    return "\n".join(lines + ["so " + boxed(evaluate(expr))])


def _term_stages(factors: list[int]) -> tuple[list[str], int]:
    """A term multiplied out stage by stage: [2,3,4] -> (['2*3*4', '6*4', '24'], 24); [7] -> (['7'], 7)."""
    stages, acc = ["*".join(map(str, factors))], factors[0]
    for i, s in enumerate(product_steps(factors)):
        stages.append("*".join(map(str, [s.result] + factors[i + 2:])))
        acc = s.result
    return stages, acc


def style_running(expr: Expression) -> str:
    """Left to right with a running total ``t``: a different step order from precedence-first."""
    terms = expr.terms()
    stages, total = _term_stages(terms[0][1])
    lines = ["t=" + "=".join(stages)]
    for sign, factors in terms[1:]:
        stages, value = _term_stages(factors)
        new = total + value if sign == "+" else total - value
        lines.append("t=" + "=".join(f"{total}{sign}{stage}" for stage in stages) + f"={new}")
        total = new
    return "\n".join(lines + [boxed(total)])


STYLES: dict[str, Callable[[Expression], str]] = {
    "steps": style_steps,
    "rewrite": style_rewrite,
    "words": style_words,
    "running": style_running,
}


def hint_for(expr: Expression) -> str:
    """A short hint: the first step to take, which the solver must still build on."""
    steps = precedence_steps(expr)
    if not steps:
        return "the answer is a single number"
    s = steps[0]
    return f"first {s.left}{s.op}{s.right}={s.result}"


def slip_final_answer(solution: str, rng: random.Random) -> str:
    """The solution with its final box miscopied by 1 to 3 (never below 0): the student's bad habit,
    the kind of systematic slip RL removes quickly once it is rewarded for the right box."""
    head, _, tail = solution.rpartition("\\boxed{")
    value = int(tail.rstrip("}"))
    slipped = value + rng.choice([-3, -2, -1, 1, 2, 3])
    return head + boxed(slipped if slipped >= 0 else value + 1)
