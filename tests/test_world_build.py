"""The micro world builds, reloads through from_pretrained, is cached, and its teachers beat its student."""

from __future__ import annotations

import json
from pathlib import Path

from rich.console import Console
from transformers import AutoModelForCausalLM, AutoTokenizer

from guidedrl.config import world_preset
from guidedrl.data import load_rows, validate_rows
from guidedrl.eval.evaluate import evaluate
from guidedrl.rewards import math_answer_reward
from guidedrl.rollout.hf_engine import HFEngine
from guidedrl.world.build import build_world


def test_micro_world_builds_completely(micro_world: Path) -> None:
    """Every model is saved; the build time is a benchmark figure (bench/world_build.py), not asserted."""
    manifest = json.loads((micro_world / "world.json").read_text())
    assert manifest["complete"]
    for name in ("student", "teacher_steps", "teacher_rewrite"):
        assert (micro_world / "models" / name / "model.safetensors").exists()


def test_reloaded_teacher_beats_reloaded_student_on_held_out_problems(micro_world: Path) -> None:
    tok = AutoTokenizer.from_pretrained(micro_world / "models" / "student")
    rows = load_rows(micro_world / "data" / "test_id.jsonl")
    acc = {}
    for name in ("student", "teacher_steps"):
        model = AutoModelForCausalLM.from_pretrained(micro_world / "models" / name).eval()
        report = evaluate(HFEngine(model, tok.pad_token_id, tok.eos_token_id), tok, rows, split="test_id",
                          ks=(1, 4), max_new_tokens=48)
        acc[name] = report.pass_at_k[1]
    assert acc["teacher_steps"] >= acc["student"] + 0.2, acc


def test_second_build_is_a_no_op(micro_world: Path) -> None:
    before = {p: p.stat().st_mtime_ns for p in micro_world.rglob("*") if p.is_file() and p.name != "world.json"}
    build_world(micro_world, world_preset("micro"), Console(quiet=True))
    after = {p: p.stat().st_mtime_ns for p in micro_world.rglob("*") if p.is_file() and p.name != "world.json"}
    assert before == after


def test_teacher_pool_is_real_sampling_with_names(micro_world: Path) -> None:
    rows = validate_rows(load_rows(micro_world / "data" / "train.jsonl"), "train.jsonl")
    sols = [(row, s) for row in rows for s in row["teacher_solutions"]]
    assert {s["teacher"] for _, s in sols} == {"teacher_steps", "teacher_rewrite"}
    verdicts = math_answer_reward([r["prompt"] for r, _ in sols], [s["text"] for _, s in sols],
                                  answer=[r["answer"] for r, _ in sols])
    assert 0.0 < sum(verdicts) < len(verdicts)  # sampled, so some right and some wrong
    by_teacher = {name: [s["text"] for _, s in sols if s["teacher"] == name] for name in ("teacher_steps", "teacher_rewrite")}
    # each teacher writes in its own style: rewrite lines restate the expression ("=7+32-5"), steps lines do not
    assert sum(t.startswith("=") for t in by_teacher["teacher_rewrite"]) > 0.9 * len(by_teacher["teacher_rewrite"])
    assert sum(t.startswith("=") for t in by_teacher["teacher_steps"]) < 0.1 * len(by_teacher["teacher_steps"])


def test_an_interrupted_build_resumes_without_redoing_finished_stages(micro_world: Path, tmp_path: Path) -> None:
    import shutil
    copy = tmp_path / "w"
    shutil.copytree(micro_world, copy)
    shutil.rmtree(copy / "models" / "teacher_rewrite")
    manifest = json.loads((copy / "world.json").read_text())
    manifest["complete"] = False
    (copy / "world.json").write_text(json.dumps(manifest))
    student_mtime = (copy / "models" / "student" / "model.safetensors").stat().st_mtime_ns
    build_world(copy, world_preset("micro"), Console(quiet=True))
    assert (copy / "models" / "teacher_rewrite" / "model.safetensors").exists()
    assert (copy / "models" / "student" / "model.safetensors").stat().st_mtime_ns == student_mtime
