"""Evaluation statistics: the unbiased pass@k estimator, avg@k, and the diversity of correct solutions."""

from __future__ import annotations

import re
from collections.abc import Sequence

_SPACE = re.compile(r"\s+")


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k of Chen et al. (2021): 1 − C(n−c, k) / C(n, k), as a stable running product."""
    if not 0 <= c <= n:
        raise ValueError(f"pass_at_k: need 0 <= c <= n, got n={n}, c={c}")
    if not 1 <= k <= n:
        raise ValueError(f"pass_at_k: need 1 <= k <= n, got n={n}, k={k}")
    if n - c < k:
        return 1.0
    miss = 1.0
    for i in range(n - c + 1, n + 1):
        miss *= 1.0 - k / i
    return 1.0 - miss


def mean_pass_at_k(counts: Sequence[tuple[int, int]], k: int) -> float:
    """Mean pass@k over problems given as (samples drawn, samples correct)."""
    if not counts:
        raise ValueError("mean_pass_at_k: no problems")
    return sum(pass_at_k(n, c, k) for n, c in counts) / len(counts)


def avg_at_k(counts: Sequence[tuple[int, int]]) -> float:
    """avg@k as the papers report it for AIME and AMC: each problem's share of correct samples, averaged over
    problems (with k samples per problem it equals the mean unbiased pass@1)."""
    if not counts:
        raise ValueError("avg_at_k: no problems")
    return sum(c / n for n, c in counts) / len(counts)


def ks_up_to(n: int) -> list[int]:
    """The k of a pass@k curve over ``n`` samples: every power of two below ``n``, and ``n``."""
    if n < 1:
        raise ValueError(f"ks_up_to: need n >= 1, got {n}")
    return sorted({1 << i for i in range(n.bit_length()) if 1 << i < n} | {n})


def normalize_solution(text: str) -> str:
    """A solution with runs of whitespace collapsed and ends stripped: two paths differing only in
    spacing are the same path."""
    return _SPACE.sub(" ", text).strip()


def distinct_correct_paths(completions: Sequence[str], correct: Sequence[bool]) -> int:
    """Number of distinct (normalized) texts among the correct completions of one problem."""
    return len({normalize_solution(t) for t, ok in zip(completions, correct, strict=True) if ok})
