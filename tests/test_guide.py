"""Guide: the capability-gain analysis, PPO's critic and whitened GAE, and the Guide/PPO configs end to end."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from rich.console import Console
from typer.testing import CliRunner

from guidedrl.algorithms.advantages import ADVANTAGES, AdvantageInputs
from guidedrl.cli import app
from guidedrl.config import CriticConfig, TrainConfig
from guidedrl.eval.capability import capability_table, classify
from guidedrl.rollout.engine import Rollouts
from guidedrl.trainer.critic import Critic
from guidedrl.trainer.loop import Trainer
from guidedrl.yaml_config import load_config

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def test_classify_a_hand_built_before_after_table() -> None:
    k = 8
    assert classify((8, 6), (8, 8), k) == "already_solved"  # pass@1 0.75 before
    assert classify((8, 1), (8, 4), k) == "compressed"  # pass@8 > 0 before, pass@1 0.125 -> 0.5
    assert classify((8, 2), (8, 2), k) == "not_improved"
    assert classify((8, 0), (8, 3), k) == "capability_gain"  # pass@8 = 0 before, solved after
    assert classify((8, 0), (8, 0), k) == "unsolved"
    before = [{"prompt": p, "n": 8, "correct": c} for p, c in [("a", 6), ("b", 1), ("c", 0), ("d", 0), ("e", 2)]]
    after = [{"prompt": p, "n": 8, "correct": c} for p, c in [("e", 1), ("d", 0), ("c", 5), ("b", 3), ("a", 7)]]
    table = capability_table(before, after, k)
    assert table["counts"] == {"already_solved": 1, "compressed": 1, "capability_gain": 1, "not_improved": 1,
                               "unsolved": 1}
    assert table["shares"]["capability_gain"] == pytest.approx(0.2)


def test_gae_advantage_is_whitened_over_response_tokens() -> None:
    rewards = torch.tensor([1.0, 0.0])
    values = torch.tensor([[0.5, 0.5, 0.0], [0.2, 0.0, 0.0]])
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    # γ = λ = 1: advantage of each token = R − V(t) → row 0: [0.5, 0.5], row 1: [−0.2]
    raw = torch.tensor([0.5, 0.5, -0.2])
    expected = (raw - raw.mean()) / raw.std()
    out = ADVANTAGES["gae"](AdvantageInputs(rewards=rewards, response_mask=mask, group_index=torch.tensor([0, 0]),
                                            values=values), 0.0)
    torch.testing.assert_close(out[mask.bool()], expected)
    assert out[~mask.bool()].abs().sum() == 0


def test_critic_fits_the_returns_of_a_fixed_batch(micro_world: Path) -> None:
    torch.manual_seed(0)
    critic = Critic(str(micro_world / "models" / "student"), CriticConfig(lr=3e-3, value_clip=None))
    rollouts = Rollouts.from_token_lists([[1, 10, 11], [1, 12]], [[20, 21, 2], [22, 2]], pad_id=0, eos_id=2)
    rewards = torch.tensor([1.0, 0.0])
    assert critic.values(rollouts).abs().sum() == 0  # the head starts at zero
    losses = [critic.fit(rollouts, rewards, critic.values(rollouts), 8)["critic/value_loss"] for _ in range(30)]
    assert losses[-1] < 0.2 * losses[0], losses
    values = critic.values(rollouts)
    assert values[0, :3].mean() > values[1, :2].mean() + 0.5  # the rewarded row is valued higher


def _micro(config: str, world: Path, out: Path, steps: int, *extra: str) -> TrainConfig:
    return load_config(CONFIGS / config, TrainConfig, [
        f"world={world}", f"output_dir={out}", f"steps={steps}", "save_every=0", "rollout.prompts_per_step=8",
        "rollout.max_new_tokens=32", "optim.micro_batch_size=64", "eval.samples=2", "eval.ks=[1,2]",
        "eval.max_problems=8", *extra])


@pytest.mark.parametrize("config", ["guide_grpo.yaml", "guide_ppo.yaml", "ppo.yaml"])
def test_guide_and_ppo_configs_train(config: str, micro_world: Path, tmp_path: Path) -> None:
    trainer = Trainer(_micro(config, micro_world, tmp_path / "run", 2), console=Console(quiet=True))
    metrics = [trainer.train_step() for _ in range(2)]
    if "guide" in config:
        assert all("hint/rate" in m for m in metrics)
        assert any(m.get("hint/rate", 0) > 0 for m in metrics)  # the micro student fails some groups
    if "ppo" in config:
        assert all("critic/value_loss" in m for m in metrics)


def test_analyze_reads_a_finished_run(micro_world: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    Trainer(_micro("guide_grpo.yaml", micro_world, run, 1), console=Console(quiet=True)).train()
    result = CliRunner().invoke(app, ["analyze", str(run)])
    assert result.exit_code == 0, result.output
    analysis = json.loads((run / "analysis.json").read_text())
    assert set(analysis) == {"test_id", "test_ood"}
    assert analysis["test_id"]["problems_compared"] == 8
    assert sum(analysis["test_id"]["counts"].values()) == 8


def test_ppo_resume_restores_the_critic(micro_world: Path, tmp_path: Path) -> None:
    cfg = _micro("ppo.yaml", micro_world, tmp_path / "run", 2)
    first = Trainer(cfg, console=Console(quiet=True))
    first.train_step()
    first.save()
    resumed = Trainer(cfg, resume=True, console=Console(quiet=True))
    for a, b in zip(first.critic.state_dict().values(), resumed.critic.state_dict().values()):
        torch.testing.assert_close(a, b)
