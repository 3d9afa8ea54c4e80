"""Registries of the pieces a config chooses by name: one per kind of piece, as verl's ``core_algos``.

A piece is registered where it is defined (``@ADVANTAGES.register("grpo")`` in
``algorithms/advantages.py``), so a reader finds every estimator in the file named after them. Each
registry knows the one module that defines its built-in entries and imports it the first time it is
asked for a name, so that validating a config sees the built-ins without importing the whole package;
a user's own pieces are registered by importing their module first (docs/extending.md: the worked example).

Entries may declare ``needs``: the per-token fields a step must compute for them (e.g. ``teacher_logp``),
so the trainer computes exactly what the configured pieces read and never asks "which method is this?".
Any piece may also be named by an import path, ``package.module:function`` (TRL users name their reward
functions this way): the module is imported and the function used as an entry with no ``needs``.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.util
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Generic, TypeVar

from guidedrl.errors import GuidedError

T = TypeVar("T")


@dataclass(frozen=True)
class Entry(Generic[T]):
    """A registered piece and the batch fields it reads."""

    fn: T
    needs: frozenset[str]


class UnknownName(GuidedError, ValueError):
    """A name no piece of this kind is registered under; the message lists the known ones."""


class Registry(Generic[T]):
    """Named pieces of one kind (advantage estimators, surrogates, ...), built-ins loaded on first use."""

    def __init__(self, kind: str, *builtins: str) -> None:
        self.kind, self.builtins = kind, builtins
        self._entries: dict[str, Entry[T]] = {}
        self._loaded = False

    def register(self, name: str, needs: Iterable[str] = ()) -> Callable[[T], T]:
        """Decorator adding ``fn`` under ``name``; a second piece with the same name is an error."""
        def add(fn: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self._entries[name] = Entry(fn, frozenset(needs))
            return fn
        return add

    def _load(self) -> None:
        if not self._loaded:
            self._loaded = True
            for module in self.builtins:
                importlib.import_module(module)

    def names(self) -> list[str]:
        """Every registered name, built-ins included, sorted."""
        self._load()
        return sorted(self._entries)

    def check(self, name: str) -> str:
        """``name`` if registered or importable (``package.module:function``); else :class:`UnknownName` with
        the closest name and every known one."""
        if ":" in name:
            self._imported(name)
            return name
        known = self.names()
        if name not in known:
            close = difflib.get_close_matches(name, known, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise UnknownName(f"unknown {self.kind} {name!r}{hint}; known: {', '.join(known)}")
        return name

    def entry(self, name: str) -> Entry[T]:
        if ":" in name:
            return Entry(self._imported(name), frozenset())
        return self._entries[self.check(name)]

    def _imported(self, path: str) -> T:
        """The callable at ``package.module:function``."""
        module, _, attr = path.partition(":")
        try:
            fn = getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as err:
            raise UnknownName(f"cannot import {self.kind} {path!r}: {err}") from None
        except Exception as err:  # noqa: BLE001 - the user's module failed while importing: say what it raised
            raise UnknownName(f"cannot import {self.kind} {path!r}: {module} raised {raised(err)}") from None
        if not callable(fn):
            raise UnknownName(f"{self.kind} {path!r} is not callable")
        return fn

    def get(self, name: str) -> T:
        """The piece registered under ``name``."""
        return self.entry(name).fn

    def needs(self, names: Iterable[str]) -> frozenset[str]:
        """The union of the fields the named pieces read."""
        return frozenset().union(*(self.entry(n).needs for n in names))


def load_plugin(spec: str, base: Path | None = None) -> None:
    """Import a user's module of pieces (their ``register`` decorators run): a module name, or a ``.py`` file
    (relative to ``base``, the config file's directory, when given). Importing one twice is a no-op."""
    if not spec.endswith(".py"):
        importlib.import_module(spec)
        return
    path = (base / spec if base is not None and not Path(spec).is_absolute() else Path(spec)).resolve()
    name = f"guidedrl_plugin_{abs(hash(str(path)))}"
    if name in sys.modules:
        return
    if not path.is_file():
        raise FileNotFoundError(f"plugin file {path} does not exist" if not path.exists() else
                                f"plugin {path} is a folder, not a .py file")
    module_spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[name] = module
    try:
        module_spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise


def raised(err: BaseException) -> str:
    """An exception in one line: its type and message, and for a syntax error the file and line."""
    if isinstance(err, SyntaxError):
        return f"SyntaxError: {err.msg} ({err.filename}, line {err.lineno})"
    return f"{type(err).__name__}: {err}"


# advantage estimators: (AdvantageInputs, eps) -> B×R advantages
ADVANTAGES: Registry = Registry("advantage estimator", "guidedrl.algorithms.advantages")
# advantage add-ons: (advantages, AdvantageInputs, coef) -> advantages (reverse KL, TGPO-Adv's label bonus)
ADVANTAGE_ADDONS: Registry = Registry("advantage add-on", "guidedrl.algorithms.advantages")
# per-token surrogates, chosen per kind of token (policy / teacher / hinted): (logp, old_logp, adv, mask, params)
SURROGATES: Registry = Registry("surrogate", "guidedrl.algorithms.surrogates")
# regularizers: LossInputs -> B×R matrix, weighted by a (scheduled) coefficient and aggregated
REGULARIZERS: Registry = Registry("regularizer", "guidedrl.algorithms.regularizers")
# batch filters: (rewards, group_index) -> B bool rows to keep (DAPO's flat-group filter)
BATCH_FILTERS: Registry = Registry("batch filter", "guidedrl.algorithms.filters")
# guidance strategies: (GuidanceConfig, GuidanceContext, pools) -> Guidance
GUIDANCE: Registry = Registry("guidance strategy", "guidedrl.guidance.teacher", "guidedrl.guidance.hint")
# teacher pools: (TeacherSource, max_new_tokens, seed, Precision, cache_dir) -> TeacherPool
TEACHER_POOLS: Registry = Registry("teacher pool", "guidedrl.teachers.pool", "guidedrl.teachers.server")
# rollout engines: (policy, tokenizer, RolloutConfig, Precision) -> RolloutEngine
ENGINES: Registry = Registry("rollout engine", "guidedrl.rollout.hf_engine", "guidedrl.rollout.vllm_engine")
# reward functions in TRL's keyword convention: f(prompts=, completions=, **columns) -> list[float | None]
REWARDS: Registry = Registry("reward", "guidedrl.rewards", "guidedrl.choices")
# prompt templates: question text -> prompt (a string, or chat messages the model's chat template renders)
TEMPLATES: Registry = Registry("prompt template", "guidedrl.templates")
# evaluation benchmarks: guidedrl.eval.benchmarks.Benchmark specs (where the data is, how it is asked and graded)
BENCHMARKS: Registry = Registry("benchmark", "guidedrl.eval.benchmarks")
