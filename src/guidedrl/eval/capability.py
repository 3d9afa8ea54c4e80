"""The Guide paper's lens on what RL changed: per held-out problem, was it already solved, compressed
from pass@k into pass@1, a capability gain (unsolved even at pass@k before, solved after), or neither."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from guidedrl.eval.metrics import pass_at_k
from guidedrl.files import DamagedFile, read_json

CATEGORIES = ("already_solved", "compressed", "capability_gain", "not_improved", "unsolved")


def read_report(path: Path) -> dict:
    """An evaluation report with its per-problem scores (``eval/<tag>_<set>.json``, what ``analyze`` and
    ``report`` read); one that is not whole is a :class:`DamagedFile` naming it."""
    report = read_json(path)
    problems = report.get("problems")
    if not isinstance(problems, list) or not all(
            isinstance(p, dict) and isinstance(p.get("prompt"), str) and isinstance(p.get("n"), int) and p["n"] > 0
            and isinstance(p.get("correct"), int) and 0 <= p["correct"] <= p["n"] for p in problems):
        raise DamagedFile(f"{path}: not an evaluation report (each problem needs prompt, n >= 1 and correct in "
                          "[0, n]); the file is damaged")
    return report


def classify(before: tuple[int, int], after: tuple[int, int], k: int, solved_at: float = 0.5) -> str:
    """One problem's category from its (samples, correct) before and after training.

    already_solved: pass@1 before >= ``solved_at``. Otherwise, if pass@k before > 0: compressed when pass@1
    rose, else not_improved. If pass@k before = 0: capability_gain when any sample after is correct, else unsolved.
    """
    p1_before, p1_after = before[1] / before[0], after[1] / after[0]
    if p1_before >= solved_at:
        return "already_solved"
    if pass_at_k(before[0], before[1], min(k, before[0])) > 0:
        return "compressed" if p1_after > p1_before else "not_improved"
    return "capability_gain" if after[1] > 0 else "unsolved"


def capability_table(before: Sequence[dict], after: Sequence[dict], k: int, solved_at: float = 0.5) -> dict:
    """Counts, shares and per-problem categories for problems present in both reports (matched by prompt)."""
    after_by_prompt = {p["prompt"]: p for p in after}
    problems = []
    for b in before:
        a = after_by_prompt.get(b["prompt"])
        if a is None:
            continue
        category = classify((b["n"], b["correct"]), (a["n"], a["correct"]), k, solved_at)
        problems.append({"prompt": b["prompt"], "category": category,
                         "pass@1_before": b["correct"] / b["n"], "pass@1_after": a["correct"] / a["n"]})
    counts = Counter(p["category"] for p in problems)
    total = len(problems)
    return {"k": k, "solved_at": solved_at, "problems_compared": total,
            "counts": {c: counts.get(c, 0) for c in CATEGORIES},
            "shares": {c: counts.get(c, 0) / total if total else 0.0 for c in CATEGORIES},
            "problems": problems}
