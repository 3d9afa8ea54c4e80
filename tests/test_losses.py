"""Surrogates, shaping, regularizers, aggregation and the policy loss against values computed by hand."""

from __future__ import annotations

import math

import pytest
import torch

from guidedrl.algorithms.aggregation import Denominators, aggregate
from guidedrl.algorithms.distill import mean_reverse_kl, mismatch_ratio
from guidedrl.algorithms.losses import LossInputs, pg_loss_by_kind, policy_loss, value_loss
from guidedrl.algorithms.regularizers import k2_kl, k3_kl
from guidedrl.algorithms.surrogates import SurrogateParams, quantile_gamma, ratio_of, shape
from guidedrl.config import AGG_MODES, AlgorithmConfig
from guidedrl.registry import SURROGATES
from guidedrl.rows import RowKind

POLICY, TEACHER, HINTED = RowKind.POLICY, RowKind.TEACHER, RowKind.HINTED
clipped_surrogate = SURROGATES.get("clip")
MASK1 = torch.ones(1, 1, dtype=torch.bool)  # the clip surrogate is per token: its mask only broadcasts


def assert_values(t: torch.Tensor, expected: list | float, atol: float = 1e-6) -> None:
    """``t`` equals the hand-written (nested) list or number up to ``atol``."""
    torch.testing.assert_close(t.detach().float(), torch.tensor(expected, dtype=torch.float32), atol=atol, rtol=0)


def logs(*probs: float) -> torch.Tensor:
    """A 1×n row of log-probabilities that carries grad."""
    return torch.tensor([[math.log(p) for p in probs]], requires_grad=True)


def inputs(logp: torch.Tensor, behaviour: torch.Tensor, adv: torch.Tensor, mask: torch.Tensor | None = None,
           kind: int | list[int] = POLICY, **extra: torch.Tensor) -> LossInputs:
    """LossInputs with every row of one kind (or a kind per row)."""
    b = logp.shape[0]
    kinds = torch.tensor(kind if isinstance(kind, list) else [kind] * b)
    return LossInputs(logp=logp, behaviour_logp=behaviour, advantages=adv,
                      response_mask=torch.ones_like(logp) if mask is None else mask, kind=kinds, **extra)


def loss_of(x: LossInputs, step: int = 1, **algo: object) -> tuple[torch.Tensor, dict[str, float]]:
    """The policy loss under an AlgorithmConfig built from ``algo``."""
    return policy_loss(x, AlgorithmConfig(**algo), step, x.logp.shape[1])


# ---- aggregation -------------------------------------------------------------------------------------------
LOSS_MAT = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0], [7.0, 8.0, 9.0]])
AGG_MASK = torch.tensor([[1, 1, 0], [1, 0, 0], [0, 0, 0]])  # the third row has no token


@pytest.mark.parametrize(("mode", "norm_length", "expected"), [
    ("token-mean", None, (1 + 2 + 4) / 3),
    ("seq-mean-token-mean", None, (1.5 + 4) / 2),
    ("seq-mean-token-sum", None, (3 + 4) / 2),
    ("seq-mean-token-sum-norm", None, (3 / 3 + 4 / 3) / 2),  # default constant: R = 3
    ("seq-mean-token-sum-norm", 10, (3 / 10 + 4 / 10) / 2),  # Dr.GRPO's constant (max response length)
])
def test_aggregate_modes(mode: str, norm_length: int | None, expected: float) -> None:
    assert_values(aggregate(LOSS_MAT, AGG_MASK, mode, norm_length), expected)


@pytest.mark.parametrize("mode", ["token-mean", "seq-mean-token-mean", "seq-mean-token-sum", "seq-mean-token-sum-norm"])
def test_aggregate_empty_mask_is_zero_with_grad(mode: str) -> None:
    loss_mat = torch.ones(2, 3, requires_grad=True)
    out = aggregate(loss_mat, torch.zeros(2, 3), mode)
    assert out.item() == 0.0 and out.requires_grad
    out.backward()
    assert torch.equal(loss_mat.grad, torch.zeros(2, 3))


