"""The embedded world's problems, splits, styles, hints and tokenizer."""

from __future__ import annotations

import json
import random
from collections import Counter
from pathlib import Path

import pytest

from guidedrl.data import write_jsonl
from guidedrl.rewards import math_answer_reward
from guidedrl.world.problems import Expression, evaluate, sample_expression
from guidedrl.world.settings import WorldConfig, world_preset
from guidedrl.world.splits import make_splits, rows_for
from guidedrl.world.styles import STYLES, hint_for
from guidedrl.world.target import target_operands, target_rows, validation_rows
from guidedrl.world.tokenizer import build_tokenizer

SPLIT_ARGS = dict(n_train=300, n_test_id=100, n_test_ood=100, n_sft=500)


@pytest.fixture(scope="module")
def splits() -> dict[str, list[Expression]]:
    return make_splits(world_preset("default", seed=3, **SPLIT_ARGS))


def test_precedence_and_styles_on_a_known_problem() -> None:
    expr = Expression((7, 4, 8, 5), ("+", "*", "-"))
    assert expr.text == "7+4*8-5" and evaluate(expr) == 34
    assert STYLES["steps"](expr) == "4*8=32\n7+32=39\n39-5=34\n\\boxed{34}"
    assert STYLES["rewrite"](expr) == "=7+32-5\n=39-5\n=34\n\\boxed{34}"
    assert STYLES["words"](expr) == "4 times 8 is 32\n7 plus 32 is 39\n39 minus 5 is 34\nso \\boxed{34}"
    assert STYLES["running"](expr) == "t=7\nt=7+4*8=7+32=39\nt=39-5=34\n\\boxed{34}"
    assert hint_for(expr) == "first 4*8=32"


def test_splits_are_disjoint(splits: dict[str, list[Expression]]) -> None:
    texts = {name: {e.text for e in exprs} for name, exprs in splits.items()}
    held_out = texts["test_id"] | texts["test_ood"]
    assert not texts["test_id"] & texts["test_ood"]
    assert not texts["train"] & held_out
    assert not texts["sft"] & held_out and not texts["sft_wide"] & held_out
    assert len(texts["train"]) == 300 and len(texts["test_id"]) == 100
    assert {len(e.operands) for e in splits["test_ood"]} == {3}
    assert {len(e.operands) for e in splits["train"]} == {2, 3, 4}


def test_the_ood_split_is_of_another_kind_than_training(splits: dict[str, list[Expression]]) -> None:
    """Every test_ood problem has exactly one operand in 10..30; no training or test_id prompt has one."""
    for e in splits["test_ood"] + splits["sft_wide"]:
        assert sum(10 <= x <= 30 for x in e.operands) == 1 and sum(x > 9 for x in e.operands) == 1
    assert all(max(e.operands) <= 9 for e in splits["train"] + splits["test_id"] + splits["sft"])
    longer = make_splits(world_preset("default", seed=3, ood_kind="longer", ood_operands=[5], **SPLIT_ARGS))
    assert {len(e.operands) for e in longer["test_ood"]} == {5} and "sft_wide" not in longer


def test_splits_are_reproducible_from_the_seed(splits: dict[str, list[Expression]]) -> None:
    again = make_splits(world_preset("default", seed=3, **SPLIT_ARGS))
    other = make_splits(world_preset("default", seed=4, **SPLIT_ARGS))
    assert all([e.text for e in splits[k]] == [e.text for e in again[k]] for k in splits)
    assert [e.text for e in splits["train"]] != [e.text for e in other["train"]]


def test_every_reference_solution_of_every_style_verifies(splits: dict[str, list[Expression]]) -> None:
    exprs = splits["train"] + splits["test_id"] + splits["test_ood"]
    answers = [str(evaluate(e)) for e in exprs]
    for style, render in STYLES.items():
        solutions = [render(e) for e in exprs]
        assert math_answer_reward(prompts=[""] * len(exprs), completions=solutions,
                                  answer=answers) == [1.0] * len(exprs), style


def test_styles_differ_textually(splits: dict[str, list[Expression]]) -> None:
    for e in splits["test_ood"]:
        assert len({render(e) for render in STYLES.values()}) == len(STYLES)


def test_rows_have_the_dataset_columns(splits: dict[str, list[Expression]]) -> None:
    row = rows_for(splits["test_id"][:1], "test_id")[0]
    assert {"prompt", "answer", "solution", "hint", "style", "split"} <= set(row)
    assert row["prompt"].endswith("\n") and row["split"] == "test_id"
    assert row["solution"].endswith(f"{{{row['answer']}}}")


