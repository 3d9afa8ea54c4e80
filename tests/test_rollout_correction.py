"""Rollout correction's weights by hand (token and sequence level, truncate and mask), and how they enter the
policy loss. The step's use of them (π_old from which forward, the metrics) is in test_step_mechanics.py."""

from __future__ import annotations

import math

import pytest
import torch

from guidedrl.algorithms.losses import LossInputs, policy_loss
from guidedrl.algorithms.rollout_correction import rollout_weights
from guidedrl.config import AlgorithmConfig
from guidedrl.rows import RowKind

E = math.e
OLD = torch.tensor([[0.0, -1.0, -2.0], [-0.5, -0.5, 0.0]])
SAMPLER = torch.tensor([[-1.0, -1.0, -0.5], [0.0, -2.0, 0.0]])
TOKENS = torch.tensor([[True, True, True], [True, True, False]])
# log π_old − log π_sampler: row 0 [1, 0, −1.5] (sum −0.5); row 1 [−0.5, 1.5] (sum 1.0), its last position not a token


@pytest.mark.parametrize(("level", "mode", "weights", "masked"), [
    ("token", "truncate", [[2.0, 1.0, E ** -1.5], [E ** -0.5, 2.0, 1.0]], [[0, 0, 0], [0, 0, 0]]),
    ("token", "mask", [[0.0, 1.0, E ** -1.5], [E ** -0.5, 0.0, 1.0]], [[1, 0, 0], [0, 1, 0]]),
    ("sequence", "truncate", [[E ** -0.5] * 3, [2.0, 2.0, 1.0]], [[0, 0, 0], [0, 0, 0]]),
    ("sequence", "mask", [[E ** -0.5] * 3, [0.0, 0.0, 1.0]], [[0, 0, 0], [1, 1, 0]]),
])
def test_weights_by_hand(level: str, mode: str, weights: list, masked: list) -> None:
    w, m = rollout_weights(OLD, SAMPLER, TOKENS, level, mode, threshold=2.0)
    torch.testing.assert_close(w, torch.tensor(weights))
    assert m.tolist() == [[bool(v) for v in row] for row in masked]


def test_weights_carry_no_gradient() -> None:
    old = OLD.clone().requires_grad_()
    assert not rollout_weights(old, SAMPLER, TOKENS, "token", "truncate", 2.0)[0].requires_grad


def test_the_weights_multiply_the_surrogate_token_losses_and_are_reported() -> None:
    """Ratio 1 (logp = behaviour) and the clip surrogate: each token's loss is −w·A; token-mean over 5 tokens."""
    adv = torch.tensor([[1.0, 2.0, -1.0], [0.5, 3.0, 0.0]])
    weight, masked = rollout_weights(OLD, SAMPLER, TOKENS, "token", "mask", 2.0)
    logp = torch.zeros(2, 3, requires_grad=True)
    x = LossInputs(logp=logp, behaviour_logp=torch.zeros(2, 3), advantages=adv, response_mask=TOKENS.float(),
                   kind=torch.tensor([RowKind.POLICY, RowKind.POLICY]), rollout_weight=weight, rollout_masked=masked)
    loss, stats = policy_loss(x, AlgorithmConfig(), step=1, norm_length=3)
    expected = -(0 * 1 + 1 * 2 + E ** -1.5 * -1 + E ** -0.5 * 0.5 + 0 * 3) / 5
    assert float(loss.detach()) == pytest.approx(expected)
    assert stats["rollout_correction/weight_mean"] == pytest.approx((1 + E ** -1.5 + E ** -0.5) / 5)
    assert stats["rollout_correction/masked_frac"] == pytest.approx(2 / 5)
    loss.backward()
    torch.testing.assert_close(logp.grad, -weight * adv * TOKENS / 5)


def test_unknown_level_or_mode_is_refused() -> None:
    with pytest.raises(ValueError, match="rollout correction"):
        rollout_weights(OLD, SAMPLER, TOKENS, "row", "truncate", 2.0)
