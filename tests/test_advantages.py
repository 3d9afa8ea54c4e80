"""Advantage estimators against values computed by hand."""

from __future__ import annotations

import math

import pytest
import torch

from guidedrl.algorithms.advantages import (
    ADVANTAGES, AdvantageInputs, broadcast, gae, group_stats, linear_decay, register_advantage, rows_with_signal)

# Two groups with non-contiguous ids: group 7 = rows 0, 2, 4; group 3 = rows 1, 3.
REWARDS = torch.tensor([1.0, 0.0, 0.0, 1.0, 0.5])
GROUPS = torch.tensor([7, 3, 7, 3, 7])
MASK = torch.tensor([[1, 1, 1], [1, 0, 0], [1, 1, 0], [1, 1, 1], [1, 1, 0]], dtype=torch.float32)


def assert_values(t: torch.Tensor, expected: list, atol: float = 1e-6) -> None:
    """``t`` equals the hand-written nested list up to ``atol``."""
    torch.testing.assert_close(t.float(), torch.tensor(expected, dtype=torch.float32), atol=atol, rtol=0)


def rows_of(adv: torch.Tensor) -> list[float]:
    """The per-row value of a broadcast advantage (its first token) after checking it is constant per row."""
    assert torch.all(adv[MASK == 0] == 0)
    per_row = adv[:, 0]
    assert torch.allclose(adv, per_row[:, None] * MASK)
    return per_row.tolist()


def test_registry_has_the_estimators_and_refuses_duplicates() -> None:
    assert {"grpo", "dr_grpo", "grpo_split", "rkl"} <= set(ADVANTAGES)
    with pytest.raises(ValueError, match="grpo"):
        register_advantage("grpo")(lambda x, eps=1e-6: x.rewards)


def test_group_stats_vectorized_unbiased_std() -> None:
    mean, std = group_stats(REWARDS, GROUPS)
    # group 7: {1, 0, 0.5} mean 0.5, unbiased var (0.25 + 0.25 + 0) / 2 = 0.25; group 3: {0, 1} var 0.5
    assert mean.tolist() == pytest.approx([0.5, 0.5, 0.5, 0.5, 0.5])
    assert std.tolist() == pytest.approx([0.5, math.sqrt(0.5), 0.5, math.sqrt(0.5), 0.5])


def test_group_stats_rows_mask_and_small_groups() -> None:
    rows = torch.tensor([True, False, True, False, False])  # group 7 counts {1, 0}; group 3 counts nothing
    mean, std = group_stats(REWARDS, GROUPS, rows)
    assert mean.tolist() == pytest.approx([0.5, 0.0, 0.5, 0.0, 0.5])
    assert std.tolist() == pytest.approx([math.sqrt(0.5), 0.0, math.sqrt(0.5), 0.0, math.sqrt(0.5)])
    _, single = group_stats(torch.tensor([3.0]), torch.tensor([0]))
    assert single.tolist() == [0.0]


def test_broadcast_zeroes_padding() -> None:
    out = broadcast(torch.tensor([2.0, -1.0]), torch.tensor([[1, 1, 0], [1, 0, 0]]))
    assert_values(out, [[2.0, 2.0, 0.0], [-1.0, 0.0, 0.0]], atol=0)


def test_grpo_two_groups() -> None:
    adv = ADVANTAGES["grpo"](AdvantageInputs(REWARDS, MASK, GROUPS))
    s3 = math.sqrt(0.5) + 1e-6
    expected = [0.5 / (0.5 + 1e-6), -0.5 / s3, -0.5 / (0.5 + 1e-6), 0.5 / s3, 0.0]
    assert rows_of(adv) == pytest.approx(expected, abs=1e-6)


def test_grpo_equal_rewards_and_singleton_give_zero() -> None:
    rewards = torch.tensor([0.0, 0.0, 0.0, 1.0])
    groups = torch.tensor([0, 0, 0, 5])
    adv = ADVANTAGES["grpo"](AdvantageInputs(rewards, torch.ones(4, 2), groups))
    assert torch.equal(adv, torch.zeros(4, 2))


def test_dr_grpo_no_std() -> None:
    adv = ADVANTAGES["dr_grpo"](AdvantageInputs(REWARDS, MASK, GROUPS))
    assert rows_of(adv) == pytest.approx([0.5, -0.5, -0.5, 0.5, 0.0])