@pytest.mark.parametrize("mode", AGG_MODES)
def test_micro_batches_with_mini_batch_denominators_add_up_to_the_whole(mode: str) -> None:
    torch.manual_seed(0)
    loss_mat, mask = torch.randn(5, 4), torch.tensor([[1, 1, 1, 1], [1, 0, 0, 0], [1, 1, 0, 0], [0, 0, 0, 0],
                                                      [1, 1, 1, 0]])
    whole = aggregate(loss_mat, mask, mode, 6)
    d = Denominators.of(mask)
    parts = sum(aggregate(loss_mat[rows], mask[rows], mode, 6, d) for rows in ([0, 3], [1], [2, 4]))
    assert_values(parts, float(whole), atol=1e-6)
    assert d.tokens == 10 and d.rows == 4


def test_aggregate_unknown_mode_names_it() -> None:
    with pytest.raises(ValueError, match="seq-sum"):
        aggregate(LOSS_MAT, AGG_MASK, "seq-sum")


# ---- clipped surrogate ---------------------------------------------------------------------------------------
def test_clipped_surrogate_both_sides() -> None:
    # ε = 0.2. A>0, ρ=1.5 > 1.2: max(−1.5, −1.2) = −1.2 (clipped); A>0, ρ=0.9: −0.9;
    # A<0, ρ=0.5 < 0.8: max(0.5, 0.8) = 0.8 (clipped); A<0, ρ=1.1: 1.1.
    logp = logs(1.5, 0.9, 0.5, 1.1)
    adv = torch.tensor([[1.0, 1.0, -1.0, -1.0]])
    loss, clipped = clipped_surrogate(logp, torch.zeros(1, 4), adv, MASK1, SurrogateParams())
    assert_values(loss, [[-1.2, -0.9, 0.8, 1.1]])
    assert clipped.tolist() == [[True, False, True, False]]
    loss.sum().backward()
    # d(−Aρ)/dlogp = −Aρ where unclipped; 0 where the constant clipped branch is active
    assert_values(logp.grad, [[0.0, -0.9, 0.0, 1.1]])


def test_clipped_surrogate_asymmetric_clip_higher() -> None:
    loss, clipped = clipped_surrogate(logs(1.25, 1.3, 0.75), torch.zeros(1, 3), torch.ones(1, 3), MASK1,
                                      SurrogateParams(eps_high=0.28))
    assert_values(loss, [[-1.25, -1.28, -0.75]])  # ρ=0.75 < 0.8 with A>0 keeps the unclipped −0.75
    assert clipped.tolist() == [[False, True, False]]


def test_dual_clip_only_for_negative_advantages() -> None:
    # c = 3. A=−1, ρ=5: max(5, 1.2) = 5 → min(5, 3) = 3. A=+1, ρ=5: −1.2 (no dual clip).
    # A=−1, ρ=2: max(2, 1.2) = 2 < 3 stays. A=−2, ρ=4: max(8, 2.4) = 8 → min(8, 6) = 6.
    logp = logs(5.0, 5.0, 2.0, 4.0)
    adv = torch.tensor([[-1.0, 1.0, -1.0, -2.0]])
    loss, clipped = clipped_surrogate(logp, torch.zeros(1, 4), adv, MASK1, SurrogateParams(dual_clip=3.0))
    assert_values(loss, [[3.0, -1.2, 2.0, 6.0]], atol=1e-5)
    assert clipped.tolist() == [[True, True, False, True]]


def test_log_ratio_clamped_before_exp() -> None:
    assert_values(ratio_of(torch.tensor([50.0, -50.0]), torch.zeros(2)), [math.exp(20), math.exp(-20)], atol=1.0)
    loss, _ = clipped_surrogate(torch.tensor([[80.0]]), torch.zeros(1, 1), -torch.ones(1, 1), MASK1,
                                SurrogateParams())
    assert torch.isfinite(loss).all()


# ---- shaping ---------------------------------------------------------------------------------------------------
def test_shape_value() -> None:
    assert_values(shape(torch.tensor([0.3, 1.0]), 0.1), [0.3 / 0.4, 1.0 / 1.1])


