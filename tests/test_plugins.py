"""A new method in one file (the README's worked example, examples/gspo.py): registered by a config's
``plugins``, chosen by name, and trained by the unchanged loop; its loss checked by hand."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from rich.console import Console

from guidedrl.config import TrainConfig
from guidedrl.registry import SURROGATES
from guidedrl.trainer.loop import Trainer
from guidedrl.yaml_config import ConfigError, load_config
from scripted import ScriptedEngine, build_tiny_world

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "gspo.yaml"
ROWS = [{"prompt": "2+3\n", "answer": "5"}, {"prompt": "4*2\n", "answer": "8"}]
SCRIPT = {"2+3\n": ["\\boxed{5}", "\\boxed{4}", "2+3=5\n\\boxed{5}", "no"], "4*2\n": ["\\boxed{8}"] * 4}


def test_the_gspo_example_trains_through_the_unchanged_loop(tmp_path: Path) -> None:
    world = build_tiny_world(tmp_path / "w", ROWS)
    cfg = load_config(EXAMPLE, TrainConfig, [f"world={world}", f"output_dir={tmp_path / 'run'}", "steps=1",
                                             "rollout.prompts_per_step=2", "rollout.group_size=4"])
    assert "gspo" in SURROGATES.names()
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


def test_a_missing_plugin_is_a_config_error(tmp_path: Path) -> None:
    bad = tmp_path / "c.yaml"
    bad.write_text("plugins: [nowhere.py]\n")
    with pytest.raises(ConfigError, match=r"c.yaml: plugins: cannot import plugin 'nowhere.py': plugin file .*"):
        load_config(bad, TrainConfig)
