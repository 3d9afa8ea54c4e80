"""The multiple-choice verifier on hand-written completions (hostile ones included), and the seeded option order."""

from __future__ import annotations

import time

import pytest

from guidedrl.choices import (
    INSTRUCTION,
    LETTERS,
    extract_choice,
    multiple_choice_reward,
    read_letter,
    render_choices,
    shuffle_options,
)
from guidedrl.registry import REWARDS
from guidedrl.rewards import call_reward

READS = [
    ("so the answer is \\boxed{B}", "B"),
    ("\\boxed{(C)}", "C"),
    ("\\boxed{\\text{D}}", "D"),
    ("\\boxed{\\textbf{(A)}}", "A"),
    ("\\boxed{ E. 42 }", "E"),
    ("\\boxed{J}", "J"),  # MMLU-Pro's tenth option
    ("Thinking...\nAnswer: C", "C"),
    ("**Answer:** (B)", "B"),
    ("The final answer is $D$.", "D"),
    ("the answer is A because it is a gas", "A"),
    ("ANSWER: b", None),  # a lowercase letter is not an option's letter
    ("\\boxed{A} was my first guess.\nAnswer: C", "C"),  # the later of the two
    ("Answer: C\nOn reflection \\boxed{A}", "A"),
    ("The answer is C.\nLet me check the answer again.", "C"),  # an "answer" naming no letter is passed over
    ("\\boxed{All of the above}", None),
    ("\\boxed{AB}", None),
    ("\\boxed{42}", None),
    ("I answered B", None),  # "answered" names no letter
    ("", None),
    ("\\boxed{", None),  # unbalanced: no box
]


@pytest.mark.parametrize(("completion", "letter"), READS)
def test_the_chosen_letter_is_read_from_a_box_or_a_stated_answer(completion: str, letter: str | None) -> None:
    assert extract_choice(completion) == letter


def test_read_letter_accepts_a_letter_standing_alone() -> None:
    assert [read_letter(t) for t in ("B", "(B)", "B.", "B) 42", "**B**", "$B$", "\\mathrm{B}")] == ["B"] * 7
    assert [read_letter(t) for t in ("Be", "42", "", "b", "(", "\\text{}")] == [None] * 6


def test_the_reward_compares_with_the_gold_letter_by_keyword_as_trl_calls_it() -> None:
    rows = [{"prompt": "q", "answer": "B"}, {"prompt": "q", "answer": "C"}, {"prompt": "q", "answer": " d "}]
    out = call_reward(REWARDS.get("multiple_choice"), rows, ["\\boxed{B}", "Answer: B", "Answer: D"])
    assert out == [1.0, 0.0, 1.0]
    conversational = [{"prompt": [{"role": "user", "content": "q"}], "answer": "A"}]
    assert call_reward(multiple_choice_reward, conversational, ["\\boxed{A}"]) == [1.0]
    with pytest.raises(ValueError, match="2 completions but 1 answers"):
        multiple_choice_reward(prompts=["q", "q"], completions=["A", "B"], answer=["A"])


HOSTILE = [
    "\\boxed{" * 200_000,  # unbalanced nesting: one linear pass over the braces
    "answer" * 200_000,  # an "answer" everywhere, none followed by a letter
    "Answer:" + " " * 1_000_000 + "B",  # the letter far past the window after "answer"
    "{" * 300_000 + "}" * 300_000 + "\\boxed{" + "x" * 1_000 + "}",  # a box far over the answer length limit
    "answer: " + "(" * 500_000,
]


@pytest.mark.parametrize("completion", HOSTILE, ids=["nested", "answers", "far", "long box", "parens"])
def test_hostile_completions_cost_linear_time_and_score_zero(completion: str) -> None:
    start = time.perf_counter()
    assert multiple_choice_reward(prompts=["q"], completions=[completion], answer=["B"]) == [0.0]
    assert time.perf_counter() - start < 5.0  # about 0.1 s each here; quadratic scans would take hours


def test_the_option_order_is_seeded_per_problem_and_the_gold_letter_follows_the_correct_option() -> None:
    options = ["right", "wrong 1", "wrong 2", "wrong 3"]
    orders = {}
    for i in range(40):
        shuffled, letter = shuffle_options(options, 0, f"question {i}")
        assert sorted(shuffled) == sorted(options)
        assert shuffled[LETTERS.index(letter)] == "right"
        assert shuffle_options(options, 0, f"question {i}") == (shuffled, letter)  # the same on every call
        orders[i] = letter
    assert set(orders.values()) == set("ABCD")  # the correct option is not always first (GPQA's files)
    with pytest.raises(ValueError, match="2 to 26 options"):
        shuffle_options(["only"], 0, "q")
    with pytest.raises(ValueError, match="index 4"):
        shuffle_options(options, 4, "q")


def test_render_letters_the_options_in_order() -> None:
    assert render_choices(" Which? ", ["x", " y "]) == f"Which?\n\nA. x\nB. y\n\n{INSTRUCTION}"
