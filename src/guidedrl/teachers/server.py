"""Teachers behind an OpenAI-compatible server (``vllm serve``, SGLang, any completions API).

One client serves three uses: sampled solutions for AMPO's online teachers, hints written on demand for
Guide, and the teacher's log-prob and top-1 token at every position of a student's rollout for TGPO and
reverse-KL distillation (vLLM's ``prompt_logprobs``, the rollout sent as the prompt). Requests have a
timeout, retries with exponential backoff and a concurrency limit. Answers are cached on disk per request, so
a resumed run asks nothing twice. A server that is down at start is an error before any step; a request that
still fails after its retries is a counted skip (that problem gets no solution or hint this step), never a lost
run. Teacher log-probs are the exception: a step cannot do without them, so their failure stops the run with
its last checkpoint intact.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import torch

from guidedrl.config import ServerSpec, TeacherSource
from guidedrl.errors import RunError
from guidedrl.precision import Precision
from guidedrl.registry import TEACHER_POOLS
from guidedrl.rollout.engine import Rollouts
from guidedrl.seeding import derive_seed, text_index
from guidedrl.teachers.model import TeacherPredictions
from guidedrl.teachers.pool import TeacherSolution
from guidedrl.yaml_config import ConfigError


class ServerUnavailable(RuntimeError):
    """A request that still failed after every retry (down, too slow, or an answer that is not what was asked)."""


class DiskCache:
    """Answers of one server by request key, in a JSON-lines file appended as they arrive (survives a kill).

    The file is read at the first use, not when the run starts: a run folder is the run's only once its start-up
    checks pass, and with ``--overwrite`` the file until then is the previous run's."""

    def __init__(self, path: Path | None) -> None:
        self.path, self.lock, self._items = path, threading.RLock(), None

    @property
    def items(self) -> dict[str, Any]:
        """Every cached answer; a line torn by a kill mid-write, or damaged, is left out (asked again). Read under
        the lock: the pool's threads ask at once, and none may see the file half read."""
        with self.lock:
            if self._items is None:
                self._items = {}
                lines = self.path.read_bytes().splitlines() if self.path is not None and self.path.exists() else []
                for line in lines:
                    try:
                        entry = json.loads(line.decode("utf-8"))
                        self._items[entry["key"]] = entry["value"]
                    except (UnicodeDecodeError, json.JSONDecodeError, TypeError, KeyError):
                        continue
            return self._items

    def get(self, key: str) -> Any | None:
        """The cached answer to ``key``, or None."""
        return self.items.get(key)

    def put(self, key: str, value: Any) -> None:
        """Remember ``value`` for ``key``, in memory and as one appended line."""
        with self.lock:
            self.items[key] = value
            if self.path is not None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                with self.path.open("a") as f:
                    f.write(json.dumps({"key": key, "value": value}) + "\n")


def request_key(kind: str, payload: dict) -> str:
    """A stable key of one request (its kind and every parameter that changes the answer)."""
    return hashlib.sha256(json.dumps([kind, payload], sort_keys=True).encode()).hexdigest()[:24]


