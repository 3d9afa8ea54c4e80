"""Paired comparisons of per-problem scores: two methods' runs share seeds and problems, so their difference
is taken per (seed, problem) and its 95% interval comes from a bootstrap over seeds, then problems.

A method's scores are ``table[seed][problem] = (samples, correct, distinct correct paths)``, as
bench/headline.py stores them; ``by_label`` cuts a table by a label per problem (the number of operands).
"""

from __future__ import annotations

import random
import statistics

from guidedrl.eval.metrics import pass_at_k

Table = list[list[tuple[int, int, int]]]


def paired_interval(a: list[list[float]], b: list[list[float]], draws: int = 2000, seed: int = 0
                    ) -> tuple[float, float, float]:
    """Mean of a − b over seeds × problems and its 95% bootstrap interval, resampling seeds, then problems
    within each drawn seed (``a[s][p]`` and ``b[s][p]`` share seed s and problem p)."""
    rng = random.Random(seed)
    diffs = [[x - y for x, y in zip(sa, sb)] for sa, sb in zip(a, b)]
    mean = statistics.fmean(d for row in diffs for d in row)
    stats = []
    for _ in range(draws):
        total, count = 0.0, 0
        for s in rng.choices(range(len(diffs)), k=len(diffs)):
            row = diffs[s]
            picks = rng.choices(row, k=len(row))
            total += sum(picks)
            count += len(picks)
        stats.append(total / count)
    stats.sort()
    return mean, stats[int(0.025 * draws)], stats[int(0.975 * draws) - 1]


def paired_diffs(a: Table, b: Table, ks: list[int]) -> dict[str, tuple[float, float, float]]:
    """Paired pass@1 and pass@max(k) differences a − b (per seed, per problem scores) with 95% intervals."""
    def scores(table: Table, k: int) -> list[list[float]]:
        return [[pass_at_k(n, c, k) for n, c, _ in row] for row in table]
    return {f"diff_pass@{k}": paired_interval(scores(a, k), scores(b, k)) for k in (1, ks[-1])}


def by_label(table: Table, labels: list[object]) -> dict[object, Table]:
    """The table's problems grouped by ``labels[problem]`` (same seeds, problems kept in order)."""
    return {label: [[row[p] for p in range(len(labels)) if labels[p] == label] for row in table]
            for label in sorted(set(labels), key=str)}


def mean_pass_at_k(table: Table, k: int) -> float:
    """pass@k over every seed and problem of a table."""
    return statistics.fmean(pass_at_k(n, c, k) for row in table for n, c, _ in row)


def mean_distinct_paths(table: Table) -> float:
    """Distinct correct solution paths per problem, over the (seed, problem) pairs solved at least once."""
    solved = [d for row in table for _, c, d in row if c]
    return statistics.fmean(solved) if solved else 0.0
