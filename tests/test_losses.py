"""Policy losses, shaping, regularizers and aggregation against values computed by hand."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch

from guidedrl.algorithms.losses import (
    POLICY_LOSSES, LossInputs, LossSettings, aggregate, clipped_surrogate, k2_kl, k3_kl, label_ce,
    mean_reverse_kl, mismatch_ratio, percentile_gamma, ratio_of, register_policy_loss, shape, value_loss)


def assert_values(t: torch.Tensor, expected: list | float, atol: float = 1e-6) -> None:
    """``t`` equals the hand-written (nested) list or number up to ``atol``."""
    torch.testing.assert_close(t.detach().float(), torch.tensor(expected, dtype=torch.float32), atol=atol, rtol=0)


def logs(*probs: float) -> torch.Tensor:
    """A 1×n row of log-probabilities that carries grad."""
    return torch.tensor([[math.log(p) for p in probs]], requires_grad=True)


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


def test_aggregate_unknown_mode_names_it() -> None:
    with pytest.raises(ValueError, match="seq-sum"):
        aggregate(LOSS_MAT, AGG_MASK, "seq-sum")


# ---- clipped surrogate ---------------------------------------------------------------------------------------
def test_clipped_surrogate_both_sides() -> None:
    # ε = 0.2. A>0, ρ=1.5 > 1.2: max(−1.5, −1.2) = −1.2 (clipped); A>0, ρ=0.9: −0.9;
    # A<0, ρ=0.5 < 0.8: max(0.5, 0.8) = 0.8 (clipped); A<0, ρ=1.1: 1.1.
    logp = logs(1.5, 0.9, 0.5, 1.1)
    adv = torch.tensor([[1.0, 1.0, -1.0, -1.0]])
    loss, clipped = clipped_surrogate(logp, torch.zeros(1, 4), adv, 0.2, 0.2)
    assert_values(loss, [[-1.2, -0.9, 0.8, 1.1]])
    assert clipped.tolist() == [[True, False, True, False]]
    loss.sum().backward()
    # d(−Aρ)/dlogp = −Aρ where unclipped; 0 where the constant clipped branch is active
    assert_values(logp.grad, [[0.0, -0.9, 0.0, 1.1]])


def test_clipped_surrogate_asymmetric_clip_higher() -> None:
    loss, clipped = clipped_surrogate(logs(1.25, 1.3, 0.75), torch.zeros(1, 3), torch.ones(1, 3), 0.2, 0.28)
    assert_values(loss, [[-1.25, -1.28, -0.75]])  # ρ=0.75 < 0.8 with A>0 keeps the unclipped −0.75
    assert clipped.tolist() == [[False, True, False]]


def test_dual_clip_only_for_negative_advantages() -> None:
    # c = 3. A=−1, ρ=5: max(5, 1.2) = 5 → min(5, 3) = 3. A=+1, ρ=5: −1.2 (no dual clip).
    # A=−1, ρ=2: max(2, 1.2) = 2 < 3 stays. A=−2, ρ=4: max(8, 2.4) = 8 → min(8, 6) = 6.
    logp = logs(5.0, 5.0, 2.0, 4.0)
    adv = torch.tensor([[-1.0, 1.0, -1.0, -2.0]])
    loss, clipped = clipped_surrogate(logp, torch.zeros(1, 4), adv, 0.2, 0.2, dual_clip=3.0)
    assert_values(loss, [[3.0, -1.2, 2.0, 6.0]], atol=1e-5)
    assert clipped.tolist() == [[True, True, False, True]]


def test_log_ratio_clamped_before_exp() -> None:
    assert_values(ratio_of(torch.tensor([50.0, -50.0]), torch.zeros(2)), [math.exp(20), math.exp(-20)], atol=1.0)
    loss, _ = clipped_surrogate(torch.tensor([[80.0]]), torch.zeros(1, 1), -torch.ones(1, 1), 0.2, 0.2)
    assert torch.isfinite(loss).all()


# ---- shaping ---------------------------------------------------------------------------------------------------
def test_shape_value() -> None:
    assert_values(shape(torch.tensor([0.3, 1.0]), 0.1), [0.3 / 0.4, 1.0 / 1.1])


def test_percentile_gamma_ignores_padding_and_is_detached() -> None:
    ratio = torch.tensor([[1.0, 2.0, 100.0], [4.0, 50.0, 7.0]], requires_grad=True)
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    gamma = percentile_gamma(ratio, mask, q=0.9)
    # masked values sorted (1, 2, 4); position (3 − 1)·0.9 = 1.8 → 2 + 0.8·(4 − 2) = 3.6
    assert_values(gamma, 3.6, atol=1e-5)
    assert not gamma.requires_grad


def test_percentile_gamma_floor() -> None:
    assert_values(percentile_gamma(torch.full((1, 3), 1e-7), torch.ones(1, 3)), 1e-4, atol=1e-9)
    assert_values(percentile_gamma(torch.ones(1, 3), torch.zeros(1, 3)), 1e-4, atol=1e-9)


def test_off_policy_shaped_loss_value_and_gradient() -> None:
    # teacher tokens, behaviour_logp = 0 so ρ = p = π_θ: loss per token −A·p/(p+γ), γ = 0.1
    p, adv, gamma = [0.3, 0.05], [2.0, -1.0], 0.1
    logp = logs(*p)
    x = LossInputs(logp=logp, behaviour_logp=torch.zeros(1, 2), advantages=torch.tensor([adv]),
                   response_mask=torch.ones(1, 2), off_policy_mask=torch.ones(1, 2, dtype=torch.bool))
    loss, stats = POLICY_LOSSES["mixed"](x, LossSettings(off_policy_gamma=gamma))
    per_token = [-a * q / (q + gamma) for q, a in zip(p, adv)]  # −1.5, +0.3333
    assert_values(loss, sum(per_token) / 2)
    loss.backward()
    # d/dlogp of −A·p/(p+γ) = −A·γ·p/(p+γ)², halved by the token mean
    grad = [-a * gamma * q / (q + gamma) ** 2 / 2 for q, a in zip(p, adv)]
    assert_values(logp.grad, [grad])
    assert stats["off_policy_prob_mean"] == pytest.approx(sum(p) / 2)
    assert "clip_frac" not in stats  # no on-policy token


def test_off_policy_tokens_are_not_clipped() -> None:
    # with known teacher log-probs the ratio can exceed 1 + ε: shaping applies, no clip
    x = LossInputs(logp=logs(0.9), behaviour_logp=torch.tensor([[math.log(0.3)]]), advantages=torch.ones(1, 1),
                   response_mask=torch.ones(1, 1), off_policy_mask=torch.ones(1, 1, dtype=torch.bool))
    loss, _ = POLICY_LOSSES["mixed"](x, LossSettings())
    assert_values(loss, -3.0 / 3.1)


# ---- hinted rows (Guide) ----------------------------------------------------------------------------------------
def hinted_inputs(adv: float) -> LossInputs:
    """One hinted token: hint-free π_θ = 0.2, hinted behaviour π_old = 0.5, so ρ = 0.4 (not 0.2)."""
    return LossInputs(logp=logs(0.2), behaviour_logp=torch.tensor([[math.log(0.5)]]),
                      advantages=torch.tensor([[adv]]), response_mask=torch.ones(1, 1),
                      hint_mask=torch.ones(1, 1, dtype=torch.bool))


def test_hinted_ratio_uses_behaviour_logp_constant_gamma() -> None:
    loss, stats = POLICY_LOSSES["mixed"](hinted_inputs(1.0), LossSettings(hint_shaping="constant", hint_gamma=0.1))
    assert_values(loss, -0.4 / 0.5)  # −A·ρ/(ρ+γ) with ρ = 0.2 / 0.5
    assert stats["hint_ratio_mean"] == pytest.approx(0.4)


def test_hinted_clip_option() -> None:
    clip = LossSettings(hint_shaping="clip")
    assert_values(POLICY_LOSSES["mixed"](hinted_inputs(1.0), clip)[0], -0.4)  # A>0, ρ<0.8: max(−0.4, −0.8)
    assert_values(POLICY_LOSSES["mixed"](hinted_inputs(-1.0), clip)[0], 0.8)  # A<0, ρ<0.8: max(0.4, 0.8)


def test_hinted_percentile_gamma_over_hinted_tokens_only() -> None:
    # row 0 on-policy (ρ = 1, A = 0.5, two tokens + padding); row 1 hinted: ρ = 0.4, 1.0 and a padded ρ = e³
    logp = torch.tensor([[-1.0, -2.0, 0.0], [math.log(0.2), math.log(0.5), 0.0]], requires_grad=True)
    behaviour = torch.tensor([[-1.0, -2.0, 0.0], [math.log(0.5), math.log(0.5), -3.0]])
    mask = torch.tensor([[1, 1, 0], [1, 1, 0]])
    hint = torch.tensor([[False, False, False], [True, True, True]])
    x = LossInputs(logp=logp, behaviour_logp=behaviour, advantages=torch.tensor([[0.5] * 3, [1.0] * 3]),
                   response_mask=mask, hint_mask=hint)
    loss, stats = POLICY_LOSSES["mixed"](x, LossSettings(hint_percentile=0.9))
    gamma = 0.4 + 0.9 * (1.0 - 0.4)  # q=0.9 of (0.4, 1.0) = 0.94; the padded e³ would change it
    assert stats["hint_gamma"] == pytest.approx(gamma, abs=1e-6)
    assert_values(loss, (-0.5 - 0.5 - 0.4 / (0.4 + gamma) - 1.0 / (1.0 + gamma)) / 4)


def test_unknown_hint_shaping_is_an_error() -> None:
    with pytest.raises(ValueError, match="power"):
        POLICY_LOSSES["mixed"](hinted_inputs(1.0), LossSettings(hint_shaping="power"))


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


def test_label_ce() -> None:
    assert_values(label_ce(torch.tensor([-0.1, -2.0])), [0.1, 2.0])


def test_mismatch_ratio_counts_masked_tokens_only() -> None:
    teacher = torch.tensor([[1, 2, 3], [4, 5, 6]])
    tokens = torch.tensor([[1, 9, 3], [4, 9, 9]])
    assert mismatch_ratio(teacher, tokens, torch.tensor([[1, 1, 1], [1, 0, 0]])) == pytest.approx(0.25)


def test_mean_reverse_kl() -> None:
    logp = torch.tensor([[-1.0, -2.0, 0.0]])
    teacher = torch.tensor([[-2.0, -4.0, -100.0]])
    assert mean_reverse_kl(logp, teacher, torch.tensor([[1, 1, 0]])) == pytest.approx(1.5)


def test_regularizers_add_with_their_coefficients() -> None:
    # ρ = 1, A = 1 on two tokens: pg = −1. entropy (2, 4) mean 3 → −0.1·3; CE (1, 3) mean 2 → +0.5·2;
    # k2 with teacher (−2, −3) vs logp −1: (0.5, 2) mean 1.25 → +0.2·1.25. Total −0.05.
    logp = torch.tensor([[-1.0, -1.0]], requires_grad=True)
    x = LossInputs(logp=logp, behaviour_logp=torch.tensor([[-1.0, -1.0]]), advantages=torch.ones(1, 2),
                   response_mask=torch.ones(1, 2), entropy=torch.tensor([[2.0, 4.0]]),
                   teacher_logp=torch.tensor([[-2.0, -3.0]]), label_logp=torch.tensor([[-1.0, -3.0]]))
    s = LossSettings(entropy_coef=0.1, kdrl_coef=0.2, label_ce_coef=0.5)
    loss, stats = POLICY_LOSSES["vanilla"](x, s)
    assert_values(loss, -1 - 0.3 + 1.0 + 0.25)
    assert stats["pg_loss"] == pytest.approx(-1.0)
    assert stats["entropy"] == pytest.approx(3.0)
    assert stats["kdrl"] == pytest.approx(1.25)
    assert stats["label_ce"] == pytest.approx(2.0)
    assert stats["clip_frac"] == 0.0 and stats["ratio_mean"] == pytest.approx(1.0)


def test_regularizer_aggregation_can_differ_from_pg() -> None:
    # pg: Dr.GRPO sums over the row / 4; entropy: token mean of (2, 4) = 3
    x = LossInputs(logp=torch.zeros(1, 2), behaviour_logp=torch.zeros(1, 2), advantages=torch.ones(1, 2),
                   response_mask=torch.ones(1, 2), entropy=torch.tensor([[2.0, 4.0]]))
    s = LossSettings(agg_mode="seq-mean-token-sum-norm", norm_length=4, entropy_coef=0.1, reg_agg_mode="token-mean")
    loss, _ = POLICY_LOSSES["mixed"](x, s)
    assert_values(loss, -2 / 4 - 0.1 * 3)


@pytest.mark.parametrize(("coef", "field"), [("kl_coef", "ref_logp"), ("entropy_coef", "entropy"),
                                             ("kdrl_coef", "teacher_logp"), ("label_ce_coef", "label_logp")])
def test_missing_regularizer_input_is_an_error(coef: str, field: str) -> None:
    x = LossInputs(logp=torch.zeros(1, 2), behaviour_logp=torch.zeros(1, 2), advantages=torch.ones(1, 2),
                   response_mask=torch.ones(1, 2))
    with pytest.raises(ValueError, match=field):
        POLICY_LOSSES["mixed"](x, replace(LossSettings(), **{coef: 0.1}))


def test_kl_term_uses_k3_token_mean() -> None:
    x = LossInputs(logp=torch.tensor([[math.log(0.5), 0.0]]), behaviour_logp=torch.tensor([[math.log(0.5), 0.0]]),
                   advantages=torch.zeros(1, 2), response_mask=torch.tensor([[1, 0]]),
                   ref_logp=torch.tensor([[math.log(0.25), 5.0]]))
    loss, stats = POLICY_LOSSES["vanilla"](x, LossSettings(kl_coef=0.5))
    assert stats["kl"] == pytest.approx(0.5 + math.log(2) - 1, abs=1e-6)  # the padded token is ignored
    assert_values(loss, 0.5 * (0.5 + math.log(2) - 1))


# ---- registered losses -----------------------------------------------------------------------------------------
def test_mixed_reduces_to_vanilla_without_masks() -> None:
    torch.manual_seed(0)
    logp = torch.randn(3, 5, requires_grad=True)
    behaviour = logp.detach() + 0.3 * torch.randn(3, 5)
    adv = torch.randn(3, 1).expand(3, 5)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 0, 0, 0], [1, 1, 1, 0, 0]])
    s = LossSettings(dual_clip=3.0, agg_mode="seq-mean-token-mean")
    base = LossInputs(logp=logp, behaviour_logp=behaviour, advantages=adv, response_mask=mask)
    none_set = torch.zeros(3, 5, dtype=torch.bool)
    vanilla_loss, vanilla_stats = POLICY_LOSSES["vanilla"](base, s)
    mixed_loss, mixed_stats = POLICY_LOSSES["mixed"](replace(base, off_policy_mask=none_set, hint_mask=none_set), s)
    assert torch.equal(vanilla_loss, mixed_loss) and vanilla_stats == mixed_stats
    direct, _ = clipped_surrogate(logp, behaviour, adv, 0.2, 0.2, 3.0)
    assert torch.equal(vanilla_loss, aggregate(direct, mask, "seq-mean-token-mean"))


def test_vanilla_refuses_teacher_and_hinted_tokens() -> None:
    x = LossInputs(logp=torch.zeros(1, 2), behaviour_logp=torch.zeros(1, 2), advantages=torch.ones(1, 2),
                   response_mask=torch.ones(1, 2), off_policy_mask=torch.tensor([[True, False]]))
    with pytest.raises(ValueError, match="off_policy_mask"):
        POLICY_LOSSES["vanilla"](x, LossSettings())
    with pytest.raises(ValueError, match="hint_mask"):
        POLICY_LOSSES["vanilla"](replace(x, off_policy_mask=None, hint_mask=torch.tensor([[False, True]])),
                                 LossSettings())


def test_on_policy_clip_off_is_plain_ratio() -> None:
    x = LossInputs(logp=logs(1.5), behaviour_logp=torch.zeros(1, 1), advantages=torch.ones(1, 1),
                   response_mask=torch.ones(1, 1))
    assert_values(POLICY_LOSSES["mixed"](x, LossSettings())[0], -1.2)
    loss, stats = POLICY_LOSSES["mixed"](x, LossSettings(on_policy_clip=False))
    assert_values(loss, -1.5)
    assert stats["clip_frac"] == 0.0


def test_clip_frac_over_on_policy_tokens() -> None:
    x = LossInputs(logp=logs(1.5, 0.9, 0.5, 1.1, 0.01), behaviour_logp=torch.zeros(1, 5),
                   advantages=torch.tensor([[1.0, 1.0, -1.0, -1.0, 1.0]]), response_mask=torch.ones(1, 5),
                   off_policy_mask=torch.tensor([[False, False, False, False, True]]))
    _, stats = POLICY_LOSSES["mixed"](x, LossSettings())
    assert stats["clip_frac"] == pytest.approx(0.5)
    assert stats["ratio_mean"] == pytest.approx((1.5 + 0.9 + 0.5 + 1.1) / 4)


def test_registry_refuses_duplicates() -> None:
    with pytest.raises(ValueError, match="mixed"):
        register_policy_loss("mixed")(POLICY_LOSSES["mixed"])


@pytest.mark.parametrize(("loss_name", "teacher"), [("vanilla", False), ("mixed", True)])
def test_one_sgd_step_moves_log_probs_with_the_advantage_sign(loss_name: str, teacher: bool) -> None:
    # two rows with their own logits; row 0 samples token 1 with A = +1, row 1 samples token 2 with A = −1
    logits = torch.nn.Parameter(torch.zeros(2, 1, 4))
    tokens = torch.tensor([[1], [2]])

    def token_logp() -> torch.Tensor:
        return torch.log_softmax(logits, -1).gather(-1, tokens.unsqueeze(-1)).squeeze(-1)

    before = token_logp().detach()
    behaviour = torch.zeros(2, 1) if teacher else before
    off = torch.ones(2, 1, dtype=torch.bool) if teacher else None
    x = LossInputs(logp=token_logp(), behaviour_logp=behaviour, advantages=torch.tensor([[1.0], [-1.0]]),
                   response_mask=torch.ones(2, 1), off_policy_mask=off)
    loss, _ = POLICY_LOSSES[loss_name](x, LossSettings())
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
