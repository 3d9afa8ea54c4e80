"""Verifiable rewards in TRL's convention, ``f(prompts=, completions=, **columns) -> list[float | None]``.

Model outputs are untrusted text. The answer is the content of the last ``\\boxed{}``; integers are
compared directly, anything else goes to math-verify in a separate worker process
(:mod:`guidedrl.verify_worker`) that is killed when one check runs past its time budget, so a hostile output
costs at most that budget and 0 reward.
"""

from __future__ import annotations

import json
import math
import numbers
import re
import select
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from guidedrl.errors import UserCodeError
from guidedrl.registry import REWARDS

if TYPE_CHECKING:
    from guidedrl.config import RewardSpec

RewardFn = Callable[..., list[float | None]]

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
    """One math-verify worker process (``python -m guidedrl.verify_worker``), shared by all threads, killed
    when a check overruns its budget and restarted on the next call.

    A fresh worker first imports math-verify and runs one check, then writes ``ready``; its start-up gets
    its own allowance (``STARTUP_S``) and every check's budget starts only once the worker is ready.
    """

    STARTUP_S = 60.0

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[str] | None = None

    def _read_line(self, timeout: float) -> str | None:
        """The worker's next line within ``timeout`` seconds, or None (the worker is then killed)."""
        assert self._proc is not None and self._proc.stdout is not None
        ready, _, _ = select.select([self._proc.stdout], [], [], timeout)
        line = self._proc.stdout.readline() if ready else ""
        if not line:
            self._kill()
            return None
        return line.strip()

    def _start(self) -> bool:
        """A running, ready worker (started now if needed); False if it did not get ready in time."""
        if self._proc is not None and self._proc.poll() is None:
            return True
        self._proc = subprocess.Popen([sys.executable, "-m", "guidedrl.verify_worker"], stdin=subprocess.PIPE,
                                      stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, bufsize=1)
        return self._read_line(self.STARTUP_S) == "ready"

    def _kill(self) -> None:
        if self._proc is not None:
            self._proc.kill()
            self._proc.wait()
        self._proc = None

    def equal(self, gold: str, pred: str, timeout: float) -> bool:
        """Whether math-verify finds ``pred`` equal to ``gold`` within ``timeout`` seconds (False past it)."""
        with self._lock:
            if not self._start():
                return False
            assert self._proc is not None and self._proc.stdin is not None
            try:
                self._proc.stdin.write(json.dumps([gold, pred]) + "\n")
                self._proc.stdin.flush()
            except OSError:
                self._kill()
                return False
            return self._read_line(timeout) == "true"


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


REWARDS.register("math_answer")(math_answer_reward)
REWARDS.register("format")(format_reward)


@dataclass(frozen=True)
class RewardState:
    """What a reward function gets as ``trainer_state`` (the attributes of TRL's ``TrainerState`` it reads)."""

    global_step: int = 0
    max_steps: int = 0


EXCLUDED_COLUMNS = ("prompt", "completion", "completion_ids")  # as TRL: not passed on as columns


def call_reward(fn: RewardFn, rows: Sequence[dict], completions: Sequence[str],
                completion_ids: Sequence[Sequence[int]] | None = None, state: RewardState | None = None
                ) -> list[float | None]:
    """``fn`` on completions of ``rows``, called by keyword as TRL does: ``prompts``, ``completions`` (message
    lists for conversational prompts), ``completion_ids``, ``trainer_state`` and every dataset column."""
    prompts = [row["prompt"] for row in rows]
    columns = {k: [row.get(k) for row in rows] for k in rows[0] if k not in EXCLUDED_COLUMNS} if rows else {}
    if prompts and isinstance(prompts[0], list):
        completions = [[{"role": "assistant", "content": c}] for c in completions]
    try:
        values = fn(prompts=prompts, completions=list(completions), completion_ids=completion_ids,
                    trainer_state=state or RewardState(), **columns)
    except Exception as err:  # noqa: BLE001 - the user's code: whatever it raises is reported, naming it
        hint = (" (a reward is called by keyword, as in TRL: f(prompts=, completions=, completion_ids=, "
                "trainer_state=, **columns); give it **kwargs)") if isinstance(err, TypeError) else ""
        raise UserCodeError(f"reward {reward_name(fn)} raised {type(err).__name__}: {err}{hint}") from None
    return checked_rewards(values, fn, prompts)


def reward_name(fn: Callable) -> str:
    """``module:function`` of a reward, as a config names it."""
    return f"{getattr(fn, '__module__', '?')}:{getattr(fn, '__qualname__', fn)}"


def checked_rewards(values: Any, fn: Callable, prompts: Sequence[Any]) -> list[float | None]:
    """A reward function's output, checked once: one finite number (or None: not applicable) per completion, in
    a list, tuple or array; anything else is a :class:`UserCodeError` naming the function and the row."""
    name = reward_name(fn)
    if hasattr(values, "tolist") and not isinstance(values, (list, tuple)):  # a numpy array or a tensor
        values = values.tolist()
    if not isinstance(values, (list, tuple)):
        raise UserCodeError(f"reward {name} returned {type(values).__name__} {_short(values)}, not a list of one "
                            "number (or None) per completion")
    if len(values) != len(prompts):
        raise UserCodeError(f"reward {name} returned {len(values)} values for {len(prompts)} completions")
    for i, value in enumerate(values):
        if value is None:
            continue
        if not isinstance(value, numbers.Real):
            problem = f"{type(value).__name__} {_short(value)}, not a number"
        elif not math.isfinite(float(value)):
            problem = f"{value}, not a finite number"
        else:
            continue
        raise UserCodeError(f"reward {name} returned {problem} for completion {i} (prompt {_short(prompts[i])})")
    return [None if v is None else float(v) for v in values]


def _short(value: Any, limit: int = 60) -> str:
    """A value's repr, cut to ``limit`` characters (a model's output may be long)."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


class Reward:
    """The run's reward: the weighted sum of its functions, a ``None`` (not applicable) not counted, as TRL."""

    def __init__(self, specs: Sequence[RewardSpec]) -> None:
        if not specs:
            raise ValueError("a run needs at least one reward function")
        self.parts = [(spec.name, REWARDS.get(spec.name), spec.weight) for spec in specs]

    def __call__(self, rows: Sequence[dict], completions: Sequence[str],
                 completion_ids: Sequence[Sequence[int]] | None = None, state: RewardState | None = None
                 ) -> tuple[Tensor, dict[str, float]]:
        """Rewards (B float) and each function's mean over the rows it applied to (``rewards/<name>``)."""
        total = [0.0] * len(completions)
        stats: dict[str, float] = {}
        for name, fn, weight in self.parts:
            values = call_reward(fn, rows, completions, completion_ids, state)
            given = [(i, float(v)) for i, v in enumerate(values) if v is not None]
            for i, v in given:
                total[i] += weight * v
            if given:
                stats[f"rewards/{name}"] = sum(v for _, v in given) / len(given)
        return torch.tensor(total, dtype=torch.float32), stats
