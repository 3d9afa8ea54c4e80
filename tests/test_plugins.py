"""A new method in one file (the docs' worked example, examples/rloo.py): registered by a config's
``plugins``, chosen by name, and trained by the unchanged loop; its advantages checked by hand."""

from __future__ import annotations

from pathlib import Path

import pytest
from rich.console import Console

from guidedrl.config import TrainConfig
from guidedrl.registry import ADVANTAGES
from guidedrl.trainer.loop import Trainer
from guidedrl.yaml_config import ConfigError, load_config
from scripted import ScriptedEngine, build_tiny_world

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "rloo.yaml"
ROWS = [{"prompt": "2+3\n", "answer": "5"}, {"prompt": "4*2\n", "answer": "8"}]
SCRIPT = {"2+3\n": ["\\boxed{5}", "\\boxed{4}", "2+3=5\n\\boxed{5}", "no"], "4*2\n": ["\\boxed{8}"] * 4}


def test_the_rloo_example_trains_through_the_unchanged_loop(tmp_path: Path) -> None:
    world = build_tiny_world(tmp_path / "w", ROWS)
    cfg = load_config(EXAMPLE, TrainConfig, [f"world={world}", f"output_dir={tmp_path / 'run'}", "steps=1",
                                             "rollout.prompts_per_step=2", "rollout.group_size=4"])
    assert "rloo" in ADVANTAGES.names()
    trainer = Trainer(cfg, console=Console(quiet=True), engine=lambda p, t, *_: ScriptedEngine(p, t, SCRIPT))
    trainer.train_step()
    b = trainer.last_batch
    # group 2+3: rewards 1, 0, 1, 0 → each row's baseline is the mean of the other three: 1/3 or 2/3
    for row in range(b.size):
        r = float(b.rewards[row])
        others = [float(b.rewards[j]) for j in range(b.size) if j != row and b.group_index[j] == b.group_index[row]]
        mask = b.rollouts.response_mask[row].bool()
        assert b.advantages[row][mask].tolist() == pytest.approx([r - sum(others) / 3] * int(mask.sum()))
    assert sorted(set(round(float(a), 6) for a in b.advantages[b.rollouts.response_mask.bool()])) == \
        [round(-2 / 3, 6), 0.0, round(2 / 3, 6)]  # the 4*2 group is all right: 0


def test_a_missing_plugin_is_a_config_error(tmp_path: Path) -> None:
    bad = tmp_path / "c.yaml"
    bad.write_text("plugins: [nowhere.py]\n")
    with pytest.raises(ConfigError, match=r"c.yaml: plugins: cannot import plugin 'nowhere.py': plugin file .*"):
        load_config(bad, TrainConfig)
