"""pass@k and avg@k against hand-computed values and their edge cases; distinct solution paths."""

from math import comb

import pytest

from guidedrl.eval.metrics import avg_at_k, distinct_correct_paths, ks_up_to, mean_pass_at_k, pass_at_k


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


def test_avg_at_k_is_the_mean_share_of_correct_samples() -> None:
    # AIME-style: 3 problems x 32 samples with 8, 0 and 32 correct -> (0.25 + 0 + 1) / 3
    assert avg_at_k([(32, 8), (32, 0), (32, 32)]) == pytest.approx(1.25 / 3)
    # equal to the mean unbiased pass@1 at the same counts, also when problems drew different numbers
    counts = [(4, 1), (2, 1), (1, 0)]
    assert avg_at_k(counts) == pytest.approx((0.25 + 0.5 + 0) / 3) == pytest.approx(mean_pass_at_k(counts, 1))
    with pytest.raises(ValueError):
        avg_at_k([])


def test_pass_at_k_curve_up_to_the_samples_drawn() -> None:
    assert ks_up_to(1) == [1]
    assert ks_up_to(32) == [1, 2, 4, 8, 16, 32]
    assert ks_up_to(12) == [1, 2, 4, 8, 12]
    # pass@k at k = n: 1 - C(n-c, n)/C(n, n) is 1 whenever one sample is right; pass@4 of 12 with 3 right by hand
    assert pass_at_k(12, 1, 12) == 1.0
    assert pass_at_k(12, 3, 4) == pytest.approx(1 - comb(9, 4) / comb(12, 4)) == pytest.approx(1 - 126 / 495)
    with pytest.raises(ValueError):
        ks_up_to(0)


def test_distinct_correct_paths_ignores_spacing_and_wrong_ones() -> None:
    texts = ["1+2=3 \\boxed{3}", "1+2=3  \\boxed{3}\n", "3 \\boxed{3}", "wrong"]
    assert distinct_correct_paths(texts, [True, True, True, False]) == 2
    assert distinct_correct_paths(texts, [False] * 4) == 0