def test_quantile_gamma_ignores_padding_and_is_detached() -> None:
    ratio = torch.tensor([[1.0, 2.0, 100.0], [4.0, 50.0, 7.0]], requires_grad=True)
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    gamma = quantile_gamma(ratio, mask, q=0.9)
    # masked values sorted (1, 2, 4); position (3 − 1)·0.9 = 1.8 → 2 + 0.8·(4 − 2) = 3.6
    assert_values(gamma, 3.6, atol=1e-5)
    assert not gamma.requires_grad


def test_quantile_gamma_floor() -> None:
    assert_values(quantile_gamma(torch.full((1, 3), 1e-7), torch.ones(1, 3), 0.9), 1e-4, atol=1e-9)
    assert_values(quantile_gamma(torch.ones(1, 3), torch.zeros(1, 3), 0.9), 1e-4, atol=1e-9)


def test_off_policy_shaped_loss_value_and_gradient() -> None:
    # teacher tokens, behaviour_logp = 0 so ρ = p = π_θ: loss per token −A·p/(p+γ), γ = 0.1
    p, adv, gamma = [0.3, 0.05], [2.0, -1.0], 0.1
    logp = logs(*p)
    x = inputs(logp, torch.zeros(1, 2), torch.tensor([adv]), kind=TEACHER)
    loss, stats = loss_of(x, surrogate={"teacher": {"name": "shaped", "gamma": gamma}})
    per_token = [-a * q / (q + gamma) for q, a in zip(p, adv)]  # −1.5, +0.3333
    assert_values(loss, sum(per_token) / 2)
    loss.backward()
    # d/dlogp of −A·p/(p+γ) = −A·γ·p/(p+γ)², halved by the token mean
    grad = [-a * gamma * q / (q + gamma) ** 2 / 2 for q, a in zip(p, adv)]
    assert_values(logp.grad, [grad])
    assert stats["teacher_prob_mean"] == pytest.approx(sum(p) / 2)
    assert "clip_frac" not in stats  # no on-policy token


def test_off_policy_tokens_are_not_clipped() -> None:
    # with known teacher log-probs the ratio can exceed 1 + ε: shaping applies, no clip
    x = inputs(logs(0.9), torch.tensor([[math.log(0.3)]]), torch.ones(1, 1), kind=TEACHER)
    loss, _ = loss_of(x)
    assert_values(loss, -3.0 / 3.1)


# ---- hinted rows (Guide) ----------------------------------------------------------------------------------------
def hinted_inputs(adv: float) -> LossInputs:
    """One hinted token: hint-free π_θ = 0.2, hinted behaviour π_old = 0.5, so ρ = 0.4 (not 0.2)."""
    return inputs(logs(0.2), torch.tensor([[math.log(0.5)]]), torch.tensor([[adv]]), kind=HINTED)


def test_hinted_ratio_uses_behaviour_logp_constant_gamma() -> None:
    loss, stats = loss_of(hinted_inputs(1.0), surrogate={"hinted": {"name": "shaped", "gamma": 0.1}})
    assert_values(loss, -0.4 / 0.5)  # −A·ρ/(ρ+γ) with ρ = 0.2 / 0.5
    assert stats["hint_ratio_mean"] == pytest.approx(0.4)


def test_hinted_clip_option() -> None:
    clip = {"hinted": {"name": "clip"}}
    assert_values(loss_of(hinted_inputs(1.0), surrogate=clip)[0], -0.4)  # A>0, ρ<0.8: max(−0.4, −0.8)
    assert_values(loss_of(hinted_inputs(-1.0), surrogate=clip)[0], 0.8)  # A<0, ρ<0.8: max(0.4, 0.8)