def test_intermediate_values_stay_in_range() -> None:
    rng = random.Random(0)
    for _ in range(200):
        expr = sample_expression(rng, 4, 9, "+-*", 99)
        assert 0 <= evaluate(expr) <= 99


def test_tokenizer_round_trips_every_problem_and_solution(splits: dict[str, list[Expression]], tmp_path) -> None:
    from transformers import AutoTokenizer
    build_tokenizer().save_pretrained(tmp_path)
    tok = AutoTokenizer.from_pretrained(tmp_path)
    assert (tok.pad_token_id, tok.bos_token_id, tok.eos_token_id) == (0, 1, 2)
    texts = [row[c] for row in rows_for(splits["train"] + splits["test_ood"], "x")
             for c in ("prompt", "solution", "hint")]
    texts += [render(e) for e in splits["test_ood"] for render in STYLES.values()]
    ids = tok(texts)["input_ids"]
    assert all(seq[0] == tok.bos_token_id and tok.unk_token_id not in seq for seq in ids)
    assert tok.batch_decode(ids, skip_special_tokens=True) == texts


def test_unknown_style_or_preset_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="unknown style 'poetry'"):
        world_preset("default", teacher_styles=["poetry"])
    with pytest.raises(ValueError, match="unknown world size 'huge'"):
        world_preset("huge")


def _world_files(root: Path, cfg: WorldConfig, splits: dict[str, list[Expression]]) -> Path:
    """A world folder's manifest and data splits (no models: the target set needs neither)."""
    (root / "data").mkdir(parents=True)
    (root / "world.json").write_text(json.dumps({"config": cfg.model_dump(mode="json")}))
    for split in ("train", "test_id", "test_ood"):
        write_jsonl(root / "data" / f"{split}.jsonl", rows_for(splits[split], split))
    return root


def test_the_target_class_is_held_out_and_of_the_operand_counts_the_student_never_saw(tmp_path: Path) -> None:
    cfg = world_preset("default", seed=3, **SPLIT_ARGS)
    splits = make_splits(cfg)
    world = _world_files(tmp_path / "w", cfg, splits)
    assert target_operands(cfg) == [4]  # training draws 2, 3 and 4 operands; the student's SFT only 2 and 3
    rows = target_rows(world, 50)
    taken = {e.text for split in ("train", "test_id", "test_ood") for e in splits[split]}
    assert len(rows) == 50 and len({r["prompt"] for r in rows}) == 50
    assert all(r["n_operands"] == 4 and r["split"] == "target" and r["prompt"].strip() not in taken for r in rows)
    assert math_answer_reward(prompts=[r["prompt"] for r in rows], completions=[r["solution"] for r in rows],
                              answer=[r["answer"] for r in rows]) == [1.0] * len(rows)
    assert target_rows(world, 50) == rows  # the same draw on every call (and machine: a str seed)

    covered = _world_files(tmp_path / "all", cfg.model_copy(update={"student_operands": [2, 3, 4]}), splits)
    assert target_rows(covered, 5) == []  # a student fine-tuned on every class: no target class


def test_the_validation_set_follows_the_training_split_and_holds_no_other_problem(tmp_path: Path) -> None:
    cfg = world_preset("default", seed=3, **SPLIT_ARGS)
    splits = make_splits(cfg)
    world = _world_files(tmp_path / "w", cfg, splits)
    target = target_rows(world, 20)
    rows = validation_rows(world, 31, [3, 4], target)
    train = Counter(len(e.operands) for e in splits["train"])
    expected = {n: 31 * train[n] / (train[3] + train[4]) for n in (3, 4)}  # each count in its training share
    drawn = Counter(r["n_operands"] for r in rows)
    assert sum(drawn.values()) == 31 and set(drawn) == {3, 4}
    assert all(abs(drawn[n] - expected[n]) < 1 for n in (3, 4))  # largest remainders: within one problem
    taken = {e.text for split in ("train", "test_id", "test_ood") for e in splits[split]}
    taken |= {r["prompt"].strip() for r in target}
    assert len({r["prompt"] for r in rows}) == 31
    assert all(r["split"] == "validation" and r["prompt"].strip() not in taken for r in rows)
    assert validation_rows(world, 31, [3, 4], target) == rows  # the same draw on every call
    with pytest.raises(ValueError, match="no problem of \\[7\\] operands"):
        validation_rows(world, 5, [7], target)