class ServerClient:
    """An ``openai`` client for one served model with the run's retry, concurrency and cache policy."""

    def __init__(self, spec: ServerSpec, cache_path: Path | None) -> None:
        try:
            import openai
        except ImportError as err:
            raise ConfigError("a served teacher needs the openai client: pip install 'guidedrl[server]'") from err
        self.spec, self.openai = spec, openai
        api_key = os.environ.get(spec.api_key_env, "EMPTY") if spec.api_key_env else "EMPTY"
        self.client = openai.OpenAI(base_url=spec.base_url, api_key=api_key, timeout=spec.timeout_s, max_retries=0)
        self.cache = DiskCache(cache_path)
        self.pool = ThreadPoolExecutor(max_workers=spec.concurrency)
        self.skipped = 0
        self.context: int | None = None  # the served model's context, when the server says (check)

    def check(self, where: str) -> None:
        """At start: the server answers and serves ``spec.model``; otherwise a ConfigError naming ``where``."""
        try:
            models = self.client.models.list().data
        except Exception as err:  # any transport or protocol failure is "not reachable" to the user
            raise ConfigError(f"{where}: the teacher server at {self.spec.base_url} does not answer "
                              f"({type(err).__name__}: {err}); start it, or fix base_url") from None
        served = [m.id for m in models]
        if self.spec.model not in served:
            raise ConfigError(f"{where}: the server at {self.spec.base_url} serves {served}, not {self.spec.model!r}")
        # vLLM lists each model's max_model_len: the longest prompt + completion it accepts
        self.context = next((getattr(m, "max_model_len", None) for m in models if m.id == self.spec.model), None)

    def call(self, kind: str, payload: dict, parse: Callable[[Any], Any]) -> Any:
        """The parsed answer to one request: from the cache, or asked with retries and backoff, then cached.
        ``parse`` turns the raw response into JSON-able data and raises on an answer of the wrong shape."""
        key = request_key(kind, payload)
        cached = self.cache.get(key)
        if cached is not None:
            return cached
        error: Exception | None = None
        for attempt in range(self.spec.retries + 1):
            if attempt:
                time.sleep(self.spec.backoff_s * 2 ** (attempt - 1))
            try:
                if kind == "chat":
                    raw = self.client.chat.completions.create(model=self.spec.model, **payload)
                else:
                    raw = self.client.completions.create(model=self.spec.model, **payload)
                value = parse(raw)
                break
            except Exception as err:  # timeouts, refused connections, 5xx, and garbage answers alike
                error = err
        else:
            raise ServerUnavailable(f"{self.spec.base_url} ({self.spec.model}): {type(error).__name__}: {error}")
        self.cache.put(key, value)
        return value

    def map(self, fn: Callable[[Any], Any], items: Sequence[Any]) -> list[Any]:
        """``fn`` over ``items`` with at most ``spec.concurrency`` requests in flight, in order."""
        return list(self.pool.map(fn, items))


def _texts(raw: Any) -> list[str]:
    """The completion texts of a completions or chat answer; an answer without them is an error."""
    texts = [c.message.content if hasattr(c, "message") else c.text for c in raw.choices]
    if not texts or not all(isinstance(t, str) for t in texts):
        raise ValueError(f"no completion texts in the answer: {str(raw)[:200]}")
    return texts


class ServerPool:
    """AMPO online teacher: ``samples`` solutions per problem from a served model, asked once per problem
    (seeded by the problem's text, so a resumed run asks the same and finds it in the cache)."""

    def __init__(self, client: ServerClient, name: str, samples: int, temperature: float, max_new_tokens: int,
                 seed: int) -> None:
        self.client, self.name, self.samples = client, name, samples
        self.temperature, self.max_new_tokens, self.seed = temperature, max_new_tokens, seed

    @property
    def skipped(self) -> int:
        """Requests that failed after their retries so far (each a problem that got no solutions)."""
        return self.client.skipped

    def ask(self, prompt: str | list[dict]) -> list[TeacherSolution]:
        """Distinct solutions to one problem (a chat request for messages, a completion for text)."""
        seed = derive_seed(self.seed, "online_teacher", text_index(repr(prompt)))
        common = {"n": self.samples, "temperature": self.temperature, "max_tokens": self.max_new_tokens,
                  "seed": seed}
        payload = {"messages": prompt, **common} if isinstance(prompt, list) else {"prompt": prompt, **common}
        try:
            texts = self.client.call("chat" if isinstance(prompt, list) else "completion", payload, _texts)
        except ServerUnavailable:
            self.client.skipped += 1
            return []
        return [TeacherSolution(self.name, t) for t in dict.fromkeys(texts)]

    def solutions(self, rows: Sequence[dict]) -> list[list[TeacherSolution]]:
        """Candidates for each row, asked concurrently."""
        return self.client.map(self.ask, [row["prompt"] for row in rows])


class HintWriter:
    """Guide without a ``hint`` column: a served teacher writes a hint per problem from ``template``."""

    def __init__(self, client: ServerClient, template: str, max_new_tokens: int) -> None:
        self.client, self.template, self.max_new_tokens = client, template, max_new_tokens

    def hint(self, prompt: str | list[dict]) -> str | None:
        """The served teacher's greedy hint for one problem; None if it writes nothing or the request fails."""
        text = prompt if isinstance(prompt, str) else "\n".join(m["content"] for m in prompt)
        payload = {"prompt": self.template.format(prompt=text), "n": 1, "temperature": 0.0,
                   "max_tokens": self.max_new_tokens}
        try:
            hint = self.client.call("completion", payload, _texts)[0].strip()
        except ServerUnavailable:
            self.client.skipped += 1
            return None
        return hint or None


