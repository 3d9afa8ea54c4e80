"""``guidedrl eval --benchmarks``: scores computed by hand on scripted completions, the command end to end on
the fixtures with a world student (its files read by ``analyze`` and ``report``), its bad inputs as one line,
and the reproduction of a trained world run's own evaluation."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from rich.console import Console
from transformers import AutoModelForCausalLM, AutoTokenizer
from typer.testing import CliRunner

from benchmark_fixtures import CHOICE, MATH, write_fixtures
from guidedrl.cli import app
from guidedrl.config import TrainConfig
from guidedrl.data import encode_prompts
from guidedrl.eval.benchmarks import select
from guidedrl.eval.capability import read_report
from guidedrl.eval.metrics import pass_at_k
from guidedrl.eval.suite import SuiteSettings, load_suite, read_results, run_suite, summarize
from guidedrl.rollout.engine import with_pad_token
from guidedrl.trainer.loop import Trainer
from guidedrl.yaml_config import load_config
from scripted import ScriptedEngine, build_tiny_world
from tiny_chat_model import build as build_chat_model

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
WORLD = Path(__file__).resolve().parents[1] / "worlds" / "default"
ROWS = [{"prompt": f"{a}+{b}\n", "answer": str(a + b)} for a, b in [(1, 2), (3, 4), (5, 1)]]


@pytest.fixture(scope="module")
def fixtures(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("data")
    write_fixtures(folder)
    return folder


@pytest.fixture(scope="module")
def tiny_world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_world(tmp_path_factory.mktemp("tiny"), ROWS)


def test_scores_groups_and_pass_at_k_are_computed_from_each_benchmarks_own_verifier(fixtures: Path,
                                                                                     tmp_path: Path) -> None:
    """A chat model answering from a script: every count, score and mean below is worked out by hand."""
    model_dir = build_chat_model(tmp_path / "chat")
    tok = with_pad_token(AutoTokenizer.from_pretrained(model_dir))
    settings = SuiteSettings(samples=4, pass1_samples=2, temperature=1.0, max_new_tokens=8)
    benches = select("aime24,math500,gpqa_diamond")
    loaded = load_suite(benches, {b.name: next(fixtures.glob(f"{b.name}*")) for b in benches}, tmp_path, settings)
    gpqa = [row["answer"] for row in loaded[2].rows]
    other = ["B" if letter == "A" else "A" for letter in gpqa]
    answers = [  # the first completion is also the greedy one
        ["\\boxed{6}", "\\boxed{5}", "6", "\\boxed{6}"],  # aime24 (gold 6): 2 of 4 (an unboxed 6 does not count)
        ["\\boxed{7}", "\\boxed{56}", "\\boxed{56}", "\\boxed{56}"],  # aime24 (gold 56): 3 of 4, greedy wrong
        ["so \\boxed{\\frac{28}{6}}", "\\boxed{4.67}"],  # math500 (gold \frac{14}{3}): equal by math-verify, 1 of 2
        ["\\boxed{\\left(3,\\frac{\\pi}{2}\\right)}", "\\boxed{(3, \\pi)}"],  # math500 (a point): 1 of 2
        [f"\\boxed{{{gpqa[0]}}}", f"Answer: {other[0]}"],  # gpqa: a boxed letter right, a stated one wrong
        [f"\\boxed{{{gpqa[1]}}}", f"Answer: {other[1]}"],
        [f"Answer: {other[2]}", f"The answer is ({gpqa[2]})."],  # greedy wrong, 1 of 2
    ]
    rows = [row for item in loaded for row in item.rows]
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    keys = tok.batch_decode(encode_prompts(tok, [r["prompt"] for r in rows]), skip_special_tokens=True)
    engine = ScriptedEngine(model, tok, dict(zip(keys, answers)))
    reports = run_suite(engine, tok, loaded, settings, log=lambda line: None)
    assert [[p.correct for p in r.problems] for r in reports.values()] == [[2, 3], [1, 1], [1, 1, 1]]
    assert [[p.n for p in r.problems] for r in reports.values()] == [[4, 4], [2, 2], [2, 2, 2]]
    assert [[p.greedy_correct for p in r.problems] for r in reports.values()] == [
        [True, False], [True, True], [True, True, False]]
    result = summarize(loaded, reports, settings, "after", "m", "hf")
    b = result["benchmarks"]
    assert [b[n]["metric"] for n in b] == ["avg@4", "pass@1", "pass@1"]
    assert b["aime24"]["score"] == pytest.approx((2 / 4 + 3 / 4) / 2)
    assert b["aime24"]["pass_at_k"] == pytest.approx({"1": 0.625, "2": ((1 - 1 / 6) + 1) / 2, "4": 1.0})
    assert b["aime24"]["pass_at_k"]["2"] == pytest.approx((pass_at_k(4, 2, 2) + pass_at_k(4, 3, 2)) / 2)
    assert (b["math500"]["score"], b["math500"]["greedy"]) == (0.5, 1.0)
    assert b["gpqa_diamond"]["score"] == 0.5 and b["gpqa_diamond"]["greedy"] == pytest.approx(2 / 3)
    assert result["groups"] == {"math": {"benchmarks": ["aime24", "math500"], "score": pytest.approx(0.5625)},
                                "ood": {"benchmarks": ["gpqa_diamond"], "score": 0.5}}
    assert [r["verifier"] for r in b.values()] == ["math_answer", "math_answer", "multiple_choice"]


def suite(model: Path, world: Path, fixtures: Path, out: Path, *extra: str, max_new_tokens: int = 4) -> list[str]:
    """``guidedrl eval --benchmarks`` arguments on the fixtures at the smallest settings."""
    return ["eval", "--model", str(model), "--benchmarks", "all,world", "--world", str(world), "--data-dir",
            str(fixtures), "--template", "plain", "--samples", "2", "--max-new-tokens", str(max_new_tokens),
            "--limit", "2", "--output", str(out), *extra]


def test_the_command_evaluates_every_benchmark_and_its_files_serve_analyze_and_report(
        tiny_world: Path, fixtures: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"  # a run folder: the results written into it appear on guidedrl report's page
    run.mkdir()
    (run / "metrics.jsonl").write_text(json.dumps({"step": 1, "reward": 0.5}) + "\n")
    student = tiny_world / "models" / "student"
    for tag in ("before", "after"):
        result = CliRunner().invoke(app, suite(student, tiny_world, fixtures, run, "--tag", tag),
                                    env={"COLUMNS": "200"})
        assert result.exit_code == 0, result.output
    assert re.search(r"│ math average +│ math +│ +│ mean of 6 +│", result.output), result.output
    out = read_results(run / "benchmarks_after.json")
    names = [*MATH, *CHOICE, "world_id", "world_ood"]
    assert list(out["benchmarks"]) == names and list(out["groups"]) == ["math", "ood", "world"]
    sizes = {**{n: len(v) for n, v in {**MATH, **CHOICE}.items()}, "world_id": 2, "world_ood": 2}
    for name, b in out["benchmarks"].items():
        report = read_report(run / b["report"])
        samples = 2 if name in ("aime24", "aime25", "amc23", "world_id", "world_ood") else 1
        assert (b["problems"], b["samples"]) == (min(sizes[name], 2), samples)
        assert [p["n"] for p in report["problems"]] == [samples] * b["problems"]
        assert b["score"] == sum(p["correct"] / p["n"] for p in report["problems"]) / b["problems"]
        assert (b["template"], b["source"].startswith(str(fixtures)) or name.startswith("world")) == ("plain", True)
    for g in out["groups"].values():
        scores = [out["benchmarks"][n]["score"] for n in g["benchmarks"]]
        assert g["score"] == pytest.approx(sum(scores) / len(scores))
    assert out["settings"] == {"samples": 2, "pass1_samples": 1, "temperature": 0.6, "max_new_tokens": 4, "seed": 0,
                               "greedy": True, "limit": 2, "template": "plain"}

    analyzed = CliRunner().invoke(app, ["analyze", str(run)])
    assert analyzed.exit_code == 0, analyzed.output
    analysis = json.loads((run / "analysis.json").read_text())
    assert sorted(analysis) == sorted(names)  # every benchmark compared, before against after
    assert all(a["problems_compared"] == out["benchmarks"][n]["problems"] for n, a in analysis.items())

    page = tmp_path / "report.html"
    reported = CliRunner().invoke(app, ["report", str(run), "--out", str(page)])
    assert reported.exit_code == 0, reported.output
    table = re.search(r'<table data-table="benchmarks">(.*?)</table>', page.read_text()).group(1)
    before = read_results(run / "benchmarks_before.json")["benchmarks"]["aime24"]["score"]
    assert "<th>run (after)</th><th>run (before)</th>" in table
    assert (f"<tr><td>aime24</td><td>{100 * out['benchmarks']['aime24']['score']:.1f} (avg@2)</td>"
            f"<td>{100 * before:.1f} (avg@2)</td></tr>") in table
    assert table.count("<tr>") == 1 + len(names) + 3  # the header, a row per benchmark, one per group mean


BAD = [  # extra arguments, --max-new-tokens, the error expected
    (["--split", "test_ood"], 4, r"--split: not with --benchmarks"),
    (["--template", "nope"], 4, r"--template: unknown prompt template 'nope'"),
    (["--data", "aime24"], 4, r"--data: expected NAME=PATH, got 'aime24'"),
    (["--data", "aime=x"], 4, r"--data: unknown benchmark 'aime'"),
    (["--tag", "a_b"], 4, r"--tag: 'a_b' is not a tag"),
    (["--engine", "sglang"], 4, r"--engine: unknown rollout engine 'sglang'"),
    ([], 256, r"--max-new-tokens: 256 leaves no room for a prompt in the model's context of 256 tokens"),
    ([], 250, (r"aime24\.parquet: row 0 \(0-based\): field 'prompt': aime24: the prompt and --max-new-tokens 250 "
               r"exceed the model's context of 256 tokens; lower --max-new-tokens")),
]


@pytest.mark.parametrize(("extra", "max_new_tokens", "expected"), BAD, ids=[b[2][:30] for b in BAD])
def test_bad_suite_input_is_one_error_line(extra: list[str], max_new_tokens: int, expected: str, tiny_world: Path,
                                           fixtures: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(app, suite(tiny_world / "models" / "student", tiny_world, fixtures, tmp_path / "out",
                                           *extra, max_new_tokens=max_new_tokens))
    lines = result.output.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == 1 and lines[0].startswith("error: "), result.output
    assert re.search(expected, lines[0]), lines[0]
    assert not (tmp_path / "out" / "benchmarks_eval.json").exists()


def test_a_trained_world_run_scores_the_same_per_problem_as_its_own_evaluation(tmp_path: Path) -> None:
    """The issue's check: `--benchmarks world_id,world_ood --samples 32` on a trained run's final model, at the run's
    seed, temperature and length, gives exactly the per-problem counts its trainer's evaluation wrote. The run
    starts from the shipped world's trained student, so some problems are solved and the counts are not all 0."""
    run = tmp_path / "run"
    cfg = load_config(CONFIGS / "grpo.yaml", TrainConfig, [
        f"world={WORLD}", f"output_dir={run}", "seed=3", "steps=1", "save_every=0", "rollout.prompts_per_step=2",
        "rollout.group_size=2", "eval.before=false", "eval.samples=32", "eval.ks=[1,32]", "eval.max_problems=3"])
    Trainer(cfg, console=Console(quiet=True)).train()
    out = tmp_path / "suite"
    result = CliRunner().invoke(app, [
        "eval", "--model", str(run / "final"), "--benchmarks", "world_id,world_ood", "--world", str(WORLD),
        "--samples", "32", "--temperature", str(cfg.eval.temperature), "--max-new-tokens",
        str(cfg.rollout.max_new_tokens), "--seed", "3", "--limit", "3", "--output", str(out), "--tag", "after"])
    assert result.exit_code == 0, result.output
    solved = 0
    for bench, split in (("world_id", "test_id"), ("world_ood", "test_ood")):
        trainer = json.loads((run / "eval" / f"after_{split}.json").read_text())
        ours = json.loads((out / "eval" / f"after_{bench}.json").read_text())
        assert ours["problems"] == trainer["problems"]  # prompt, answer, n, correct, greedy, paths, length
        assert [ours["pass_at_k"][k] for k in ("1", "32")] == [trainer["pass_at_k"][k] for k in ("1", "32")]
        solved += sum(p["correct"] for p in trainer["problems"])
    assert solved > 0  # the counts compared are not all zero
