"""Paired comparisons of per-problem scores: two methods' runs share seeds and problems, so their difference
is taken per (seed, problem) and its 95% interval comes from a crossed bootstrap over seeds and problems.

The design is crossed, not nested: the same held-out problems are evaluated under every training seed, so a
problem that is easy (or that one method happens to suit) is easy under all seeds. A bootstrap replicate
therefore draws the seeds with replacement *and* one problem resample shared by every drawn seed. Drawing the
problems afresh inside each seed (the nested scheme this module used before) treats the 5 × 100 cells as
500 independent problems, divides the between-problem variance by 500 instead of 100, and gives intervals
too narrow (tests/test_paired.py measures both schemes' coverage on a design whose truth is known).

What the crossed replicates' variance estimates, for differences = seed effect (variance σ_s²) + problem effect
(σ_p²) + cell noise (σ_e², the seed × problem interaction and the sampling noise), S seeds and P problems: about
(1 − 1/S) σ_s²/S + (1 − 1/P) σ_p²/P + ((2 − 1/S)(2 − 1/P) − 1) σ_e²/(SP), against the true σ_s²/S + σ_p²/P +
σ_e²/(SP). So the interval is about right where problem effects dominate, errs wide where cell noise does
(its share is counted about 2.6 times at 5 × 100), and errs narrow only where seed effects dominate (5 seeds).

A method's scores are ``table[seed][problem] = (samples, correct, distinct correct paths)``, as
bench/headline.py stores them; ``by_label`` cuts a table by a label per problem (the number of operands).
"""

from __future__ import annotations

import statistics

import numpy as np

from guidedrl.eval.metrics import pass_at_k

Table = list[list[tuple[int, int, int]]]
DRAWS = 2000  # bootstrap replicates of every stored interval
SEED = 0  # the replicates' random seed: the same data always gives the same interval


def percentile_interval(stats: np.ndarray) -> tuple[float, float]:
    """The 2.5% and 97.5% order statistics of the replicates (the same positions for every caller)."""
    ordered = np.sort(stats)
    draws = len(ordered)
    return float(ordered[int(0.025 * draws)]), float(ordered[int(0.975 * draws) - 1])


def resample_counts(rng: np.random.Generator, n: int, draws: int) -> np.ndarray:
    """``draws`` resamples of n items with replacement, each as how often every item was drawn (draws × n)."""
    picks = rng.integers(0, n, size=(draws, n)) + n * np.arange(draws)[:, None]
    return np.bincount(picks.ravel(), minlength=n * draws).reshape(draws, n)


def crossed_replicates(diffs: np.ndarray, draws: int, seed: int) -> np.ndarray:
    """Bootstrap replicates of the mean of a seeds × problems array: each replicate draws the seeds with
    replacement and one problem resample that every drawn seed shares. A replicate's mean is
    ``w · diffs · v / (seeds · problems)`` with ``w`` and ``v`` the draw counts of each seed and problem. The
    problems are drawn first, so rows that are all alike give the same replicates whatever the number of seeds."""
    n_seeds, n_problems = diffs.shape
    rng = np.random.default_rng(seed)
    v = resample_counts(rng, n_problems, draws)
    w = resample_counts(rng, n_seeds, draws)
    return ((w @ diffs) * v).sum(axis=1) / (n_seeds * n_problems)


def paired_interval(a: list[list[float]], b: list[list[float]], draws: int = DRAWS, seed: int = SEED
                    ) -> tuple[float, float, float]:
    """Mean of a − b over seeds × problems and its 95% percentile interval from a crossed bootstrap
    (``a[s][p]`` and ``b[s][p]`` share seed s and problem p; every seed holds the same problems)."""
    diffs = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    if diffs.ndim != 2 or 0 in diffs.shape:
        raise ValueError(f"paired scores must be seeds × problems with both non-empty, got shape {diffs.shape}")
    mean = statistics.fmean(float(d) for d in diffs.ravel())
    low, high = percentile_interval(crossed_replicates(diffs, draws, seed))
    return mean, low, high


def paired_diffs(a: Table, b: Table, ks: list[int], draws: int = DRAWS, seed: int = SEED
                 ) -> dict[str, tuple[float, float, float]]:
    """Paired pass@1 and pass@max(k) differences a − b (per seed, per problem scores) with 95% intervals from
    the crossed bootstrap (``draws`` replicates drawn with ``seed``)."""
    def scores(table: Table, k: int) -> list[list[float]]:
        return [[pass_at_k(n, c, k) for n, c, _ in row] for row in table]
    return {f"diff_pass@{k}": paired_interval(scores(a, k), scores(b, k), draws, seed) for k in (1, ks[-1])}


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
