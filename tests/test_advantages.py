"""Advantage estimators against values computed by hand."""

from __future__ import annotations

import math

import pytest
import torch

from guidedrl.algorithms.advantages import AdvantageInputs, broadcast, estimate_advantages, gae, group_stats
from guidedrl.algorithms.filters import flat_groups
from guidedrl.config import AlgorithmConfig, Scheduled
from guidedrl.registry import ADVANTAGE_ADDONS, ADVANTAGES
from guidedrl.rows import RowKind

POLICY, TEACHER, HINTED = RowKind.POLICY, RowKind.TEACHER, RowKind.HINTED

ADV = ADVANTAGES.get

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
    assert {"grpo", "dr_grpo", "grpo_split", "rkl", "gae"} <= set(ADVANTAGES.names())
    with pytest.raises(ValueError, match="grpo"):
        ADVANTAGES.register("grpo")(lambda x, eps=1e-6: x.rewards)
    with pytest.raises(ValueError,
                       match=r"unknown advantage estimator 'gpro' \(did you mean 'grpo'\?\); known: dr_grpo"):
        ADVANTAGES.get("gpro")


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
    adv = ADV("grpo")(AdvantageInputs(REWARDS, MASK, GROUPS))
    s3 = math.sqrt(0.5) + 1e-6
    expected = [0.5 / (0.5 + 1e-6), -0.5 / s3, -0.5 / (0.5 + 1e-6), 0.5 / s3, 0.0]
    assert rows_of(adv) == pytest.approx(expected, abs=1e-6)


def test_grpo_equal_rewards_and_singleton_give_zero() -> None:
    rewards = torch.tensor([0.0, 0.0, 0.0, 1.0])
    groups = torch.tensor([0, 0, 0, 5])
    adv = ADV("grpo")(AdvantageInputs(rewards, torch.ones(4, 2), groups))
    assert torch.equal(adv, torch.zeros(4, 2))


def test_dr_grpo_no_std() -> None:
    adv = ADV("dr_grpo")(AdvantageInputs(REWARDS, MASK, GROUPS))
    assert rows_of(adv) == pytest.approx([0.5, -0.5, -0.5, 0.5, 0.0])


def test_grpo_split_uses_on_policy_statistics() -> None:
    # group 0: on-policy rewards {0, 0, 1} (mean 1/3, var ((1/3)²·2 + (2/3)²)/2 = 1/3) plus a teacher row with 1.
    # group 1: one on-policy row only: mean 0 and std 1 (the AMPO authors' rule), so A = r / (1 + eps).
    rewards = torch.tensor([0.0, 0.0, 1.0, 1.0, 0.0, 1.0])
    groups = torch.tensor([0, 0, 0, 0, 1, 1])
    kind = torch.tensor([POLICY, POLICY, POLICY, TEACHER, POLICY, TEACHER])
    adv = ADV("grpo_split")(AdvantageInputs(rewards, torch.ones(6, 1), groups, kind=kind))
    s0 = math.sqrt(1 / 3) + 1e-6
    expected = [-1 / 3 / s0, -1 / 3 / s0, 2 / 3 / s0, 2 / 3 / s0, 0.0, 1 / (1 + 1e-6)]
    assert adv[:, 0].tolist() == pytest.approx(expected, abs=1e-6)


def test_grpo_split_all_wrong_group_with_teacher_rows_does_not_divide_by_zero() -> None:
    # 6 wrong on-policy rows + 2 teacher rows: on-policy std is 0, so std = 1 (not eps): teacher rows get 1, not 1e6
    rewards = torch.tensor([0.0] * 6 + [1.0, 1.0])
    kind = torch.tensor([POLICY] * 6 + [TEACHER] * 2)
    adv = ADV("grpo_split")(AdvantageInputs(rewards, torch.ones(8, 1), torch.zeros(8, dtype=torch.long), kind=kind))
    assert adv[:, 0].tolist() == pytest.approx([0.0] * 6 + [1 / (1 + 1e-6)] * 2)


def test_grpo_split_counts_hinted_rows_as_on_policy_and_without_kinds_is_grpo() -> None:
    x = AdvantageInputs(REWARDS, MASK, GROUPS)
    assert torch.allclose(ADV("grpo_split")(x), ADV("grpo")(x))
    hinted = AdvantageInputs(REWARDS, MASK, GROUPS, kind=torch.full((5,), HINTED))
    assert torch.allclose(ADV("grpo_split")(hinted), ADV("grpo")(x))


