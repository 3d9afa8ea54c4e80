"""Guide's lens and PPO's pieces: the capability-gain analysis, whitened GAE, the critic, `guidedrl analyze`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from rich.console import Console
from typer.testing import CliRunner

from guidedrl.algorithms.advantages import AdvantageInputs, gae
from guidedrl.cli import app
from guidedrl.config import CriticConfig, TrainConfig
from guidedrl.eval.capability import capability_table, classify
from guidedrl.registry import ADVANTAGES
from guidedrl.rollout.engine import Rollouts
from guidedrl.trainer.critic import Critic
from guidedrl.trainer.loop import Trainer
from guidedrl.yaml_config import load_config
from scripted import ScriptedEngine, build_tiny_world

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
    _, returns = gae(rewards, values, mask)  # the critic's stage computes them once per step
    out = ADVANTAGES.get("gae")(AdvantageInputs(rewards=rewards, response_mask=mask, group_index=torch.tensor([0, 0]),
                                            values=values, returns=returns), 0.0)
    torch.testing.assert_close(out[mask.bool()], expected)
    assert out[~mask.bool()].abs().sum() == 0


ROWS = [{"prompt": "2+3\n", "answer": "5", "hint": "first 2+3=5"}, {"prompt": "4*2\n", "answer": "8", "hint": "x"}]
SCRIPT = {"2+3\n": ["\\boxed{5}", "\\boxed{4}"], "4*2\n": ["\\boxed{8}", "8"],
          "2+3\nhint: first 2+3=5\n": ["\\boxed{5}"] * 2, "4*2\nhint: x\n": ["8"] * 2}


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_world(tmp_path_factory.mktemp("tiny"), ROWS)


def test_critic_fits_the_returns_of_a_fixed_batch(world: Path) -> None:
    """A small learning check with a huge margin: 30 full-batch steps of value regression on two rows."""
    torch.manual_seed(0)
    critic = Critic(str(world / "models" / "student"), CriticConfig(lr=3e-3, value_clip=None))
    rollouts = Rollouts.from_token_lists([[1, 10, 11], [1, 12]], [[20, 21, 2], [22, 2]], pad_id=0, eos_id=2)
    rewards = torch.tensor([1.0, 0.0])
    assert critic.values(rollouts).abs().sum() == 0  # the head starts at zero
    losses = []
    for _ in range(30):
        old = critic.values(rollouts)
        losses.append(critic.fit(rollouts, old, gae(rewards, old, rollouts.response_mask)[1])["critic/value_loss"])
    assert losses[-1] < 0.2 * losses[0], losses
    values = critic.values(rollouts)
    assert values[0, :3].mean() > values[1, :2].mean() + 0.5  # the rewarded row is valued higher


def test_analyze_reads_a_finished_run(world: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    cfg = load_config(CONFIGS / "guide_grpo.yaml", TrainConfig, [
        f"world={world}", f"output_dir={run}", "steps=1", "save_every=0", "rollout.prompts_per_step=2",
        "rollout.group_size=2", "eval.samples=2", "eval.ks=[1,2]"])
    Trainer(cfg, console=Console(quiet=True), engine=lambda p, t, *_: ScriptedEngine(p, t, SCRIPT)).train()
    result = CliRunner().invoke(app, ["analyze", str(run)])
    assert result.exit_code == 0, result.output
    analysis = json.loads((run / "analysis.json").read_text())
    assert set(analysis) == {"test_id", "test_ood"}
    # scripted: greedy and samples alike answer 2+3 right half the time, 4*2 right half the time (one boxed answer)
    assert analysis["test_id"]["problems_compared"] == 2
    assert analysis["test_id"]["counts"] == {"already_solved": 2, "compressed": 0, "capability_gain": 0,
                                             "not_improved": 0, "unsolved": 0}
