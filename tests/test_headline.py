"""bench/headline.py's bookkeeping: which earlier runs a widened sweep reuses, and the paired interval."""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from headline import PROTOCOL, merge_priors, paired_interval, reusable_scores  # noqa: E402

SETTINGS = {"seeds": [0, 1], "steps": 300, "samples": 64, "problems": 2, "set": []}


def result(path: Path, sweep: dict, chosen: dict, problems: dict, settings: dict = SETTINGS) -> Path:
    """A minimal result file as headline.py writes it."""
    path.write_text(json.dumps({"settings": settings, "sweep": sweep, "chosen_lr": chosen, "problems": problems,
                                "methods": {m: {"lr": chosen[m], "over_training": {}} for m in problems}}))
    return path


def test_sweeps_come_from_the_first_file_and_scores_from_every_file(tmp_path: Path) -> None:
    first = result(tmp_path / "a.json", {"grpo": {"5e-05": {"train_reward_tail": 0.3}}}, {"grpo": "5e-05"}, {})
    scores, three_seeds = {"test_id": [[[64, 3, 1]], [[64, 5, 2]]]}, {**SETTINGS, "seeds": [0, 1, 2]}
    second = result(tmp_path / "b.json", {"grpo": {"1e-4": {}}, "ampo": {"5e-05": {}}},
                    {"grpo": "0.0001", "ampo": "5e-05"}, {"grpo": scores, "ampo": scores}, three_seeds)
    prior = merge_priors([first, second])
    assert prior["sweep"] == {"grpo": {"5e-05": {"train_reward_tail": 0.3}}, "ampo": {"5e-05": {}}}
    assert prior["chosen_lr"] == {"grpo": "5e-05", "ampo": "5e-05"}
    assert [c["source"] for c in prior["scores"]["grpo"]] == ["b.json"]
    assert prior["scores"]["grpo"][0]["protocol"] == {k: three_seeds[k] for k in PROTOCOL}


def test_scores_are_reused_only_at_the_same_rate_and_protocol(tmp_path: Path) -> None:
    scores = {"test_id": [[[64, 3, 1]], [[64, 5, 2]]]}
    other = result(tmp_path / "other.json", {"grpo": {}}, {"grpo": "5e-05"}, {"grpo": scores},
                   {**SETTINGS, "seeds": [0, 1, 2]})
    same = result(tmp_path / "same.json", {"grpo": {}, "ampo": {}}, {"grpo": "5e-05", "ampo": "5e-05"},
                  {"grpo": scores, "ampo": scores})
    prior = merge_priors([other, same])
    kept = reusable_scores(prior, {"grpo": "5e-05", "ampo": "2.5e-05"}, {k: SETTINGS[k] for k in PROTOCOL})
    assert list(kept) == ["grpo"]  # ampo's rate moved: trained again
    assert kept["grpo"]["source"] == "same.json"  # other.json ran three seeds
    assert kept["grpo"]["problems"] == scores


def test_the_paired_interval_of_a_constant_shift_is_that_shift() -> None:
    b = [[0.1, 0.4, 0.7], [0.0, 0.5, 1.0]]
    a = [[x + 0.25 for x in row] for row in b]
    mean, low, high = paired_interval(a, b, draws=200)
    assert (round(mean, 12), round(low, 12), round(high, 12)) == (0.25, 0.25, 0.25)
    assert paired_interval(b, b, draws=50) == (0.0, 0.0, 0.0)
