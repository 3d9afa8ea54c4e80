"""The papers' benchmarks as registered specs: where each one's data is, which columns hold its question and
answer, the prompt template, the verifier and the metric; and turning its rows into evaluation rows.

The Hugging Face ids, splits and columns are the public releases the AMPO and LUFFY evaluations draw on (AMPO
reuses LUFFY's evaluation files and script). A machine without the hub points a benchmark at a local copy (a
``.jsonl``/``.json``/``.parquet`` file or a ``save_to_disk`` folder in the same columns), read by the same
``datasets.load_dataset`` path. The embedded world's held-out splits are benchmarks too (``world_id``,
``world_ood``), read from the world's folder.

In distribution (``math``) the answer is a math expression checked by ``math_answer``; out of distribution
(``ood``) a question has lettered options in a seeded order (:mod:`guidedrl.choices`), checked by
``multiple_choice``. ``avg@k`` benchmarks draw k samples per problem (``--samples``), ``pass@1`` ones draw as
many as ``--pass1-samples`` (1, as the papers do).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from guidedrl.choices import render_choices, shuffle_options
from guidedrl.data import DatasetError, load_rows, validate_rows
from guidedrl.errors import GuidedError
from guidedrl.registry import BENCHMARKS, TEMPLATES, UnknownName

GROUPS = ("math", "ood", "world")
METRICS = ("avg@k", "pass@1")


class BenchmarkError(GuidedError, ValueError):
    """A benchmark that cannot be read (no hub and no local copy, an unknown name), said in one line."""


@dataclass(frozen=True)
class Problem:
    """One question as a benchmark's row holds it: a math answer, or options and the correct one's index."""

    question: str
    answer: str = ""
    options: tuple[str, ...] = ()
    correct: int = -1


Reader = Callable[[dict], Problem]


@dataclass(frozen=True)
class Benchmark:
    """A benchmark: its data source (a Hugging Face id with config and split, or a world split), how a row
    becomes a :class:`Problem`, how the problem is asked (template) and graded (verifier, metric)."""

    name: str
    title: str
    source: str  # a Hugging Face dataset id, or "world" (the world's data/<split>.jsonl)
    config: str | None
    split: str
    size: int  # problems in the source, for the docs
    group: str
    metric: str
    template: str
    verifier: str  # a registered reward: math_answer or multiple_choice
    read: Reader
    columns: str  # the columns read, for the docs

    @property
    def where(self) -> str:
        """The source as a person would name it: ``id[:config], split``."""
        if self.source == "world":
            return f"the world's data/{self.split}.jsonl"
        return f"{self.source}{':' + self.config if self.config else ''}, {self.split}"


def answer_text(value: Any) -> str:
    """A gold answer as text: strings stripped, integers and integral floats (AMC's 142.0) as integers."""
    if isinstance(value, bool) or value is None:
        raise TypeError(f"expected a string or a number, got {type(value).__name__}")
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"expected a finite number, got {value}")
        return str(int(value)) if value.is_integer() else repr(value)
    if isinstance(value, int):
        return str(value)
    if not isinstance(value, str):
        raise TypeError(f"expected a string or a number, got {type(value).__name__}")
    return value.strip()


def _text(row: dict, column: str) -> str:
    """A string column of a row; a missing or non-string one is a KeyError / TypeError naming it."""
    value = row[column]
    if not isinstance(value, str):
        raise TypeError(f"column {column!r}: expected a string, got {type(value).__name__}")
    return value


def math_columns(question: str, answer: str) -> Reader:
    """A reader of a math benchmark whose question and answer are one column each."""
    def read(row: dict) -> Problem:
        return Problem(question=_text(row, question), answer=answer_text(row[answer]))
    return read


def read_olympiad(row: dict) -> Problem:
    """OlympiadBench: ``final_answer`` is a list of ``$…$`` strings (several for a multi-part answer)."""
    answers = row["final_answer"]
    if not isinstance(answers, list) or not answers or not all(isinstance(a, str) for a in answers):
        raise ValueError("column 'final_answer': expected a non-empty list of strings")
    return Problem(question=_text(row, "question"), answer=", ".join(a.strip().strip("$").strip() for a in answers))


