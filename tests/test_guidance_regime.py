"""bench/guidance_regime.py's bookkeeping: the rate a prior result measured a method at, and which paired
differences come from stored per-problem tables and which are carried over from a prior result; and
bench/teacher_loss.py's pairing with the published run, as its table shows it."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from guidance_regime import contrasts, prior_rate  # noqa: E402
from paired import paired_diffs  # noqa: E402
from render_docs import RENDERERS  # noqa: E402
from teacher_loss import against  # noqa: E402

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
    diff = against(new["problems"], base["problems"], samples=8)
    assert abs(diff["t1"]["target"]["diff_pass@1"][0] - 1 / 3) < 1e-12  # (8/8 − 0) / 3 problems
    assert diff["t0.6"]["test_ood"] == paired_diffs([new["problems"]["t0.6"]["test_ood"]],
                                                    [base["problems"]["t0.6"]["test_ood"]], [1, 8])
    result = {"environment": {"machine": "m", "torch": "t", "transformers": "x", "torch_threads": 2, "date": "d"},
              "settings": {"surrogate": "logp", "seed": 0},
              "regime": {"world": "w", "steps": 300, "target_problems": 300, "samples": 8},
              "methods": {"ampo": {"lr": "5e-05", "shaped": base, "logp": new, "diff": diff}}}
    lines = RENDERERS["teacher_loss"](result).splitlines()
    assert "| ampo | shaped | 5e-05 | 10.0 | 10.0 | 10.0 | 10.0 | 10.0 | 1.0 |" in lines
    assert [line for line in lines if line.startswith("| ampo | +")][0].startswith("| ampo | +33.3 [")
