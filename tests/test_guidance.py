"""Guidance: the trigger, comprehension-based selection, teacher insertion and hinted re-rolls."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from guidedrl.batch import RolloutBatch
from guidedrl.config import GuidanceConfig, RewardSpec
from guidedrl.data import encode_prompts, with_hint
from guidedrl.guidance.base import GuidanceContext
from guidedrl.guidance.hint import HintGuidance
from guidedrl.guidance.selection import answer_slot_tokens, comprehension_scores, rank_candidates
from guidedrl.guidance.teacher import TeacherGuidance
from guidedrl.guidance.trigger import guidance_demand
from guidedrl.rewards import Reward
from guidedrl.rollout.engine import SamplingParams
from guidedrl.rollout.forward import response_logprobs
from guidedrl.rollout.hf_engine import HFEngine
from guidedrl.rows import RowKind
from guidedrl.teachers.pool import OfflinePool
from scripted import build_tiny_world


def test_trigger_fires_exactly_on_all_wrong_groups() -> None:
    correct = torch.tensor([False] * 4 + [True, False, False, False] + [False] * 4)
    groups = torch.tensor([0, 2, 0, 2, 1, 1, 1, 1, 0, 2, 0, 2])  # non-contiguous groups
    assert guidance_demand(correct, groups, "all_wrong", 2, 4).tolist() == [2, 0, 2]
    assert guidance_demand(correct, groups, "always", 1, 4).tolist() == [1, 1, 1]


def test_adaptive_k_aims_at_one_correct_per_wrong() -> None:
    groups = torch.arange(3).repeat_interleave(8)
    correct = torch.zeros(24, dtype=torch.bool)
    correct[8] = True  # group 1: one of eight correct
    correct[16:20] = True  # group 2: half correct
    assert guidance_demand(correct, groups, "adaptive_k", 2, 4).tolist() == [4, 3, 0]
    with pytest.raises(ValueError, match="unknown guidance trigger"):
        guidance_demand(correct, groups, "sometimes", 2, 4)


def test_comprehension_score_is_the_mean_answer_token_probability() -> None:
    logp = torch.log(torch.tensor([[0.9, 0.5, 0.25], [0.1, 0.2, 0.3]]))
    mask = torch.tensor([[0.0, 1.0, 1.0], [0.0, 0.0, 0.0]])
    assert comprehension_scores(logp, mask).tolist() == pytest.approx([0.375, 0.0])


def test_ranking_picks_the_best_and_keeps_pool_order_on_ties() -> None:
    assert rank_candidates([0.2, 0.7, 0.5], [1, 1, 1], 0.1, 2) == [1, 2]
    assert rank_candidates([0.5, 0.5, 0.5], [1, 0, 1], 0.1, 2) == [0, 2]  # format breaks the tie first
    assert rank_candidates([0.3, 0.3], [1, 1], 0.1, 1) == [0]


def test_answer_slot_holds_the_ground_truth(tmp_path: Path) -> None:
    from guidedrl.world.tokenizer import build_tokenizer
    tok = build_tokenizer()
    ids, positions = answer_slot_tokens(tok, "4*8=32\n\\boxed{31}", "32")
    assert tok.decode(ids) == "4*8=32\n\\boxed{32}"
    assert [tok.decode([ids[p]]) for p in positions] == ["3", "2"]
    assert answer_slot_tokens(tok, "no answer here", "3") is None


@pytest.fixture(scope="module")
def tiny_world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_world(tmp_path_factory.mktemp("tiny"), ROWS)


@pytest.fixture()
def student(tiny_world: Path):
    tok = AutoTokenizer.from_pretrained(tiny_world / "models" / "student")
    model = AutoModelForCausalLM.from_pretrained(tiny_world / "models" / "student").eval()
    engine = HFEngine(model, tok.pad_token_id, tok.eos_token_id)
    ctx = GuidanceContext(policy=model, tokenizer=tok, engine=engine, reward=Reward([RewardSpec(name="math_answer")]),
                          correct_threshold=0.6, group_size=4, sampling=SamplingParams(1.0, 1.0, 40), seed=0)
    return tok, engine, ctx


ROWS = [
    {"prompt": "7+4*8\n", "answer": "39", "hint": "first 4*8=32", "teacher_solutions": [
        {"teacher": "a", "text": "4*8=32\n7+32=39\n\\boxed{39}"},
        {"teacher": "b", "text": "4*8=32\n7+32=38\n\\boxed{38}"},  # wrong: must never be inserted
        {"teacher": "b", "text": "4 times 8 is 32\n7 plus 32 is 39\nso \\boxed{39}"}]},
    {"prompt": "2+3\n", "answer": "5", "hint": "first 2+3=5", "teacher_solutions": [
        {"teacher": "a", "text": "2+3=5\n\\boxed{5}"}]},
]


def _batch(tok, engine, correct: list[bool]) -> RolloutBatch:
    rollouts = engine.generate(encode_prompts(tok, [r["prompt"] for r in ROWS]), 4,
                               SamplingParams(temperature=1.0, max_new_tokens=40, seed=0))
    rewards = torch.tensor([float(c) for c in correct])
    return RolloutBatch.on_policy(rollouts, rewards, rewards > 0.6)


def test_teacher_guidance_replaces_failed_rows_with_verified_solutions_only(student) -> None:
    tok, engine, ctx = student
    batch = _batch(tok, engine, [False] * 4 + [True, False, False, False])
    guided, metrics = TeacherGuidance(GuidanceConfig(ladder=["teacher"]), ctx, [OfflinePool()])(batch, ROWS, 0)
    assert guided.size == batch.size and metrics["guidance/teacher/rate"] == 0.5
    teacher_rows = guided.rows_of(RowKind.TEACHER).nonzero().flatten().tolist()
    assert len(teacher_rows) == 2 and set(guided.group_index[teacher_rows].tolist()) == {0}
    texts = guided.rollouts.select(teacher_rows).response_texts(tok)
    assert sorted(texts) == sorted([ROWS[0]["teacher_solutions"][0]["text"], ROWS[0]["teacher_solutions"][2]["text"]])
    assert guided.rewards[teacher_rows].tolist() == [1.0, 1.0]
    assert guided.rollouts.behaviour_logp[teacher_rows].abs().sum() == 0
    # the solved group is left exactly as it was
    def untouched(b: RolloutBatch) -> list[str]:
        return sorted(b.rollouts.select((b.group_index == 1).nonzero().flatten()).response_texts(tok))

    assert untouched(guided) == untouched(batch)
    assert metrics["guidance/teacher/selected/a"] + metrics["guidance/teacher/selected/b"] == 2


def test_selection_prefers_the_solution_the_student_comprehends(student) -> None:
    tok, engine, ctx = student
    strategy = TeacherGuidance(GuidanceConfig(ladder=["teacher"], num_guidance=1), ctx, [OfflinePool()])
    prompt = encode_prompts(tok, [ROWS[0]["prompt"]])[0]
    texts = [s["text"] for s in ROWS[0]["teacher_solutions"]]
    scores = strategy.comprehension([prompt] * 3, texts, ["39"] * 3)
    assert all(0.0 < s < 1.0 for s in scores)
    batch = _batch(tok, engine, [False] * 8)
    guided, metrics = strategy(batch, ROWS, 0)
    picked = guided.rollouts.select(guided.rows_of(RowKind.TEACHER).nonzero().flatten()).response_texts(tok)
    best_correct = max([0, 2], key=lambda i: scores[i])
    assert texts[best_correct] in picked
    # the one rejected candidate is the worse verified solution of the first problem (the second has one only)
    assert metrics["guidance/teacher/score_rejected"] == pytest.approx(min(scores[0], scores[2]))


def test_an_empty_or_all_wrong_pool_leaves_the_group_on_policy_with_a_warning(student, caplog) -> None:
    tok, engine, ctx = student
    rows = [dict(r, teacher_solutions=[{"teacher": "b", "text": "\\boxed{0}"}]) for r in ROWS]
    batch = _batch(tok, engine, [False] * 8)
    with caplog.at_level(logging.WARNING):
        guided, metrics = TeacherGuidance(GuidanceConfig(ladder=["teacher"]), ctx, [OfflinePool()])(batch, rows, 3)
    assert not guided.rows_of(RowKind.TEACHER).any() and guided.size == batch.size
    assert metrics["guidance/teacher/empty_pool"] == 1.0
    assert "no verified teacher solution" in caplog.text


def test_hinted_rows_are_trained_without_the_hint_and_keep_hinted_behaviour_logprobs(student) -> None:
    tok, engine, ctx = student
    cfg = GuidanceConfig(ladder=["hint"])
    batch = _batch(tok, engine, [False] * 4 + [True] * 4)
    guided, metrics = HintGuidance(cfg, ctx, [])(batch, ROWS, 0)
    hinted = guided.rows_of(RowKind.HINTED).nonzero().flatten()
    assert len(hinted) == 4 and metrics["guidance/hint/rate"] == 0.5
    assert not (guided.group_index[hinted] - 0).any()
    assert guided.size == 8  # the failed group was replaced, not extended
    sub = guided.rollouts.select(hinted).trimmed()
    inputs = tok.batch_decode(sub.input_ids, skip_special_tokens=True)
    assert all("hint" not in text for text in inputs)
    assert all(text.startswith(ROWS[0]["prompt"]) for text in inputs)
    # behaviour log-probs are those of the hinted context, not of the hint-free one
    hinted_prompt = encode_prompts(tok, [with_hint(ROWS[0]["prompt"], ROWS[0]["hint"], cfg.hint_template)])[0]
    from guidedrl.rollout.engine import Rollouts
    mask = sub.response_mask.bool()
    responses = [sub.response_ids[i][mask[i]].tolist() for i in range(4)]
    ctx_hint = Rollouts.from_token_lists([hinted_prompt] * 4, responses, tok.pad_token_id, tok.eos_token_id)
    with torch.no_grad():
        with_h = response_logprobs(ctx.policy, ctx_hint.input_ids, ctx_hint.attention_mask, ctx_hint.prompt_width).logp
        without = response_logprobs(ctx.policy, sub.input_ids, sub.attention_mask, sub.prompt_width).logp
    m = ctx_hint.response_mask.bool()
    assert torch.allclose(sub.behaviour_logp[m], with_h[m], atol=1e-4)
    assert not torch.allclose(without[m], with_h[m], atol=1e-3)


def test_with_hint_fills_the_template_and_the_last_message() -> None:
    assert with_hint("1+2\n", "first 1+2=3", "{prompt}hint: {hint}\n") == "1+2\nhint: first 1+2=3\n"
    chat = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "1+2?"}]
    assert with_hint(chat, "add", "{prompt} (hint: {hint})")[-1]["content"] == "1+2? (hint: add)"
    assert chat[-1]["content"] == "1+2?"
