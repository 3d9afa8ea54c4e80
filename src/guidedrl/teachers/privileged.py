"""The privileged context of a self-teacher (on-policy self-distillation): the student's own rollouts, each with
its row's hint or reference solution written into the prompt the way Guide inserts hints, the response tokens
unchanged, so the teacher's predictions line up with the student's positions."""

from __future__ import annotations

from transformers import PreTrainedTokenizerBase

from guidedrl.data import chat_frame, encode_prompts, with_hint
from guidedrl.rollout.engine import Rollouts


def privileged_text(row: dict, field: str) -> str | None:
    """What the teacher sees that the student does not: the row's hint, or its reference solution (a ``solution``
    column, else the first of its ``teacher_solutions``); None when the row has none."""
    if field == "hint":
        return row.get("hint") or None
    if row.get("solution"):
        return str(row["solution"])
    solutions = row.get("teacher_solutions") or []
    return solutions[0]["text"] if solutions else None


def with_privileged_context(rollouts: Rollouts, rows: list[dict], field: str, template: str,
                            tokenizer: PreTrainedTokenizerBase) -> tuple[Rollouts, float]:
    """``rollouts`` with each row's prompt replaced by the same prompt with its privileged text (``rows[i]`` is
    row i's data), and the share of rows that had none (they keep their plain prompt)."""
    frame = chat_frame(tokenizer)
    texts = [privileged_text(row, field) for row in rows]
    prompts = encode_prompts(tokenizer, [row["prompt"] if text is None else with_hint(row["prompt"], text, template,
                                                                                      frame)
                                         for row, text in zip(rows, texts)])
    mask = rollouts.response_mask.bool()
    responses = [rollouts.response_ids[i][mask[i]].tolist() for i in range(rollouts.size)]
    rebuilt = Rollouts.from_token_lists(prompts, responses, tokenizer.pad_token_id, tokenizer.eos_token_id,
                                        prompt_index=rollouts.prompt_index.tolist())
    return rebuilt, sum(text is None for text in texts) / max(len(texts), 1)