def test_a_quantile_gamma_given_by_the_update_shapes_the_hinted_tokens() -> None:
    # row 0 the student's own (ρ = 1, A = 0.5, two tokens + padding); row 1 hinted: ρ = 0.4, 1.0; the update
    # passes the γ it took over the mini-batch's hinted tokens (here 0.94, the 0.9-quantile of 0.4 and 1.0)
    logp = torch.tensor([[-1.0, -2.0, 0.0], [math.log(0.2), math.log(0.5), 0.0]], requires_grad=True)
    behaviour = torch.tensor([[-1.0, -2.0, 0.0], [math.log(0.5), math.log(0.5), -3.0]])
    mask = torch.tensor([[1, 1, 0], [1, 1, 0]])
    gamma = quantile_gamma(ratio_of(logp, behaviour)[1:], mask[1:], 0.9)
    assert float(gamma) == pytest.approx(0.4 + 0.9 * (1.0 - 0.4), abs=1e-6)
    x = inputs(logp, behaviour, torch.tensor([[0.5] * 3, [1.0] * 3]), mask, kind=[POLICY, HINTED],
               prepared={"hinted": {"gamma": gamma}})
    loss, stats = loss_of(x)
    g = float(gamma)
    assert_values(loss, (-0.5 - 0.5 - 0.4 / (0.4 + g) - 1.0 / (1.0 + g)) / 4)
    assert stats["hint_ratio_mean"] == pytest.approx(0.7)


def test_unknown_surrogate_is_a_config_error() -> None:
    with pytest.raises(ValueError, match="unknown surrogate 'power'"):
        AlgorithmConfig(surrogate={"hinted": {"name": "power"}})


# ---- regularizers and diagnostics ---------------------------------------------------------------------------------
def test_k3_value_and_clamp() -> None:
    # d = log 0.25 − log 0.5 = −log 2: 0.5 + log 2 − 1
    out = k3_kl(torch.tensor([math.log(0.5), 0.0, 0.0]), torch.tensor([math.log(0.25), 30.0, -30.0]))
    assert_values(out, [0.5 + math.log(2) - 1, 10.0, 10.0])


def test_k2_value_and_gradient_through_logp_only() -> None:
    logp = torch.tensor([-1.0, -0.5], requires_grad=True)
    teacher = torch.tensor([-3.0, -0.5], requires_grad=True)
    out = k2_kl(logp, teacher)
    assert_values(out, [0.5 * 2.0 ** 2, 0.0])
    out.sum().backward()
    assert_values(logp.grad, [2.0, 0.0])  # logp − teacher
    assert teacher.grad is None


def test_mismatch_ratio_counts_masked_tokens_only() -> None:
    teacher = torch.tensor([[1, 2, 3], [4, 5, 6]])
    tokens = torch.tensor([[1, 9, 3], [4, 9, 9]])
    assert mismatch_ratio(teacher, tokens, torch.tensor([[1, 1, 1], [1, 0, 0]])) == pytest.approx(0.25)


def test_mean_reverse_kl() -> None:
    logp = torch.tensor([[-1.0, -2.0, 0.0]])
    teacher = torch.tensor([[-2.0, -4.0, -100.0]])
    assert mean_reverse_kl(logp, teacher, torch.tensor([[1, 1, 0]])) == pytest.approx(1.5)


def test_regularizers_add_with_their_coefficients() -> None:
    # ρ = 1, A = 1 on two tokens: pg = −1. entropy bonus (2, 4) mean 3 → −0.1·3; CE (1, 3) mean 2 → +0.5·2;
    # k2 with teacher (−2, −3) vs logp −1: (0.5, 2) mean 1.25 → +0.2·1.25. Total −0.05.
    logp = torch.tensor([[-1.0, -1.0]], requires_grad=True)
    x = inputs(logp, torch.tensor([[-1.0, -1.0]]), torch.ones(1, 2), entropy=torch.tensor([[2.0, 4.0]]),
               teacher_logp=torch.tensor([[-2.0, -3.0]]), label_logp=torch.tensor([[-1.0, -3.0]]))
    loss, stats = loss_of(x, regularizers={"entropy": {"coef": 0.1}, "kdrl": {"coef": 0.2},
                                           "label_ce": {"coef": 0.5}})
    assert_values(loss, -1 - 0.3 + 1.0 + 0.25)
    assert stats["pg_loss"] == pytest.approx(-1.0) and stats["loss"] == pytest.approx(-0.05)
    assert stats["entropy"] == pytest.approx(3.0) and stats["reg/entropy"] == pytest.approx(-3.0)
    assert stats["reg/kdrl"] == pytest.approx(1.25)
    assert stats["reg/label_ce"] == pytest.approx(2.0)
    assert stats["clip_frac"] == 0.0 and stats["ratio_mean"] == pytest.approx(1.0)


