"""Teacher pools behind one interface: stored solutions per problem, or a local model asked on demand."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from transformers import AutoModelForCausalLM, AutoTokenizer

from guidedrl.config import TeacherSource
from guidedrl.data import encode_prompts
from guidedrl.precision import Precision
from guidedrl.registry import TEACHER_POOLS
from guidedrl.rollout.engine import SamplingParams, stop_token_ids, with_pad_token
from guidedrl.rollout.hf_engine import HFEngine
from guidedrl.seeding import derive_seed, text_index
from guidedrl.yaml_config import ConfigError


@dataclass(frozen=True)
class TeacherSolution:
    """One candidate solution text and the teacher that wrote it."""

    teacher: str
    text: str


class TeacherPool(Protocol):
    """Candidate solutions for a batch of problems (unverified; the guidance strategy verifies them)."""

    def solutions(self, rows: Sequence[dict]) -> list[list[TeacherSolution]]: ...


class OfflinePool:
    """Solutions stored in the dataset's ``teacher_solutions`` column, optionally only some teachers'."""

    def __init__(self, teachers: Sequence[str] | None = None) -> None:
        self.teachers = set(teachers) if teachers else None

    def solutions(self, rows: Sequence[dict]) -> list[list[TeacherSolution]]:
        return [[TeacherSolution(s["teacher"], s["text"]) for s in row.get("teacher_solutions", [])
                 if self.teachers is None or s["teacher"] in self.teachers] for row in rows]


class OnlinePool:
    """A local HF causal LM that samples solutions when asked; each problem is asked once, then cached.

    A problem's samples are drawn with a seed of its own (from the run's seed and the prompt's text), so they
    do not depend on when the problem is first asked: a resumed run, whose cache starts empty, gets the same.
    """

    def __init__(self, path: Path | str, name: str | None, samples: int, temperature: float, max_new_tokens: int,
                 seed: int = 0, precision: Precision | None = None) -> None:
        self.name = name or Path(path).name
        precision = precision or Precision()
        self.tokenizer = with_pad_token(AutoTokenizer.from_pretrained(path))
        model = AutoModelForCausalLM.from_pretrained(path, dtype=precision.frozen_dtype).eval().to(precision.device)
        self.engine = HFEngine(model, self.tokenizer.pad_token_id, stop_token_ids(model, self.tokenizer),
                               precision=precision)
        self.samples, self.temperature, self.max_new_tokens, self.seed = samples, temperature, max_new_tokens, seed
        self.cache: dict[str, list[TeacherSolution]] = {}

    def solutions(self, rows: Sequence[dict]) -> list[list[TeacherSolution]]:
        keys = [repr(row["prompt"]) for row in rows]
        for key, row in zip(keys, rows):
            if key not in self.cache:
                ids = encode_prompts(self.tokenizer, [row["prompt"]])
                sampling = SamplingParams(self.temperature, 1.0, self.max_new_tokens,
                                          seed=derive_seed(self.seed, "online_teacher", text_index(key)))
                texts = self.engine.generate(ids, self.samples, sampling).response_texts(self.tokenizer)
                self.cache[key] = [TeacherSolution(self.name, t) for t in dict.fromkeys(texts)]
        return [self.cache[k] for k in keys]


def online_teacher_path(source: TeacherSource) -> Path:
    """An online teacher's model folder, refused with the setting's name when it does not exist."""
    if not Path(source.path).exists():
        raise ConfigError(f"guidance.teachers: online teacher path {source.path} does not exist")
    return Path(source.path)


@TEACHER_POOLS.register("offline")
def offline_pool(source: TeacherSource, max_new_tokens: int, seed: int, precision: Precision,
                 cache_dir: Path | None = None) -> OfflinePool:
    """The dataset's ``teacher_solutions`` column."""
    return OfflinePool(source.teachers)


@TEACHER_POOLS.register("online")
def online_pool(source: TeacherSource, max_new_tokens: int, seed: int, precision: Precision,
                cache_dir: Path | None = None) -> OnlinePool:
    """A local teacher model sampling on demand, on the run's device."""
    return OnlinePool(online_teacher_path(source), source.name, source.samples, source.temperature, max_new_tokens,
                      seed, precision)
