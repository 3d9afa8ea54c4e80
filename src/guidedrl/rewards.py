"""Verifiable rewards with TRL's signature ``f(prompts, completions, **columns) -> list[float]``.

Model outputs are untrusted text. The answer is the content of the last ``\\boxed{}``; integers are
compared directly, anything else goes to math-verify in a separate worker process (:mod:`guidedrl.verify_worker`) that is killed
when one check runs past its time budget, so a hostile output costs at most that budget and 0 reward.
"""

from __future__ import annotations

import json
import re
import select
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence
from typing import Any

RewardFn = Callable[..., list[float]]

BOXED = "\\boxed{"
MAX_ANSWER_CHARS = 256  # a boxed answer longer than this is not an answer to a math problem: reward 0
VERIFY_TIMEOUT_S = 2.0  # wall-clock budget of one math-verify comparison
_INT = re.compile(r"[+-]?\d+")


_BRACE_OR_BOX = re.compile(r"\\boxed\{|[{}]")


def boxed_spans(text: str) -> list[tuple[int, int]]:
    """Character spans (start, end) of the contents of every balanced ``\\boxed{...}``, in order of their
    opening; one linear pass with a brace stack, so hostile nesting costs no more than its length."""
    spans: list[tuple[int, int]] = []
    stack: list[int] = []  # content start of each open brace, negated when it is not a \boxed one
    for m in _BRACE_OR_BOX.finditer(text):
        if m.group() == "}":
            if stack:
                opened = stack.pop()
                if opened > 0:
                    spans.append((opened, m.start()))
        else:
            stack.append(m.end() if m.group() == BOXED else -1)
    return sorted(spans)


def last_boxed_span(text: str) -> tuple[int, int] | None:
    """Character span (start, end) of the content of the last-opened balanced ``\\boxed{}``; None if none."""
    spans = boxed_spans(text)
    return spans[-1] if spans else None


def extract_boxed(text: str) -> str | None:
    """The content of the last balanced ``\\boxed{}``, stripped; None when there is none."""
    span = last_boxed_span(text)
    return None if span is None else text[span[0]:span[1]].strip()


def count_boxed(text: str) -> int:
    """How many balanced ``\\boxed{}`` blocks the text holds."""
    return len(boxed_spans(text))


def completion_text(completion: Any) -> str:
    """The text of a completion: a string, or TRL's conversational form (the last message's content)."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, dict):
        return str(completion.get("content", ""))
    if isinstance(completion, Sequence) and completion:
        return completion_text(completion[-1])
    return ""


class _Verifier:
    """One math-verify worker process (``python -m guidedrl.verify_worker``), shared by all threads,
    killed when a check overruns its budget and restarted on the next call."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[str] | None = None
        self._warm = False  # whether the running worker has answered once (its imports are done)

    def _start(self) -> subprocess.Popen[str]:
        if self._proc is None or self._proc.poll() is not None:
            self._proc = subprocess.Popen([sys.executable, "-m", "guidedrl.verify_worker"], stdin=subprocess.PIPE,
                                          stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, bufsize=1)
            self._warm = False
        return self._proc

    def _kill(self) -> None:
        if self._proc is not None:
            self._proc.kill()
            self._proc.wait()
        self._proc = None

    def equal(self, gold: str, pred: str, timeout: float) -> bool:
        """Whether math-verify finds ``pred`` equal to ``gold`` within ``timeout`` seconds (False past it).

        The first call to a fresh worker also waits for its start-up (importing sympy), outside the budget.
        """
        with self._lock:
            proc = self._start()
            assert proc.stdin is not None and proc.stdout is not None
            try:
                proc.stdin.write(json.dumps([gold, pred]) + "\n")
                proc.stdin.flush()
                ready, _, _ = select.select([proc.stdout], [], [], timeout + (0.0 if self._warm else 60.0))
                if ready:
                    line = proc.stdout.readline()
                    if line:
                        self._warm = True
                        return line.strip() == "true"
            except OSError:
                pass
            self._kill()
            return False


_VERIFIER = _Verifier()


def answers_match(gold: str, pred: str | None, timeout: float = VERIFY_TIMEOUT_S) -> bool:
    """Whether a predicted answer equals the gold one: exact integers directly, else math-verify, bounded."""
    if pred is None or not pred or len(pred) > MAX_ANSWER_CHARS:
        return False
    gold, pred = str(gold).strip(), pred.strip()
    if _INT.fullmatch(gold) and _INT.fullmatch(pred):
        return int(gold) == int(pred)
    if gold == pred:
        return True
    return _VERIFIER.equal(gold, pred, timeout)


def math_answer_reward(prompts: Sequence[Any], completions: Sequence[Any], answer: Sequence[Any],
                       **columns: Any) -> list[float]:
    """1.0 where the last ``\\boxed{}`` of a completion equals the row's ``answer``, else 0.0. Never raises."""
    if len(completions) != len(answer):
        raise ValueError(f"math_answer_reward: {len(completions)} completions but {len(answer)} answers")
    return [float(answers_match(str(gold), extract_boxed(completion_text(c)))) for c, gold in zip(completions, answer)]


def format_reward(prompts: Sequence[Any], completions: Sequence[Any], **columns: Any) -> list[float]:
    """1.0 where a completion holds exactly one balanced ``\\boxed{}``, else 0.0."""
    return [float(count_boxed(completion_text(c)) == 1) for c in completions]


REWARDS: dict[str, RewardFn] = {"math_answer": math_answer_reward, "format": format_reward}


def weighted_reward(parts: Sequence[tuple[RewardFn, float]]) -> RewardFn:
    """One reward function that returns the weighted sum of ``parts``' rewards, row by row."""
    if not parts:
        raise ValueError("weighted_reward needs at least one reward function")

    def reward(prompts: Sequence[Any], completions: Sequence[Any], **columns: Any) -> list[float]:
        total = [0.0] * len(completions)
        for fn, weight in parts:
            for i, value in enumerate(fn(prompts, completions, **columns)):
                total[i] += weight * float(value)
        return total

    return reward
