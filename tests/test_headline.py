"""bench/headline.py's bookkeeping: which earlier runs a widened sweep reuses; the paired interval and cuts."""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from headline import PROTOCOL, combine, merge_priors, reusable_scores  # noqa: E402
from paired import by_label, paired_interval  # noqa: E402

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


def test_a_run_of_fewer_seeds_keeps_its_seeds_and_the_rest_are_trained(tmp_path: Path) -> None:
    one_seed = {**SETTINGS, "seeds": [1]}
    stored = {"test_id": [[[64, 3, 1]]], "test_ood": [[[64, 0, 0]]]}
    path = result(tmp_path / "one.json", {"tgpo": {}}, {"tgpo": "5e-05"}, {"tgpo": stored}, one_seed)
    json_result = json.loads(path.read_text())
    json_result["methods"]["tgpo"]["over_training"] = {"all_wrong": [0.5, 0.2]}
    path.write_text(json.dumps(json_result))
    kept = reusable_scores(merge_priors([path]), {"tgpo": "5e-05"}, {k: SETTINGS[k] for k in PROTOCOL})
    assert kept["tgpo"]["seeds"] == [1]
    trained = {0: {"test_id": [[64, 9, 2]], "test_ood": [[64, 1, 1]]}}
    scores, history = combine([0, 1], kept["tgpo"], trained, {0: {"all_wrong": [0.3, 0.0]}})
    assert scores == {"test_id": [[[64, 9, 2]], [[64, 3, 1]]], "test_ood": [[[64, 1, 1]], [[64, 0, 0]]]}
    assert history == {"all_wrong": [0.4, 0.1]}  # the mean over both seeds
    twice = {split: [rows[0], rows[0]] for split, rows in stored.items()}
    both = result(tmp_path / "both.json", {"tgpo": {}}, {"tgpo": "5e-05"}, {"tgpo": twice}, SETTINGS)
    kept = reusable_scores(merge_priors([path, both]), {"tgpo": "5e-05"}, {k: SETTINGS[k] for k in PROTOCOL})
    assert kept["tgpo"]["source"] == "both.json"  # the most seeds
    more_seeds = {k: {**SETTINGS, "seeds": [0, 2]}[k] for k in PROTOCOL}
    assert reusable_scores(merge_priors([path]), {"tgpo": "5e-05"}, more_seeds) == {}  # seed 1 is not asked for


def test_three_stored_seeds_and_two_new_ones_average_as_five() -> None:
    problems = {split: [[[64, s, 1]] for s in range(3)] for split in ("test_id", "test_ood")}
    kept = {"seeds": [0, 1, 2], "problems": problems,
            "figures": {"over_training": {"all_wrong": [0.6]}}}
    trained = {s: {"test_id": [[64, s, 1]], "test_ood": [[64, s, 1]]} for s in (3, 4)}
    scores, history = combine([0, 1, 2, 3, 4], kept, trained, {3: {"all_wrong": [0.1]}, 4: {"all_wrong": [0.4]}})
    assert [row[0][1] for row in scores["test_id"]] == [0, 1, 2, 3, 4]
    assert history["all_wrong"][0] == (3 * 0.6 + 0.1 + 0.4) / 5


def test_the_paired_interval_of_a_constant_shift_is_that_shift() -> None:
    b = [[0.1, 0.4, 0.7], [0.0, 0.5, 1.0]]
    a = [[x + 0.25 for x in row] for row in b]
    mean, low, high = paired_interval(a, b, draws=200)
    assert (round(mean, 12), round(low, 12), round(high, 12)) == (0.25, 0.25, 0.25)
    assert paired_interval(b, b, draws=50) == (0.0, 0.0, 0.0)


def test_a_table_cut_by_label_keeps_seeds_and_problem_order() -> None:
    table = [[(8, 1, 1), (8, 2, 1), (8, 3, 1)], [(8, 4, 1), (8, 5, 1), (8, 6, 1)]]
    assert by_label(table, [4, 2, 4]) == {2: [[(8, 2, 1)], [(8, 5, 1)]],
                                          4: [[(8, 1, 1), (8, 3, 1)], [(8, 4, 1), (8, 6, 1)]]}