def test_a_scheduled_coefficient_weights_its_regularizer_at_the_step() -> None:
    x = inputs(torch.zeros(1, 2), torch.zeros(1, 2), torch.zeros(1, 2), label_logp=torch.tensor([[-1.0, -3.0]]))
    loss, _ = loss_of(x, step=3, regularizers={"label_ce": {"coef": 0.5, "decay": 0.1}})
    assert_values(loss, (0.5 - 2 * 0.1) * 2.0)


def test_regularizer_aggregation_can_differ_from_pg() -> None:
    # pg: Dr.GRPO sums over the row / 4; entropy: token mean of (2, 4) = 3 (AMPO's code)
    x = inputs(torch.zeros(1, 2), torch.zeros(1, 2), torch.ones(1, 2), entropy=torch.tensor([[2.0, 4.0]]))
    loss, _ = policy_loss(x, AlgorithmConfig(agg_mode="seq-mean-token-sum-norm", regularizers={
        "entropy": {"coef": 0.1, "agg_mode": "token-mean"}}), 1, 4)
    assert_values(loss, -2 / 4 - 0.1 * 3)


def test_kl_term_uses_k3_token_mean() -> None:
    x = inputs(torch.tensor([[math.log(0.5), 0.0]]), torch.tensor([[math.log(0.5), 0.0]]), torch.zeros(1, 2),
               torch.tensor([[1, 0]]), ref_logp=torch.tensor([[math.log(0.25), 5.0]]))
    loss, stats = loss_of(x, regularizers={"kl": {"coef": 0.5}})
    assert stats["reg/kl"] == pytest.approx(0.5 + math.log(2) - 1, abs=1e-6)  # the padded token is ignored
    assert_values(loss, 0.5 * (0.5 + math.log(2) - 1))


# ---- the policy loss ---------------------------------------------------------------------------------------------
def test_own_samples_alone_are_the_clipped_surrogate_aggregated() -> None:
    torch.manual_seed(0)
    logp = torch.randn(3, 5, requires_grad=True)
    behaviour = logp.detach() + 0.3 * torch.randn(3, 5)
    adv = torch.randn(3, 1).expand(3, 5)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 0, 0, 0], [1, 1, 1, 0, 0]])
    loss, _ = loss_of(inputs(logp, behaviour, adv, mask), dual_clip=3.0, agg_mode="seq-mean-token-mean")
    direct, _ = clipped_surrogate(logp, behaviour, adv, MASK1, SurrogateParams(dual_clip=3.0))
    assert torch.equal(loss, aggregate(direct, mask, "seq-mean-token-mean"))


def test_each_kind_of_row_gets_its_own_surrogate() -> None:
    # one row of each kind, ρ = 1.5 everywhere, A = 1: policy clip → −1.2; teacher shaped γ 0.1 → −1.5/1.6;
    # hinted plain (configured) → −1.5
    x = inputs(torch.full((3, 1), math.log(1.5)), torch.zeros(3, 1), torch.ones(3, 1), kind=[POLICY, TEACHER, HINTED])
    loss, stats = loss_of(x, surrogate={"hinted": {"name": "plain"}})
    assert_values(loss, (-1.2 - 1.5 / 1.6 - 1.5) / 3)
    assert stats["clip_frac"] == 1.0 and stats["teacher_prob_mean"] == pytest.approx(1.5)  # per kind's own tokens


def test_plain_policy_surrogate_is_the_unclipped_ratio() -> None:
    x = inputs(logs(1.5), torch.zeros(1, 1), torch.ones(1, 1))
    assert_values(loss_of(x)[0], -1.2)
    loss, stats = loss_of(x, surrogate={"policy": {"name": "plain"}})
    assert_values(loss, -1.5)
    assert stats["clip_frac"] == 0.0


def test_clip_frac_and_ratio_mean_over_the_students_own_tokens() -> None:
    x = inputs(torch.log(torch.tensor([[1.5, 0.9, 0.5, 1.1], [0.01, 0.01, 0.01, 0.01]])), torch.zeros(2, 4),
               torch.tensor([[1.0, 1.0, -1.0, -1.0], [1.0] * 4]), kind=[POLICY, TEACHER])
    _, stats = loss_of(x)
    assert stats["clip_frac"] == pytest.approx(0.5)
    assert stats["ratio_mean"] == pytest.approx((1.5 + 0.9 + 0.5 + 1.1) / 4)


