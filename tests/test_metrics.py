"""pass@k against hand-computed values and its edge cases; distinct solution paths."""

from math import comb

import pytest

from guidedrl.eval.metrics import distinct_correct_paths, mean_pass_at_k, pass_at_k


def test_pass_at_k_hand_computed() -> None:
    assert pass_at_k(10, 3, 1) == pytest.approx(0.3)
    # 1 - C(7,5)/C(10,5) = 1 - 21/252
    assert pass_at_k(10, 3, 5) == pytest.approx(1 - 21 / 252)
    assert pass_at_k(10, 3, 5) == pytest.approx(1 - comb(7, 5) / comb(10, 5))


def test_pass_at_k_edges() -> None:
    assert pass_at_k(10, 0, 1) == 0.0
    assert pass_at_k(10, 0, 10) == 0.0
    assert pass_at_k(10, 10, 1) == 1.0
    assert pass_at_k(10, 8, 3) == 1.0  # fewer than k wrong samples: always a hit
    with pytest.raises(ValueError):
        pass_at_k(4, 5, 1)
    with pytest.raises(ValueError):
        pass_at_k(4, 1, 5)


def test_mean_pass_at_k() -> None:
    assert mean_pass_at_k([(4, 0), (4, 4), (4, 2)], 1) == pytest.approx((0 + 1 + 0.5) / 3)


def test_distinct_correct_paths_ignores_spacing_and_wrong_ones() -> None:
    texts = ["1+2=3 \\boxed{3}", "1+2=3  \\boxed{3}\n", "3 \\boxed{3}", "wrong"]
    assert distinct_correct_paths(texts, [True, True, True, False]) == 2
    assert distinct_correct_paths(texts, [False] * 4) == 0
