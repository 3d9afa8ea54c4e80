"""The GRPO loop on the micro world: reward rises, kill/resume is exact, bad configs are clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from rich.console import Console

from guidedrl.config import TrainConfig
from guidedrl.trainer.loop import Trainer
from guidedrl.yaml_config import ConfigError, load_config


def _config(world: Path, out: Path, **overrides) -> TrainConfig:
    base = {"world": str(world), "output_dir": str(out), "seed": 0, "steps": 4, "save_every": 2,
            "rollout": {"prompts_per_step": 8, "group_size": 8, "max_new_tokens": 40},
            "optim": {"lr": 3e-3, "micro_batch_size": 32},
            "eval": {"samples": 2, "ks": [1, 2], "max_problems": 8}}
    for key, value in overrides.items():
        base[key] = {**base.get(key, {}), **value} if isinstance(value, dict) else value
    return TrainConfig(**base)


def test_grpo_raises_the_mean_reward_on_the_micro_world(micro_world: Path, tmp_path: Path) -> None:
    """On a fixed set of 48 training problems (so that 32 steps revisit each one), the reward rises."""
    subset = tmp_path / "train48.jsonl"
    subset.write_text("".join((micro_world / "data" / "train.jsonl").read_text().splitlines(keepends=True)[:48]))
    cfg = _config(micro_world, tmp_path / "run", steps=32, save_every=0, dataset=str(subset),
                  rollout={"prompts_per_step": 16}, optim={"lr": 1e-3, "micro_batch_size": 64})
    trainer = Trainer(cfg, console=Console(quiet=True))
    rewards = [trainer.train_step()["reward"] for _ in range(cfg.steps)]
    first, last = sum(rewards[:8]) / 8, sum(rewards[-8:]) / 8
    assert last > first + 0.08, rewards


def test_metrics_cover_what_a_user_watches(micro_world: Path, tmp_path: Path) -> None:
    cfg = _config(micro_world, tmp_path / "run", steps=1, save_every=0)
    Trainer(cfg, console=Console(quiet=True)).train()
    record = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[0])
    for key in ("reward", "all_wrong", "all_right", "entropy", "clip_frac", "response_length", "grad_norm",
                "step_time", "tokens_per_s"):
        assert key in record, key
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert "eval/test_id/pass@1" in summary["before"] and "eval/test_ood/pass@1" in summary["after"]
    assert (tmp_path / "run" / "final" / "model.safetensors").exists()
    assert any((tmp_path / "run" / "tensorboard").iterdir())


def test_a_resumed_run_equals_an_uninterrupted_one(micro_world: Path, tmp_path: Path) -> None:
    whole = Trainer(_config(micro_world, tmp_path / "whole"), console=Console(quiet=True))
    for _ in range(4):
        whole.train_step()

    stopped = Trainer(_config(micro_world, tmp_path / "split"), console=Console(quiet=True))
    for _ in range(2):
        stopped.train_step()
    stopped.save()
    stopped.train_step()  # work after the checkpoint that a kill -9 loses
    del stopped

    resumed = Trainer(_config(micro_world, tmp_path / "split"), resume=True, console=Console(quiet=True))
    assert resumed.step == 2 and resumed.sampler.state_dict() == {"epoch": 0, "position": 16}
    for _ in range(2):
        resumed.train_step()
    for a, b in zip(whole.policy.parameters(), resumed.policy.parameters()):
        assert torch.allclose(a, b, atol=1e-6)


def test_filter_groups_drops_flat_groups_and_skips_a_step_without_signal(micro_world: Path, tmp_path: Path) -> None:
    trainer = Trainer(_config(micro_world, tmp_path / "run", save_every=0, algorithm={"filter_groups": True}),
                      console=Console(quiet=True))
    m = trainer.train_step()  # 0/1 rewards: a group is flat exactly when it is all wrong or all right
    assert m["filtered_rows"] == pytest.approx(m["all_wrong"] + m["all_right"])
    assert ("grad_norm" in m) == (m["filtered_rows"] < 1.0)

    # one new token cannot hold a boxed answer: every reward is 0, so nothing is learned and nothing moves
    flat = Trainer(_config(micro_world, tmp_path / "flat", save_every=0, algorithm={"filter_groups": True},
                           rollout={"max_new_tokens": 1}), console=Console(quiet=True))
    before = [p.detach().clone() for p in flat.policy.parameters()]
    m = flat.train_step()
    assert m["filtered_rows"] == 1.0 and "grad_norm" not in m and flat.step == 1
    assert all(torch.equal(a, b) for a, b in zip(before, flat.policy.parameters()))


def test_bad_configs_are_clear_errors(micro_world: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("rollout:\n  grup_size: 8\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: rollout.grup_size: unknown key"):
        load_config(bad, TrainConfig)
    bad.write_text("rollout:\n  group_size: 1\n")
    with pytest.raises(ConfigError, match=r"rollout.group_size: .*greater than or equal to 2"):
        load_config(bad, TrainConfig)
    cfg = _config(micro_world, tmp_path / "run", model=str(tmp_path / "nowhere"))
    with pytest.raises(ConfigError, match=r"model: path .*nowhere does not exist"):
        Trainer(cfg, console=Console(quiet=True))
