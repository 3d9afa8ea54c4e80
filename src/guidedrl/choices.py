"""Multiple-choice questions: options shown as letters in a seeded order of their own per problem, and the
verifier that reads the chosen letter from a completion (registered as the reward ``multiple_choice``).

The order: a problem's options are shuffled once, with a seed drawn from its question's text, so the correct
option is not always where the source file keeps it (GPQA lists it first) and every model and every run sees
the same order, as when the papers shuffled their evaluation files once (LUFFY's out-of-distribution sets).

The reading: the content of the last balanced ``\\boxed{}`` when it reads as one letter, or the letter after
the last "Answer:" / "answer is" that has one, whichever comes later in the completion. Model outputs are
untrusted text: nothing is evaluated, the boxes are found in one linear pass and each "answer" looks at a
bounded window after it, so a hostile completion costs time linear in its length.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

from guidedrl.registry import REWARDS
from guidedrl.rewards import MAX_ANSWER_CHARS, completion_text, last_boxed_span
from guidedrl.seeding import derive_seed, text_index

LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
SHUFFLE_SEED = 0  # the one seed of every problem's option order: the order is a property of the benchmark
INSTRUCTION = "Answer with the letter of the correct option, as \\boxed{X}."
_WRAPPERS = ("\\text{", "\\textbf{", "\\mathrm{", "\\mathbf{", "\\texttt{")
_AFTER_LETTER = ".):;,]}$*"  # what may follow a letter that stands alone ("B.", "(B)", "\text{B}", "**B**")
_WINDOW = 80  # characters read after an "answer"


def shuffle_options(options: Sequence[str], correct: int, key: str) -> tuple[list[str], str]:
    """``options`` in the seeded order of the problem whose question is ``key``, and the correct one's letter."""
    if not 2 <= len(options) <= len(LETTERS):
        raise ValueError(f"a multiple-choice question needs 2 to {len(LETTERS)} options, got {len(options)}")
    if not 0 <= correct < len(options):
        raise ValueError(f"the correct option's index {correct} is not one of the {len(options)} options")
    order = list(range(len(options)))
    random.Random(derive_seed(SHUFFLE_SEED, "choices", text_index(key))).shuffle(order)
    return [options[i] for i in order], LETTERS[order.index(correct)]


def render_choices(question: str, options: Sequence[str]) -> str:
    """The question, its options as ``A. …`` lines, and how to answer."""
    lines = "\n".join(f"{LETTERS[i]}. {option.strip()}" for i, option in enumerate(options))
    return f"{question.strip()}\n\n{lines}\n\n{INSTRUCTION}"


def read_letter(text: str) -> str | None:
    """The letter a short answer names ("B", "(B)", "B.", "B) 42", "\\text{B}", "**B**", "$B$"); None when it
    does not start with one letter standing alone ("All of them", "42", "AB")."""
    text = text.strip()
    for wrapper in _WRAPPERS:
        if text.startswith(wrapper):
            text = text[len(wrapper):]
            break
    text = text.lstrip("$*( \t")
    if not text or text[0] not in LETTERS:
        return None
    after = text[1:2]
    return text[0] if not after or after in _AFTER_LETTER or after.isspace() else None


def _boxed_letter(text: str) -> tuple[int, str] | None:
    """(position, letter) of the last ``\\boxed{}`` when its content is one letter."""
    span = last_boxed_span(text)
    if span is None or span[1] - span[0] > MAX_ANSWER_CHARS:
        return None
    letter = read_letter(text[span[0]:span[1]])
    return None if letter is None else (span[0], letter)


def _stated_letter(text: str) -> tuple[int, str] | None:
    """(position, letter) of the last "answer" followed by a letter ("Answer: C", "the answer is (C)")."""
    lowered = text.lower()
    at = lowered.rfind("answer")
    while at >= 0:
        rest = text[at + len("answer"):at + len("answer") + _WINDOW]
        if not rest[:1].isalpha():  # "answers", "answered" name no letter
            rest = rest.lstrip(" \t*:")
            if rest[:2].lower() == "is" and not rest[2:3].isalpha():
                rest = rest[2:].lstrip(" \t*:")
            letter = read_letter(rest.split("\n", 1)[0])
            if letter is not None:
                return at, letter
        at = lowered.rfind("answer", 0, at)
    return None


def extract_choice(text: str) -> str | None:
    """The letter a completion chose: the later of its last boxed letter and its last stated answer."""
    found = [hit for hit in (_boxed_letter(text), _stated_letter(text)) if hit is not None]
    return max(found)[1] if found else None


def multiple_choice_reward(prompts: Sequence[Any], completions: Sequence[Any], answer: Sequence[Any],
                           **columns: Any) -> list[float]:
    """1.0 where the letter a completion chose is the row's ``answer`` letter, else 0.0. Never raises."""
    if len(completions) != len(answer):
        raise ValueError(f"multiple_choice_reward: {len(completions)} completions but {len(answer)} answers")
    return [float(extract_choice(completion_text(c)) == str(gold).strip().upper())
            for c, gold in zip(completions, answer)]


REWARDS.register("multiple_choice")(multiple_choice_reward)
