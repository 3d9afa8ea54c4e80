"""The micro world builds, reloads through from_pretrained, is cached, and an interrupted build resumes.

What the world's models learned is a benchmark figure (``bench/world_build.py``, the docs' world table),
not a test: here only the build's mechanics are asserted.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from rich.console import Console
from transformers import AutoModelForCausalLM, AutoTokenizer

from guidedrl.data import load_rows, validate_rows
from guidedrl.world.build import build_world
from guidedrl.world.settings import WorldConfig
from guidedrl.world.splits import make_splits


def test_micro_world_builds_completely(micro_world: Path) -> None:
    manifest = json.loads((micro_world / "world.json").read_text())
    assert manifest["complete"]
    for name in ("student", "teacher_steps", "teacher_rewrite"):
        assert (micro_world / "models" / name / "model.safetensors").exists()
    assert set(manifest["seconds"]) >= {"train_student", "train_teacher_steps", "teacher_pool"}
    evaluated = json.loads((micro_world / "eval.json").read_text())
    assert set(evaluated) == {"student", "teacher_steps", "teacher_rewrite"}
    assert all(set(v) == {"test_id", "test_ood"} for v in evaluated.values())


def test_models_reload_through_from_pretrained_with_the_world_tokenizer(micro_world: Path) -> None:
    tok = AutoTokenizer.from_pretrained(micro_world / "tokenizer")
    text = "7+4*8\n4*8=32\n\\boxed{39}"
    assert tok.decode(tok(text)["input_ids"], skip_special_tokens=True) == text
    for name in ("student", "teacher_steps"):
        model = AutoModelForCausalLM.from_pretrained(micro_world / "models" / name).eval()
        assert model.config.vocab_size == len(tok) and AutoTokenizer.from_pretrained(
            micro_world / "models" / name).get_vocab() == tok.get_vocab()
        with torch.no_grad():
            assert torch.isfinite(model(torch.tensor([tok(text)["input_ids"]])).logits).all()


def test_splits_on_disk_are_the_generator_s(micro_world: Path, micro_settings: WorldConfig) -> None:
    cfg = micro_settings
    splits = make_splits(cfg)
    for split in ("train", "test_id", "test_ood"):
        rows = load_rows(micro_world / "data" / f"{split}.jsonl")
        assert [r["prompt"] for r in rows] == [f"{e.text}\n" for e in splits[split]]


def test_second_build_is_a_no_op(micro_world: Path, micro_settings: WorldConfig) -> None:
    before = {p: p.stat().st_mtime_ns for p in micro_world.rglob("*") if p.is_file() and p.name != "world.json"}
    build_world(micro_world, micro_settings, Console(quiet=True))
    after = {p: p.stat().st_mtime_ns for p in micro_world.rglob("*") if p.is_file() and p.name != "world.json"}
    assert before == after


def test_teacher_pool_is_tagged_deduplicated_sampling(micro_world: Path, micro_settings: WorldConfig) -> None:
    rows = validate_rows(load_rows(micro_world / "data" / "train.jsonl"), "train.jsonl")
    cfg = micro_settings
    for row in rows:
        names = [s["teacher"] for s in row["teacher_solutions"]]
        assert set(names) <= {"teacher_steps", "teacher_rewrite"}
        for teacher in set(names):
            texts = [s["text"] for s in row["teacher_solutions"] if s["teacher"] == teacher]
            assert 1 <= len(texts) <= cfg.pool_samples and len(set(texts)) == len(texts)


def test_an_interrupted_build_resumes_without_redoing_finished_stages(micro_world: Path, micro_settings: WorldConfig,
                                                                    tmp_path: Path) -> None:
    """Interrupted after training (the pool and the evaluation not written): the build samples the same pool
    again (its seeds are the build's) and leaves every trained model untouched."""
    copy = tmp_path / "w"
    shutil.copytree(micro_world, copy)
    (copy / "data" / "train.jsonl").unlink()
    (copy / "eval.json").unlink()
    manifest = json.loads((copy / "world.json").read_text())
    manifest["complete"] = False
    (copy / "world.json").write_text(json.dumps(manifest))
    models = {p: p.stat().st_mtime_ns for p in (copy / "models").rglob("*.safetensors")}
    build_world(copy, micro_settings, Console(quiet=True))
    assert (copy / "data" / "train.jsonl").read_text() == (micro_world / "data" / "train.jsonl").read_text()
    assert json.loads((copy / "eval.json").read_text()) == json.loads((micro_world / "eval.json").read_text())
    assert {p: p.stat().st_mtime_ns for p in (copy / "models").rglob("*.safetensors")} == models