def test_grpo_split_uses_on_policy_statistics() -> None:
    # group 0: on-policy rewards {0, 0, 1} (mean 1/3, var ((1/3)²·2 + (2/3)²)/2 = 1/3) plus a teacher row with 1.
    # group 1: only one on-policy row, so it falls back to the whole group {0, 1}: mean 0.5, std √0.5.
    rewards = torch.tensor([0.0, 0.0, 1.0, 1.0, 0.0, 1.0])
    groups = torch.tensor([0, 0, 0, 0, 1, 1])
    on_policy = torch.tensor([True, True, True, False, True, False])
    adv = ADVANTAGES["grpo_split"](AdvantageInputs(rewards, torch.ones(6, 1), groups, on_policy=on_policy))
    s0 = math.sqrt(1 / 3) + 1e-6
    s1 = math.sqrt(0.5) + 1e-6
    expected = [-1 / 3 / s0, -1 / 3 / s0, 2 / 3 / s0, 2 / 3 / s0, -0.5 / s1, 0.5 / s1]
    assert adv[:, 0].tolist() == pytest.approx(expected, abs=1e-6)


def test_grpo_split_without_on_policy_flags_is_grpo() -> None:
    x = AdvantageInputs(REWARDS, MASK, GROUPS)
    assert torch.allclose(ADVANTAGES["grpo_split"](x), ADVANTAGES["grpo"](x))


def test_rkl_per_token() -> None:
    teacher = torch.tensor([[-0.5, -2.0, -9.0], [-1.0, -0.1, -9.0]])
    behaviour = torch.tensor([[-1.0, -1.0, -1.0], [-0.5, -0.3, -1.0]])
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]])
    x = AdvantageInputs(torch.zeros(2), mask, torch.tensor([0, 0]), behaviour_logp=behaviour, teacher_logp=teacher)
    adv = ADVANTAGES["rkl"](x)
    assert_values(adv, [[0.5, -1.0, 0.0], [-0.5, 0.2, -8.0]])


def test_rkl_without_teacher_is_an_error() -> None:
    with pytest.raises(ValueError, match="teacher_logp"):
        ADVANTAGES["rkl"](AdvantageInputs(REWARDS, MASK, GROUPS))


def test_gae_hand_trajectory() -> None:
    # γ=0.9, λ=0.8, values (0.5, 0.6, 0.7), reward 1 on the last token:
    # δ2 = 1 − 0.7 = 0.3;          A2 = 0.3
    # δ1 = 0.9·0.7 − 0.6 = 0.03;   A1 = 0.03 + 0.72·0.3 = 0.246
    # δ0 = 0.9·0.6 − 0.5 = 0.04;   A0 = 0.04 + 0.72·0.246 = 0.21712
    # Row 2 has two real tokens (values 0.5, 0.6; the padded 99 is ignored) and reward 0:
    # δ1 = −0.6; A1 = −0.6;  δ0 = 0.04; A0 = 0.04 − 0.72·0.6 = −0.392
    values = torch.tensor([[0.5, 0.6, 0.7], [0.5, 0.6, 99.0], [4.0, 4.0, 4.0]])
    mask = torch.tensor([[1, 1, 1], [1, 1, 0], [0, 0, 0]])
    adv, ret = gae(torch.tensor([1.0, 0.0, 5.0]), values, mask, gamma=0.9, lam=0.8)
    assert_values(adv, [[0.21712, 0.246, 0.3], [-0.392, -0.6, 0.0], [0.0, 0.0, 0.0]])
    assert_values(ret, [[0.71712, 0.846, 1.0], [0.108, 0.0, 0.0], [0.0, 0.0, 0.0]])


def test_gae_with_unit_gamma_lambda_is_reward_minus_value() -> None:
    values = torch.tensor([[0.1, 0.2, 0.3, 0.0], [0.4, 0.0, 0.0, 0.0]])
    mask = torch.tensor([[1, 1, 1, 0], [1, 0, 0, 0]])
    adv, ret = gae(torch.tensor([1.0, -1.0]), values, mask)
    assert_values(adv, [[0.9, 0.8, 0.7, 0.0], [-1.4, 0.0, 0.0, 0.0]])
    assert_values(ret, [[1.0, 1.0, 1.0, 0.0], [-1.0, 0.0, 0.0, 0.0]])


def test_linear_decay() -> None:
    assert linear_decay(1, 0.002, 1e-5) == pytest.approx(0.002)
    assert linear_decay(101, 0.002, 1e-5) == pytest.approx(0.001)
    assert linear_decay(201, 0.002, 1e-5) == pytest.approx(0.0, abs=1e-12)
    assert linear_decay(300, 0.002, 1e-5) == 0.0
    assert linear_decay(300, 0.002, 1e-5, floor=5e-4) == 5e-4


def test_rows_with_signal_keeps_groups_of_unequal_rewards() -> None:
    # group 7 (rows 0, 2, 4) has rewards 1, 0, 0.5; group 3 (rows 1, 3) 0, 1; group 5 (rows 5, 6) 1, 1
    rewards = torch.cat([REWARDS, torch.tensor([1.0, 1.0])])
    groups = torch.cat([GROUPS, torch.tensor([5, 5])])
    assert rows_with_signal(rewards, groups).tolist() == [True] * 5 + [False, False]
    assert not rows_with_signal(torch.zeros(4), torch.tensor([0, 0, 1, 1])).any()
