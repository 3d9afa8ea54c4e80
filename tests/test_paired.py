"""bench/paired.py's crossed bootstrap: its 95% interval covers a known true difference about 95% of the time on
synthetic seeds × problems data with seed effects, problem effects and noise, where the nested scheme it
replaced (problems resampled afresh inside each resampled seed) covers far less; and small hand-checked cases.

The synthetic design mirrors the stored comparisons (bench/results/headline*.json): 5 seeds × 100 problems,
per-problem differences whose spread across problems is much larger than their spread across seeds.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from paired import crossed_replicates, paired_interval, percentile_interval, resample_counts  # noqa: E402

SEEDS, PROBLEMS, TRUTH = 5, 100, 0.03
DATASETS, REPLICATES = 500, 1000  # synthetic data sets per design; bootstrap replicates per interval
# coverage of DATASETS intervals is binomial: three standard deviations around the nominal 95%
TOLERANCE = 3 * math.sqrt(0.95 * 0.05 / DATASETS)


def synthetic(rng: np.random.Generator, seed_sd: float, problem_sd: float, noise_sd: float) -> np.ndarray:
    """One seeds × problems array of paired differences: TRUTH + seed effect + problem effect (the same problem
    under every seed) + independent noise per cell (the seed × problem interaction and sampling noise)."""
    return (TRUTH + rng.normal(0, seed_sd, (SEEDS, 1)) + rng.normal(0, problem_sd, (1, PROBLEMS))
            + rng.normal(0, noise_sd, (SEEDS, PROBLEMS)))


def nested_replicates(diffs: np.ndarray, draws: int, seed: int) -> np.ndarray:
    """The superseded scheme, for comparison: seeds drawn with replacement, then problems drawn afresh within
    each drawn seed (as if every seed had its own problems)."""
    n_seeds, n_problems = diffs.shape
    rng = np.random.default_rng(seed)
    seeds = rng.integers(0, n_seeds, size=(draws, n_seeds))
    counts = resample_counts(rng, n_problems, draws * n_seeds).reshape(draws, n_seeds, n_problems)
    return (diffs[seeds] * counts).sum(axis=(1, 2)) / (n_seeds * n_problems)


def coverage(scheme, seed_sd: float, problem_sd: float, noise_sd: float) -> float:
    """Share of DATASETS synthetic data sets whose 95% interval from ``scheme`` holds TRUTH."""
    rng = np.random.default_rng(2024)
    held = 0
    for i in range(DATASETS):
        low, high = percentile_interval(scheme(synthetic(rng, seed_sd, problem_sd, noise_sd), REPLICATES, i))
        held += low <= TRUTH <= high
    return held / DATASETS


def test_the_crossed_interval_covers_the_true_difference_about_95_percent_and_the_nested_one_does_not() -> None:
    design = (0.02, 0.15, 0.15)  # seed, problem and noise standard deviations
    crossed = coverage(crossed_replicates, *design)
    nested = coverage(nested_replicates, *design)
    assert abs(crossed - 0.95) <= TOLERANCE, crossed
    assert nested < 0.95 - TOLERANCE, nested  # problem effects divided by seeds × problems: too narrow
    assert crossed - nested > 2 * TOLERANCE


def test_the_crossed_interval_is_conservative_not_narrow_when_cell_noise_dominates() -> None:
    # each cell's own noise is counted about (2 - 1/seeds)(2 - 1/problems) - 1 = 2.6 times over: the interval
    # errs wide, never narrow, on designs like the stored comparisons whose noise outweighs problem effects
    assert coverage(crossed_replicates, 0.0, 0.05, 0.3) >= 0.95 - TOLERANCE


def test_one_seed_and_one_problem_give_the_difference_itself() -> None:
    assert paired_interval([[0.75]], [[0.5]], draws=100) == (0.25, 0.25, 0.25)


def test_identical_methods_differ_by_exactly_zero() -> None:
    b = [[0.1, 0.4, 0.7], [0.0, 0.5, 1.0]]
    assert paired_interval(b, b, draws=100) == (0.0, 0.0, 0.0)


def test_two_seeds_that_differ_by_one_span_the_interval_from_zero_to_one() -> None:
    # replicates are the means of two drawn seeds: 0, 0.5 or 1 with chances 1/4, 1/2, 1/4
    a = [[0.0, 0.0, 0.0], [1.0, 1.0, 1.0]]
    zeros = [[0.0] * 3] * 2
    assert paired_interval(a, zeros) == (0.5, 0.0, 1.0)


def test_problems_shared_by_every_seed_do_not_narrow_the_interval() -> None:
    # five seeds that agree on every problem carry the information of one: the same interval as one seed
    row = [0.1 * p for p in range(10)]
    zeros = [[0.0] * 10]
    one = paired_interval([row], zeros)
    five = paired_interval([row] * 5, zeros * 5)
    assert np.allclose(one, five, rtol=0, atol=1e-12)
    nested = percentile_interval(nested_replicates(np.array([row] * 5), 2000, 0))
    assert nested[1] - nested[0] < 0.6 * (one[2] - one[1])  # the nested scheme narrows it by about √5


def test_the_interval_is_a_function_of_the_data_and_the_bootstrap_seed() -> None:
    rng = np.random.default_rng(0)
    a, b = rng.random((5, 20)).tolist(), rng.random((5, 20)).tolist()
    assert paired_interval(a, b, draws=500, seed=3) == paired_interval(a, b, draws=500, seed=3)
    assert paired_interval(a, b, draws=500, seed=3) != paired_interval(a, b, draws=500, seed=4)