def read_arc(row: dict) -> Problem:
    """ARC: ``choices`` holds ``text`` and ``label`` lists; ``answerKey`` is a label (a letter, or a digit)."""
    choices = row["choices"]
    if not isinstance(choices, dict) or not isinstance(choices.get("text"), list) or \
            not isinstance(choices.get("label"), list) or len(choices["text"]) != len(choices["label"]):
        raise ValueError("column 'choices': expected {text: [...], label: [...]} of one length")
    labels = [str(label) for label in choices["label"]]
    key = str(row["answerKey"])
    if key not in labels:
        raise ValueError(f"column 'answerKey': {key!r} is none of the labels {labels}")
    return Problem(question=_text(row, "question"), options=tuple(str(t) for t in choices["text"]),
                   correct=labels.index(key))


def read_gpqa(row: dict) -> Problem:
    """GPQA: the correct answer and three incorrect ones, each in a column of its own (the correct one first)."""
    options = [_text(row, c).strip() for c in ("Correct Answer", "Incorrect Answer 1", "Incorrect Answer 2",
                                                 "Incorrect Answer 3")]
    return Problem(question=_text(row, "Question"), options=tuple(options), correct=0)


def read_mmlu_pro(row: dict) -> Problem:
    """MMLU-Pro: ``options`` lists up to ten; ``answer_index`` is the correct one's position."""
    options, index = row["options"], row["answer_index"]
    if not isinstance(options, list) or not all(isinstance(o, str) for o in options):
        raise ValueError("column 'options': expected a list of strings")
    if isinstance(index, bool) or not isinstance(index, int):
        raise TypeError(f"column 'answer_index': expected an integer, got {type(index).__name__}")
    return Problem(question=_text(row, "question"), options=tuple(options), correct=index)


def read_world(row: dict) -> Problem:
    """The world's rows: ``prompt`` is the question exactly as trained on, ``answer`` its integer."""
    return Problem(question=_text(row, "prompt"), answer=answer_text(row["answer"]))


def _math(name: str, title: str, source: str, config: str | None, split: str, size: int, metric: str,
          question: str, answer: str) -> Benchmark:
    return Benchmark(name, title, source, config, split, size, "math", metric, "qwen_math", "math_answer",
                     math_columns(question, answer), f"{question}, {answer}")


def _choice(name: str, title: str, source: str, config: str | None, split: str, size: int, read: Reader,
            columns: str) -> Benchmark:
    return Benchmark(name, title, source, config, split, size, "ood", "pass@1", "qwen_math", "multiple_choice",
                     read, columns)


BUILTINS = (
    _math("aime24", "AIME 2024", "HuggingFaceH4/aime_2024", None, "train", 30, "avg@k", "problem", "answer"),
    _math("aime25", "AIME 2025", "math-ai/aime25", None, "test", 30, "avg@k", "problem", "answer"),
    _math("amc23", "AMC (AMC 12 2022 and 2023)", "AI-MO/aimo-validation-amc", None, "train", 83, "avg@k",
          "problem", "answer"),
    _math("math500", "MATH-500", "HuggingFaceH4/MATH-500", None, "test", 500, "pass@1", "problem", "answer"),
    _math("minerva", "Minerva Math", "math-ai/minervamath", None, "test", 272, "pass@1", "question", "answer"),
    Benchmark("olympiadbench", "OlympiadBench (text-only English math, open answers)", "Hothan/OlympiadBench",
              "OE_TO_maths_en_COMP", "train", 674, "math", "pass@1", "qwen_math", "math_answer", read_olympiad,
              "question, final_answer"),
    _choice("arc_c", "ARC-Challenge", "allenai/ai2_arc", "ARC-Challenge", "test", 1172, read_arc,
            "question, choices{text, label}, answerKey"),
    _choice("gpqa_diamond", "GPQA-Diamond", "Idavidrein/gpqa", "gpqa_diamond", "train", 198, read_gpqa,
            "Question, Correct Answer, Incorrect Answer 1-3"),
    _choice("mmlu_pro", "MMLU-Pro", "TIGER-Lab/MMLU-Pro", None, "test", 12032, read_mmlu_pro,
            "question, options, answer_index"),
    Benchmark("world_id", "the world's in-distribution test split", "world", None, "test_id", 200, "world", "avg@k",
              "plain", "math_answer", read_world, "prompt, answer"),
    Benchmark("world_ood", "the world's out-of-distribution test split", "world", None, "test_ood", 200, "world",
              "avg@k", "plain", "math_answer", read_world, "prompt, answer"),
)
for _bench in BUILTINS:
    BENCHMARKS.register(_bench.name)(_bench)