def test_rkl_per_token() -> None:
    teacher = torch.tensor([[-0.5, -2.0, -9.0], [-1.0, -0.1, -9.0]])
    behaviour = torch.tensor([[-1.0, -1.0, -1.0], [-0.5, -0.3, -1.0]])
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]])
    x = AdvantageInputs(torch.zeros(2), mask, torch.tensor([0, 0]), behaviour_logp=behaviour, teacher_logp=teacher)
    adv = ADV("rkl")(x)
    assert_values(adv, [[0.5, -1.0, 0.0], [-0.5, 0.2, -8.0]])


def test_rkl_without_teacher_is_an_error() -> None:
    with pytest.raises(ValueError, match="teacher_logp"):
        ADV("rkl")(AdvantageInputs(REWARDS, MASK, GROUPS))


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


def test_scheduled_coefficient_decays_linearly_to_its_floor() -> None:
    lam = Scheduled(coef=0.002, decay=1e-5)
    assert lam.at(1) == pytest.approx(0.002)
    assert lam.at(101) == pytest.approx(0.001)
    assert lam.at(201) == pytest.approx(0.0, abs=1e-12)
    assert lam.at(300) == 0.0
    assert Scheduled(coef=0.002, decay=1e-5, floor=5e-4).at(300) == 5e-4


def test_reverse_kl_addon_skips_teacher_rows() -> None:
    teacher = torch.tensor([[-0.5, -2.0], [-1.0, -0.1], [-3.0, -3.0]])
    behaviour = torch.tensor([[-1.0, -1.0], [-0.5, -0.3], [0.0, 0.0]])
    x = AdvantageInputs(torch.zeros(3), torch.ones(3, 2), torch.zeros(3, dtype=torch.long),
                        kind=torch.tensor([POLICY, HINTED, TEACHER]), behaviour_logp=behaviour, teacher_logp=teacher)
    out = ADVANTAGE_ADDONS.get("reverse_kl")(torch.full((3, 2), 0.5), x, 0.1)
    assert_values(out, [[0.55, 0.4], [0.45, 0.52], [0.5, 0.5]])


def test_label_bonus_addon_is_pi_old_of_the_label_on_own_rows_and_token_set() -> None:
    old = torch.log(torch.tensor([[0.2, 0.5], [0.4, 0.4]]))
    tokens = torch.tensor([[True, False], [True, True]])
    x = AdvantageInputs(torch.zeros(2), torch.ones(2, 2), torch.zeros(2, dtype=torch.long),
                        kind=torch.tensor([POLICY, TEACHER]), old_label_logp=old, teacher_tokens=tokens)
    out = ADVANTAGE_ADDONS.get("label_bonus")(torch.ones(2, 2), x, 0.5)
    assert_values(out, [[1.1, 1.0], [1.0, 1.0]])  # only row 0 (own), only its first token (in the set)


def test_estimate_advantages_adds_scheduled_addons() -> None:
    algo = AlgorithmConfig(advantage="dr_grpo", advantage_addons={"reverse_kl": {"coef": 0.3, "decay": 0.1}})
    x = AdvantageInputs(torch.tensor([1.0, 0.0]), torch.ones(2, 1), torch.zeros(2, dtype=torch.long),
                        behaviour_logp=torch.tensor([[-1.0], [-1.0]]), teacher_logp=torch.tensor([[0.0], [-2.0]]))
    # step 2: λ = 0.3 − 0.1 = 0.2; dr_grpo ±0.5; reverse KL +1 and −1
    assert_values(estimate_advantages(x, algo, 2), [[0.7], [-0.7]])


def test_flat_groups_filter_keeps_groups_of_unequal_rewards() -> None:
    # group 7 (rows 0, 2, 4) has rewards 1, 0, 0.5; group 3 (rows 1, 3) 0, 1; group 5 (rows 5, 6) 1, 1
    rewards = torch.cat([REWARDS, torch.tensor([1.0, 1.0])])
    groups = torch.cat([GROUPS, torch.tensor([5, 5])])
    assert flat_groups(rewards, groups).tolist() == [True] * 5 + [False, False]
    assert not flat_groups(torch.zeros(4), torch.tensor([0, 0, 1, 1])).any()