def _prompt_logprobs(raw: Any) -> list[list[list[float]]]:
    """vLLM's ``prompt_logprobs`` of one completion: per prompt position after the first, the reported tokens as
    [token id, log-prob, rank] (the top-1, and the prompt's own token where it is not the top-1)."""
    extra = raw.choices[0].model_extra or {}
    positions = extra.get("prompt_logprobs")
    if not isinstance(positions, list) or not positions:
        raise ValueError("the answer has no prompt_logprobs (the server must be vLLM, or support them)")
    return [[[int(tok), float(v["logprob"]), int(v["rank"])] for tok, v in entry.items()] for entry in positions[1:]]


class ServedTeacher:
    """TGPO / reverse-KL teacher behind a vLLM server: per response token, the teacher's log-prob of the
    student's token and its own top-1 token (the label), from one ``prompt_logprobs`` request per rollout."""

    def __init__(self, client: ServerClient) -> None:
        self.client, self.name = client, client.spec.model

    def row(self, ids: list[int], prompt_len: int) -> list[tuple[float, int]]:
        """(log π_T of the student's token, π_T's top-1 token) at each response position of one rollout."""
        payload = {"prompt": ids, "max_tokens": 1, "temperature": 0.0, "extra_body": {"prompt_logprobs": 1}}
        positions = self.client.call("completion", payload, _prompt_logprobs)
        if len(positions) != len(ids) - 1:
            raise ServerUnavailable(f"prompt_logprobs for {len(positions)} positions, {len(ids) - 1} asked")
        out = []
        for t in range(prompt_len, len(ids)):
            reported = {int(tok): (logp, rank) for tok, logp, rank in positions[t - 1]}
            if ids[t] not in reported:
                raise ServerUnavailable(f"prompt_logprobs at position {t} omit the prompt's own token {ids[t]}")
            top = min(reported, key=lambda tok: reported[tok][1])
            out.append((reported[ids[t]][0], top))
        return out

    def predict(self, rollouts: Rollouts, generator: torch.Generator | None = None) -> TeacherPredictions:
        """FrozenTeacher's interface: teacher log-probs and labels (B×R), zero outside the responses."""
        b, width = rollouts.response_ids.shape
        logp, label = torch.zeros((b, width)), torch.zeros((b, width), dtype=torch.long)
        rows = []
        for i in range(b):
            prompt = rollouts.prompt_ids[i][rollouts.prompt_mask[i].bool()].tolist()
            n = int(rollouts.response_mask[i].sum())
            rows.append((prompt + rollouts.response_ids[i, :n].tolist(), len(prompt)))
        try:
            answers = self.client.map(lambda r: self.row(*r), rows)
        except ServerUnavailable as err:
            raise RunError(f"teacher_signal.server: {err}; the run stops (resume from its last checkpoint once "
                           "the server is back)") from None
        for i, answer in enumerate(answers):
            for t, (own, top) in enumerate(answer):
                logp[i, t], label[i, t] = own, top
        return TeacherPredictions(logp, label)


def server_client(spec: ServerSpec, cache_dir: Path | None, where: str) -> ServerClient:
    """A checked client for ``spec`` whose cache lives in ``cache_dir`` (one file per base URL and model)."""
    name = hashlib.sha256(f"{spec.base_url}|{spec.model}".encode()).hexdigest()[:12]
    client = ServerClient(spec, None if cache_dir is None else cache_dir / f"{name}.jsonl")
    client.check(where)
    return client


@TEACHER_POOLS.register("server")
def server_pool(source: TeacherSource, max_new_tokens: int, seed: int, precision: Precision,
                cache_dir: Path | None = None) -> ServerPool:
    """An online teacher served over the OpenAI API (vLLM, SGLang, ...)."""
    client = server_client(source.server, cache_dir, "guidance.teachers")
    return ServerPool(client, source.name or source.server.model, source.samples, source.temperature,
                      max_new_tokens, seed)
