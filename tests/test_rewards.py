"""The math reward on correct, wrong, malformed and hostile outputs; the format reward; TRL's calling convention."""

import sys
import threading
import time
import types

import pytest

from guidedrl.config import RewardSpec
from guidedrl.rewards import (
    VERIFY_TIMEOUT_S,
    Reward,
    _Verifier,
    call_reward,
    count_boxed,
    extract_boxed,
    format_reward,
    last_boxed_span,
    math_answer_reward,
)


def reward(text: str, answer: str) -> float:
    return math_answer_reward(prompts=["p"], completions=[text], answer=[answer])[0]


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
    assert math_answer_reward(prompts=["a", "b"], completions=completions, answer=["5", "5"]) == [1.0, 0.0]


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


def test_a_cold_worker_gets_its_start_up_and_then_only_the_timeout() -> None:
    """After one hostile answer kills the worker, the next hostile answer (on a fresh worker) costs at most the
    worker's start-up, measured here, plus the timeout: the budget starts when the worker says it is ready."""
    verifier = _Verifier()
    start = time.monotonic()
    assert verifier.equal("1", "\\frac{2}{2}", VERIFY_TIMEOUT_S)
    startup = time.monotonic() - start  # a cold start and one easy check
    for hostile in ("9^{9^{9^{9}}}", "10^{10^{10^{10}}}"):
        start = time.monotonic()
        assert not verifier.equal("3", hostile, VERIFY_TIMEOUT_S)
        assert time.monotonic() - start < 1.5 * startup + VERIFY_TIMEOUT_S + 1.0
    assert verifier.equal("3", "\\frac{6}{2}", VERIFY_TIMEOUT_S)


def test_works_off_the_main_thread() -> None:
    out: list[list[float]] = []
    thread = threading.Thread(target=lambda: out.append(reward("\\boxed{\\frac{12}{4}}", "3")))
    thread.start()
    thread.join(timeout=30)
    assert out == [1.0]


def test_boxed_helpers() -> None:
    text = "a \\boxed{1} b \\boxed{x{y}z} c"
    assert count_boxed(text) == 2
    assert extract_boxed(text) == "x{y}z"
    start, end = last_boxed_span(text)
    assert text[start:end] == "x{y}z"
    assert last_boxed_span("no box") is None


def test_format_reward_wants_exactly_one_box() -> None:
    assert format_reward(prompts=["p"] * 3, completions=["\\boxed{1}", "\\boxed{1}\\boxed{2}", "1"]) == [1.0, 0.0, 0.0]


def test_the_run_reward_sums_weighted_parts_and_reports_each() -> None:
    fn = Reward([RewardSpec(name="math_answer"), RewardSpec(name="format", weight=0.5)])
    rows = [{"prompt": "p", "answer": "4"}, {"prompt": "q", "answer": "4"}]
    rewards, stats = fn(rows, ["\\boxed{4}", "\\boxed{5}\\boxed{4}"])
    assert rewards.tolist() == [1.5, 1.0]
    assert stats == {"rewards/math_answer": 1.0, "rewards/format": 0.5}


def test_length_mismatch_is_an_error() -> None:
    with pytest.raises(ValueError, match="2 completions but 1 answers"):
        math_answer_reward(prompts=["p", "q"], completions=["a", "b"], answer=["1"])


def _plugin(**functions) -> str:
    """A module of reward functions importable by name (as a user's package would be)."""
    module = types.ModuleType("user_rewards")
    module.__dict__.update(functions)
    sys.modules["user_rewards"] = module
    return "user_rewards"


def test_rewards_are_called_by_keyword_with_every_column_as_trl_does() -> None:
    seen = {}

    def spy(prompts, completions, completion_ids, trainer_state, solution, **kwargs):  # a TRL-style signature
        seen.update(prompts=prompts, completions=completions, ids=completion_ids, solution=solution,
                    step=trainer_state.global_step, extra=sorted(kwargs))
        return [1.0 if c[0]["content"] == s else 0.0 for c, s in zip(completions, solution)]

    rows = [{"prompt": [{"role": "user", "content": "1+1?"}], "answer": "2", "solution": "2", "level": 1}]
    assert call_reward(spy, rows, ["2"], completion_ids=[[5, 2]]) == [1.0]
    assert seen["completions"] == [[{"role": "assistant", "content": "2"}]]  # message lists for chat prompts
    assert seen["ids"] == [[5, 2]] and seen["solution"] == ["2"] and seen["extra"] == ["answer", "level"]
    assert seen["step"] == 0


def test_none_is_not_counted_and_import_paths_resolve() -> None:
    module = _plugin(half=lambda completions, **kw: [None if "skip" in c else 0.5 for c in completions])
    fn = Reward([RewardSpec(name=f"{module}:half", weight=2.0), RewardSpec(name="format")])
    rewards, stats = fn([{"prompt": "p", "answer": "1"}] * 2, ["\\boxed{1}", "skip \\boxed{1}"])
    assert rewards.tolist() == [2.0, 1.0]  # the None of the second row is left out of its sum
    assert stats[f"rewards/{module}:half"] == 0.5  # the mean over the rows it applied to


def test_unknown_rewards_are_config_errors() -> None:
    with pytest.raises(ValueError, match="unknown reward 'math_anwser' \\(did you mean 'math_answer'\\?\\)"):
        RewardSpec(name="math_anwser")
    with pytest.raises(ValueError, match="cannot import reward 'no_such_module:f'"):
        RewardSpec(name="no_such_module:f")
