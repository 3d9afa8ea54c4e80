"""The math reward on correct, wrong, malformed and hostile outputs; the format reward; weighting."""

import threading
import time

import pytest

from guidedrl.rewards import (VERIFY_TIMEOUT_S, count_boxed, extract_boxed, format_reward, last_boxed_span,
                              math_answer_reward, weighted_reward)


def reward(text: str, answer: str) -> float:
    return math_answer_reward(["p"], [text], answer=[answer])[0]


@pytest.mark.parametrize("text, answer, expected", [
    ("2+3*4 = 2+12 = 14 \\boxed{14}", "14", 1.0),
    ("\\boxed{15}", "14", 0.0),
    ("the answer is 14", "14", 0.0),  # no \boxed: no answer
    ("\\boxed{-7}", "-7", 1.0),
    ("\\boxed{7}", "-7", 0.0),
    ("first \\boxed{3} then \\boxed{14}", "14", 1.0),  # the last box counts
    ("first \\boxed{14} then \\boxed{3}", "14", 0.0),
    ("\\boxed{{14}}", "14", 1.0),  # nested braces
    ("\\boxed{\\frac{6}{2}}", "3", 1.0),  # a LaTeX fraction equal to an integer
    ("\\boxed{\\frac{7}{2}}", "3", 0.0),
    ("\\boxed{14", "14", 0.0),  # never closed
    ("", "14", 0.0),
])
def test_math_answer_reward(text: str, answer: str, expected: float) -> None:
    assert reward(text, answer) == expected


def test_conversational_completions_are_read() -> None:
    completions = [[{"role": "assistant", "content": "\\boxed{5}"}], [{"role": "assistant", "content": "\\boxed{6}"}]]
    assert math_answer_reward(["a", "b"], completions, answer=["5", "5"]) == [1.0, 0.0]


@pytest.mark.parametrize("text", [
    "\\boxed{9^{9^{9^{9}}}}",
    "\\boxed{" + "(" * 50_000 + "1" + ")" * 50_000 + "}",
    "9" * 100_000,
    "\\boxed{" * 20_000,
])
def test_hostile_output_gets_zero_within_the_timeout(text: str) -> None:
    reward("\\boxed{\\frac{2}{2}}", "1")  # start the worker, so its start-up is not timed
    start = time.monotonic()
    assert reward(text, "3") == 0.0
    assert time.monotonic() - start < VERIFY_TIMEOUT_S + 1.5
    assert reward("\\boxed{\\frac{6}{2}}", "3") == 1.0  # the verifier recovers after a kill


def test_works_off_the_main_thread() -> None:
    out: list[list[float]] = []
    thread = threading.Thread(target=lambda: out.append(math_answer_reward(["p"], ["\\boxed{\\frac{12}{4}}"], answer=["3"])))
    thread.start()
    thread.join(timeout=30)
    assert out == [[1.0]]


def test_boxed_helpers() -> None:
    text = "a \\boxed{1} b \\boxed{x{y}z} c"
    assert count_boxed(text) == 2
    assert extract_boxed(text) == "x{y}z"
    start, end = last_boxed_span(text)
    assert text[start:end] == "x{y}z"
    assert last_boxed_span("no box") is None


def test_format_reward_wants_exactly_one_box() -> None:
    assert format_reward(["p"] * 3, ["\\boxed{1}", "\\boxed{1}\\boxed{2}", "1"]) == [1.0, 0.0, 0.0]


def test_weighted_reward_sums_parts() -> None:
    fn = weighted_reward([(math_answer_reward, 1.0), (format_reward, 0.5)])
    assert fn(["p", "q"], ["\\boxed{4}", "\\boxed{5}\\boxed{4}"], answer=["4", "4"]) == [1.5, 1.0]


def test_length_mismatch_is_an_error() -> None:
    with pytest.raises(ValueError, match="2 completions but 1 answers"):
        math_answer_reward(["p", "q"], ["a", "b"], answer=["1"])