def test_registry_refuses_duplicates() -> None:
    with pytest.raises(ValueError, match="shaped"):
        SURROGATES.register("shaped")(clipped_surrogate)


@pytest.mark.parametrize("kind", [POLICY, TEACHER])
def test_one_sgd_step_moves_log_probs_with_the_advantage_sign(kind: int) -> None:
    # two rows with their own logits; row 0 samples token 1 with A = +1, row 1 samples token 2 with A = −1
    logits = torch.nn.Parameter(torch.zeros(2, 1, 4))
    tokens = torch.tensor([[1], [2]])

    def token_logp() -> torch.Tensor:
        return torch.log_softmax(logits, -1).gather(-1, tokens.unsqueeze(-1)).squeeze(-1)

    before = token_logp().detach()
    behaviour = torch.zeros(2, 1) if kind == TEACHER else before
    loss, _ = loss_of(inputs(token_logp(), behaviour, torch.tensor([[1.0], [-1.0]]), kind=kind))
    loss.backward()
    torch.optim.SGD([logits], lr=0.5).step()
    after = token_logp().detach()
    assert after[0, 0] > before[0, 0]
    assert after[1, 0] < before[1, 0]


# ---- value loss ---------------------------------------------------------------------------------------------------
def test_value_loss_clipping() -> None:
    # token 0: v=1, old=0.5, R=2, clip 0.2: (1−2)² = 1 vs (0.7−2)² = 1.69 → ½·1.69
    # token 1: v=old=2, R=0 → ½·4; token 2: v=1, old=0.5, R=0: 1 vs 0.49 → ½·1
    values = torch.tensor([[1.0, 2.0, 1.0, 9.0]])
    old = torch.tensor([[0.5, 2.0, 0.5, 0.0]])
    returns = torch.tensor([[2.0, 0.0, 0.0, 0.0]])
    mask = torch.tensor([[1, 1, 1, 0]])
    assert_values(value_loss(values, old, returns, mask, clip=0.2), (0.845 + 2.0 + 0.5) / 3)
    assert_values(value_loss(values, old, returns, mask, clip=None), (0.5 + 2.0 + 0.5) / 3)


@pytest.mark.parametrize("mode", ["token-mean", "seq-mean-token-mean", "seq-mean-token-sum",
                                  "seq-mean-token-sum-norm"])
def test_the_policy_gradient_term_splits_by_kind_of_token(mode: str) -> None:
    """grad_norm_by_kind's terms: one per kind present, adding up to pg_loss in every aggregation mode."""
    logp = torch.tensor([[-0.5, -1.0, -2.0], [-0.1, -0.3, -0.2], [-1.5, -0.7, -0.4]], requires_grad=True)
    behaviour = torch.tensor([[-0.6, -0.9, -2.0], [0.0, 0.0, 0.0], [-1.0, -1.0, -1.0]])
    adv = torch.tensor([[1.0, 1.0, 1.0], [0.5, 0.5, 0.5], [-1.0, -1.0, -1.0]])
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 1.0], [1.0, 0.0, 0.0]])
    x = inputs(logp, behaviour, adv, mask, kind=[POLICY, TEACHER, HINTED])
    algo = AlgorithmConfig(agg_mode=mode)
    parts = pg_loss_by_kind(x, algo, 3)
    assert set(parts) == {RowKind.POLICY, RowKind.TEACHER, RowKind.HINTED}
    _, stats = policy_loss(x, algo, 1, 3)
    assert float(sum(parts.values())) == pytest.approx(stats["pg_loss"], rel=1e-6)
    alone = pg_loss_by_kind(inputs(logp[:1], behaviour[:1], adv[:1], mask[:1]), algo, 3,
                            Denominators.of(mask, x.kind))
    assert set(alone) == {RowKind.POLICY}
    assert float(alone[RowKind.POLICY]) == pytest.approx(float(parts[RowKind.POLICY]))