def registered() -> list[Benchmark]:
    """Every registered benchmark: the built-ins in the papers' order, then any others by name."""
    others = [BENCHMARKS.get(n) for n in BENCHMARKS.names() if n not in {b.name for b in BUILTINS}]
    return [*BUILTINS, *others]


def select(spec: str) -> list[Benchmark]:
    """The benchmarks a comma-separated list names, groups expanded (``math``, ``ood``, ``world``; ``all`` is
    the papers' suite, math and ood), each once, in the order named."""
    chosen: list[Benchmark] = []
    for name in (part.strip() for part in spec.split(",")):
        group = ("math", "ood") if name == "all" else (name,) if name in GROUPS else None
        if group is not None:
            found = [b for b in registered() if b.group in group]
        else:
            try:
                found = [BENCHMARKS.get(name)]
            except UnknownName as err:
                raise BenchmarkError(f"--benchmarks: {err}; or a group: {', '.join(GROUPS)}, all") from None
        chosen += [b for b in found if b not in chosen]
    return chosen


def load_source(bench: Benchmark, local: Path | None, world: Path) -> tuple[list[dict], str]:
    """The benchmark's raw rows and where they came from: ``local`` when given (a file or a ``save_to_disk``
    folder), the world's split for a world benchmark, else the Hugging Face hub (or its cache)."""
    if local is not None:
        saved_dict = local.is_dir() and (local / "dataset_dict.json").exists()
        return load_rows(local, bench.split if saved_dict else None), str(local)
    if bench.source == "world":
        path = world / "data" / f"{bench.split}.jsonl"
        return load_rows(path), str(path)
    return _from_hub(bench), bench.where


def _from_hub(bench: Benchmark) -> list[dict]:
    """The rows of ``bench``'s hub dataset (``datasets.load_dataset``); any failure is one line saying how to
    give a local copy instead."""
    import datasets

    datasets.disable_progress_bars()
    try:
        return datasets.load_dataset(bench.source, bench.config, split=bench.split).to_list()
    except Exception as err:  # noqa: BLE001 - no network, a gated set, a missing config: all mean the same here
        cause = " ".join(str(err).split())[:300]
        raise BenchmarkError(f"{bench.name}: cannot load {bench.where} from the Hugging Face hub ({cause}); give a "
                             f"local copy: --data {bench.name}=PATH (.jsonl, .json, .parquet or a save_to_disk "
                             "folder) or --data-dir") from None


def problem_rows(bench: Benchmark, raw: list[dict], source: str, template: str | None = None) -> list[dict]:
    """Evaluation rows (``prompt``, ``answer``) of a benchmark's raw rows: each read as a :class:`Problem`, its
    options (if any) shuffled and lettered, the question put in ``template`` (default: the benchmark's); a row
    that does not read is a :class:`DatasetError` naming it."""
    apply = TEMPLATES.get(template or bench.template)
    rows = []
    for i, row in enumerate(raw):
        try:
            problem = bench.read(row)
            if problem.options:
                options, letter = shuffle_options(problem.options, problem.correct, problem.question)
                question, answer = render_choices(problem.question, options), letter
            else:
                question, answer = problem.question, problem.answer
        except KeyError as err:
            raise DatasetError(source, f"missing (a {bench.name} row needs {bench.columns})", row=i,
                               field=str(err.args[0])) from None
        except (TypeError, ValueError) as err:
            raise DatasetError(source, f"not a {bench.name} row: {err}", row=i) from None
        rows.append({"prompt": apply(question), "answer": answer})
    return validate_rows(rows, source)


def markdown_table() -> str:
    """The docs' table of the built-in benchmarks: source, size, metric, template, verifier."""
    lines = ["| name | benchmark | source (id:config, split) | columns read | problems | metric | template |",
             "|---|---|---|---|---|---|---|"]
    for b in BUILTINS:
        metric = "avg@k (k = --samples)" if b.metric == "avg@k" else "pass@1"
        lines.append(f"| `{b.name}` | {b.title} | {b.where} | {b.columns} | {b.size} | {metric} | "
                     f"`{b.template}` |")
    return "\n".join(lines)
