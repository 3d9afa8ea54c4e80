"""bench/guidance_regime.py's bookkeeping: the rate a prior result measured a method at, and which paired
differences come from stored per-problem tables and which are carried over from a prior result; and
bench/teacher_loss.py's pairing with the published run, as its table shows it."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from guidance_regime import contrasts, paired_by_set, prior_rate  # noqa: E402
from paired import paired_diffs  # noqa: E402
from render_docs import RENDERERS  # noqa: E402
from teacher_loss import training_log  # noqa: E402

OLD = {"settings": {"lr": 5e-5}, "methods": {"grpo": {}, "ampo": {}}}  # a result from before rates were chosen


def tables(correct: list[int]) -> dict[str, dict[str, list[tuple[int, int, int]]]]:
    """One seed's per-problem tables at both temperatures: 8 samples per problem, ``correct`` of them right."""
    return {t: {"target": [(8, c, min(c, 1)) for c in correct]} for t in ("t1", "t0.6")}


def test_a_prior_s_rate_is_its_chosen_one_or_its_single_rate() -> None:
    assert prior_rate(OLD, "grpo") == "5e-05"
    assert prior_rate({**OLD, "chosen_lr": {"grpo": "0.0001"}}, "grpo") == "0.0001"
    assert prior_rate(OLD, "tgpo") is None  # never measured there


def test_differences_come_from_the_tables_both_methods_have() -> None:
    found = {"tgpo": {"0": tables([4, 8, 0]), "1": tables([2, 2, 2])}, "rkl_distill": {"0": tables([0, 8, 0])}}
    out = contrasts(found, {"tgpo": "5e-05", "rkl_distill": "5e-05"}, {}, samples=8)
    assert list(out) == ["tgpo − rkl_distill"] and out["tgpo − rkl_distill"]["seeds"] == ["0"]
    expected = paired_diffs([found["tgpo"]["0"]["t1"]["target"]], [found["rkl_distill"]["0"]["t1"]["target"]], [1, 8])
    assert out["tgpo − rkl_distill"]["t1"]["target"] == expected
    assert abs(expected["diff_pass@1"][0] - 0.5 / 3) < 1e-12  # (4/8 - 0) / 3 problems


def test_a_prior_difference_over_more_seeds_is_carried_only_at_the_same_rates() -> None:
    carried = {"seeds": ["0", "1", "2"], "t1": {}, "t0.6": {}}
    prior = {**OLD, "contrasts": {"ampo − grpo": carried}}
    seed0 = {"ampo": {"0": tables([8, 0])}, "grpo": {"0": tables([0, 0])}}  # seed 0 scored again, tables kept
    assert contrasts(seed0, {"ampo": "5e-05", "grpo": "5e-05"}, prior, 8)["ampo − grpo"] is carried
    again = contrasts(seed0, {"ampo": "0.0001", "grpo": "5e-05"}, prior, 8)["ampo − grpo"]  # AMPO's rate moved
    assert again["seeds"] == ["0"] and again["t1"]["target"]["diff_pass@1"][0] == 0.5


def test_the_teacher_loss_runs_are_paired_with_the_published_run_problem_by_problem() -> None:
    def scored(correct: list[int]) -> dict:
        sets = {f"{name}/{key}": 10.0 for name in ("target", "test_id", "test_ood") for key in ("pass@1", "greedy")}
        return {"scores": {"t1": sets, "t0.6": sets}, "slip": 0.01, "problems": {
            t: {name: [(8, c, min(c, 1)) for c in correct] for name in ("target", "test_id", "test_ood")}
            for t in ("t1", "t0.6")}}

    new, base = scored([8, 0, 4]), scored([0, 0, 4])
    diff = paired_by_set([new["problems"]], [base["problems"]], samples=8)
    assert abs(diff["t1"]["target"]["diff_pass@1"][0] - 1 / 3) < 1e-12  # (8/8 − 0) / 3 problems
    assert diff["t0.6"]["test_ood"] == paired_diffs([new["problems"]["t0.6"]["test_ood"]],
                                                    [base["problems"]["t0.6"]["test_ood"]], [1, 8])
    log = {"teacher_prob_mean/first": 0.58, "teacher_prob_mean/last": 0.729, "reward/first": 0.2914,
           "reward/last": 0.265, "selected": {"teacher_running": 0.75, "teacher_steps": 0.25}}
    result = {"environment": {"machine": "m", "torch": "t", "transformers": "x", "torch_threads": 2, "date": "d"},
              "settings": {"seed": 0}, "regime": {"world": "w", "steps": 300, "target_problems": 300, "samples": 8},
              "methods": {"ampo": {"lr": "5e-05", "published": base, "log": None, "variants": {
                  "logp:teacher_steps": {**new, "log": log, "diff": diff}}}}}
    lines = RENDERERS["teacher_loss"](result).splitlines()
    assert ("| ampo | shaped, the preset's teachers (published) | 5e-05 | 10.0 | 10.0 | 10.0 | 10.0 | 10.0 | 1.0 |"
            in lines)
    assert [line for line in lines if line.startswith("| ampo: logp, teacher_steps only | ")][0].startswith(
        "| ampo: logp, teacher_steps only | +33.3 [")
    assert "| ampo | shaped, the preset's teachers (published) | — | — | — |" in lines  # its folder was not there
    assert ("| ampo | logp, teacher_steps only | 0.58 → 0.73 | 0.291 → 0.265 | teacher_running 75%, teacher_steps "
            "25% |") in lines


def test_a_training_log_is_read_per_tenth_with_each_teachers_share(tmp_path: Path) -> None:
    steps = [{"step": i, "reward": i / 20, "teacher_prob_mean": 0.5 + i / 100,
              **({"guidance/teacher/selected/teacher_steps": 2.0} if i % 2 else
                 {"guidance/teacher/selected/teacher_running": 1.0})} for i in range(1, 21)]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in [*steps, {"step": 20, "eval/x": 1}]))
    log = training_log(tmp_path)  # 20 steps: a tenth is 2 (the final evaluation's record is not a step)
    assert log["reward/first"] == pytest.approx((1 + 2) / 40) and log["reward/last"] == pytest.approx((19 + 20) / 40)
    assert log["teacher_prob_mean/last"] == pytest.approx(0.695)
    assert log["selected"] == pytest.approx({"teacher_running": 10 / 30, "teacher_steps": 20 / 30})
    assert training_log(tmp_path / "absent") is None
