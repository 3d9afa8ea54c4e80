"""GSPO, CISPO, SAPO and logp, the built-in surrogates beside PPO's clip: values and gradients by hand, and GSPO in a
real step of the unchanged loop."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from rich.console import Console

from guidedrl.algorithms.surrogates import PREPARES, SurrogateParams, mini_batch_hook, prepares
from guidedrl.config import SurrogateSpec, TrainConfig
from guidedrl.registry import SURROGATES
from guidedrl.trainer.loop import Trainer
from guidedrl.yaml_config import load_config
from scripted import ScriptedEngine, build_tiny_world

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
ROWS = [{"prompt": "2+3\n", "answer": "5"}, {"prompt": "4*2\n", "answer": "8"}]
SCRIPT = {"2+3\n": ["\\boxed{5}", "\\boxed{4}", "2+3=5\n\\boxed{5}", "no"], "4*2\n": ["\\boxed{8}"] * 4}


def test_gspo_carries_the_rows_geometric_mean_ratio_and_clips_it() -> None:
    logp = torch.tensor([[-1.0, -2.0, 0.0], [-0.5, -0.5, -0.5]], requires_grad=True)
    old = torch.tensor([[-1.2, -1.6, 0.0], [-0.5, -0.5, -0.5]])
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 1.0]])
    adv = torch.tensor([[1.0, 1.0, 1.0], [-1.0, -1.0, -1.0]])
    loss, clipped = SURROGATES.get("gspo")(logp, old, adv, mask, SurrogateParams(eps_low=0.1, eps_high=0.1))
    s0 = math.exp((0.2 - 0.4) / 2)  # row 0: mean log-ratio −0.1 → s ≈ 0.905, inside 1 ± 0.1: unclipped
    assert loss[0, :2].tolist() == pytest.approx([-s0, -s0]) and loss[1].tolist() == pytest.approx([1.0] * 3)
    assert not clipped.any()
    loss[0, 0].backward()  # GSPO-token: the gradient flows through the token's own log-prob, scaled by s
    assert logp.grad[0].tolist() == pytest.approx([-s0, 0.0, 0.0])
    far = torch.tensor([[0.0, 0.0, 0.0], [-0.5, -0.5, -0.5]])  # s = e^{1.5} in both rows
    loss, clipped = SURROGATES.get("gspo")(far + 1.5, far, adv, mask, SurrogateParams(eps_low=0.1, eps_high=0.1))
    # A > 0: min(s·A, 1.1·A) is the clipped 1.1; A < 0: min(−s, −1.1) is −s, the unclipped one
    assert loss[0, 0].item() == pytest.approx(-1.1) and loss[1, 0].item() == pytest.approx(math.exp(1.5))
    assert clipped[0, :2].all() and not clipped[1].any()


def test_cispo_weights_every_tokens_log_prob_by_its_clipped_detached_ratio() -> None:
    logp = torch.tensor([[-1.0, -0.1, -2.0]], requires_grad=True)
    old = torch.tensor([[-1.0, -1.1, -1.5]])  # ratios 1, e ≈ 2.72 (clipped to 1.2), e^{−0.5} ≈ 0.61 (to 0.8)
    adv = torch.tensor([[2.0, 2.0, -1.0]])
    loss, clipped = SURROGATES.get("cispo")(logp, old, adv, torch.ones(1, 3), SurrogateParams(0.2, 0.2))
    weights = [1.0, 1.2, 0.8]
    assert loss[0].tolist() == pytest.approx([-w * a * lp for w, a, lp in zip(weights, [2.0, 2.0, -1.0],
                                                                              [-1.0, -0.1, -2.0])])
    assert clipped[0].tolist() == [False, True, True]
    loss.sum().backward()  # every token keeps a gradient −w·A (PPO's clip would give the clipped ones none)
    assert logp.grad[0].tolist() == pytest.approx([-2.0, -2.4, 0.8])


def test_logp_is_the_advantage_weighted_log_likelihood_whatever_the_ratio() -> None:
    logp = torch.tensor([[-0.5, -3.0, -1.0]], requires_grad=True)
    old = torch.tensor([[0.0, 0.0, -2.0]])  # teacher rows (behaviour 0) and a sampled one: no ratio enters
    adv = torch.tensor([[0.7, 0.7, -1.0]])
    loss, clipped = SURROGATES.get("logp")(logp, old, adv, torch.ones(1, 3), SurrogateParams())
    assert loss[0].tolist() == pytest.approx([-0.7 * -0.5, -0.7 * -3.0, 1.0 * -1.0]) and not clipped.any()
    loss.sum().backward()  # each token's gradient is −A, as SFT's (−1) times A, at any π_θ
    assert logp.grad[0].tolist() == pytest.approx([-0.7, -0.7, 1.0])
    shaped, _ = SURROGATES.get("shaped")(logp, old, adv, torch.ones(1, 3), SurrogateParams(gamma=0.1))
    pi = math.exp(-0.5)  # shaped's gradient on the first teacher token: −A·γπ/(π+γ)², about a sixth of logp's
    assert torch.autograd.grad(shaped[0, 0], logp)[0][0, 0].item() == pytest.approx(-0.7 * 0.1 * pi / (pi + 0.1) ** 2)


def test_sapo_is_a_soft_gate_with_slope_one_at_ratio_one() -> None:
    logp = torch.tensor([[0.0, math.log(1.5), math.log(0.5)]], requires_grad=True)
    adv = torch.tensor([[1.0, 1.0, -2.0]])
    p = SurrogateParams(tau_pos=1.0, tau_neg=2.0)
    loss, clipped = SURROGATES.get("sapo")(logp, torch.zeros(1, 3), adv, torch.ones(1, 3), p)
    sig = lambda z: 1 / (1 + math.exp(-z))  # noqa: E731
    expected = [-(4 / 1) * sig(0.0) * 1, -(4 / 1) * sig(0.5) * 1, -(4 / 2) * sig(2 * -0.5) * -2]
    assert loss[0].tolist() == pytest.approx(expected) and not clipped.any()
    loss[0, 0].backward()  # d/dlogp of −(4/τ)σ(τ(ρ−1))·A at ρ = 1: −A·ρ·(4/τ)·τ·σ'(0) = −A
    assert logp.grad[0, 0].item() == pytest.approx(-1.0)


def test_gspo_in_a_real_step_of_the_unchanged_loop(tmp_path: Path) -> None:
    world = build_tiny_world(tmp_path / "w", ROWS)
    sets = [f"world={world}", f"output_dir={tmp_path / 'run'}", "steps=1", "rollout.prompts_per_step=2",
            "rollout.group_size=4", "algorithm.surrogate.policy.name=gspo", "algorithm.eps_low=0.0003",
            "algorithm.eps_high=0.0004", "algorithm.agg_mode=seq-mean-token-mean"]
    cfg = load_config(CONFIGS / "grpo.yaml", TrainConfig, sets)
    # behaviour log-probs 1e-4 below the policy's on every token: each row's ratio is e^1e-4, inside 1 ± 4e-4
    trainer = Trainer(cfg, console=Console(quiet=True),
                      engine=lambda p, t, *_: ScriptedEngine(p, t, SCRIPT, logp_offset=-1e-4))
    m = trainer.train_step()
    assert m["clip_frac"] == 0.0 and m["pg_loss"] == pytest.approx(0.0, abs=1e-7)  # unclipped: Σ A_i = 0
    trainer = Trainer(cfg.model_copy(update={"output_dir": str(tmp_path / "run2")}), console=Console(quiet=True),
                      engine=lambda p, t, *_: ScriptedEngine(p, t, SCRIPT, logp_offset=-0.01))
    m = trainer.train_step()  # e^0.01 > 1 + 4e-4: rows with A > 0 are clipped, rows with A < 0 are not
    a = 0.5 / (math.sqrt(1 / 3) + 1e-6)  # GRPO advantages ±a in the first group, 0 in the second
    # seq-mean-token-mean: each row's mean is its −A_i·s_i, then the mean over the 8 rows
    assert m["pg_loss"] == pytest.approx((-2 * a * (1 + 4e-4) + 2 * a * math.exp(0.01)) / 8, rel=1e-4)
    assert m["clip_frac"] == pytest.approx(sum(len(t) + 1 for t in SCRIPT["2+3\n"][::2]) /
                                           sum(len(t) + 1 for ts in SCRIPT.values() for t in ts))


def test_a_surrogate_takes_its_mini_batch_parameters_through_its_hook() -> None:
    """Guide's quantile γ is the shaped surrogate's hook: asked for only when gamma_quantile is set; a user's
    surrogate registers its own."""
    ratios = torch.tensor([0.4, 1.0, 2.0])
    assert mini_batch_hook(SurrogateSpec(name="shaped")) is None
    assert mini_batch_hook(SurrogateSpec(name="clip", gamma_quantile=0.9)) is None
    hook = mini_batch_hook(SurrogateSpec(name="shaped", gamma_quantile=0.5))
    assert set(hook(ratios)) == {"gamma"} and float(hook(ratios)["gamma"]) == pytest.approx(1.0)

    @prepares("clip")
    def widening(spec: SurrogateSpec):  # a user's: clip range from the mini-batch's largest ratio
        return lambda r: {"eps_high": r.max() - 1}
    try:
        assert float(mini_batch_hook(SurrogateSpec(name="clip"))(ratios)["eps_high"]) == pytest.approx(1.0)
    finally:
        del PREPARES["clip"]
