"""``guidedrl eval --benchmarks``: a model on the papers' benchmarks in one run, tabulated as the papers do.

Every benchmark goes through :func:`guidedrl.eval.evaluate.evaluate`, the held-out evaluation of training runs
(one seed per problem from ``seed`` and its position, so a world split scores exactly as a run's own
evaluation of it does). An ``avg@k`` benchmark draws ``samples`` per problem, a ``pass@1`` one
``pass1_samples``; its score is the mean share of correct samples, and pass@k is reported for every power of
two up to the samples drawn. A group's score is the mean of its benchmarks' scores (the papers' "Avg." column).

Written to the output folder: ``benchmarks_<tag>.json`` (settings, scores, group means) and each benchmark's
per-problem report ``eval/<tag>_<name>.json``, the layout of a run folder: two tags (``before``, ``after``) in
one folder are what ``guidedrl analyze`` compares, and ``guidedrl report`` shows the scores of a run folder.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from rich.markup import escape
from rich.table import Table
from transformers import PreTrainedTokenizerBase

from guidedrl.data import DatasetError
from guidedrl.eval.benchmarks import Benchmark, BenchmarkError, load_source, problem_rows
from guidedrl.eval.evaluate import EvalReport, evaluate
from guidedrl.eval.metrics import avg_at_k, ks_up_to
from guidedrl.files import DamagedFile, read_json, write_json
from guidedrl.prompt_length import fit_prompts
from guidedrl.registry import BENCHMARKS, REWARDS, UnknownName
from guidedrl.rollout.engine import RolloutEngine

SUFFIXES = (".parquet", ".jsonl", ".json")
_TAG = re.compile(r"[A-Za-z0-9.-]+")


@dataclass(frozen=True)
class SuiteSettings:
    """How every benchmark of the run is sampled (the papers': 32 samples for avg@k, one for pass@1, 0.6)."""

    samples: int = 32
    pass1_samples: int = 1
    temperature: float = 0.6
    max_new_tokens: int = 8192
    seed: int = 0
    greedy: bool = True
    limit: int | None = None  # the first N problems of each benchmark
    template: str | None = None  # one template for every benchmark (None: each benchmark's own)

    def samples_of(self, bench: Benchmark) -> int:
        """Samples drawn per problem of ``bench``."""
        return self.samples if bench.metric == "avg@k" else self.pass1_samples


@dataclass
class Loaded:
    """A benchmark with its evaluation rows and where they were read from."""

    bench: Benchmark
    rows: list[dict]
    source: str


def check_tag(tag: str) -> str:
    """A tag names report files ``<tag>_<benchmark>.json``, split at the first ``_``: letters, digits, ``.``, ``-``."""
    if not _TAG.fullmatch(tag):
        raise BenchmarkError(f"--tag: {tag!r} is not a tag (letters, digits, '.' and '-'; e.g. before, after)")
    return tag


def local_copies(items: Sequence[str], data_dir: Path | None, benches: Sequence[Benchmark]) -> dict[str, Path]:
    """Where each benchmark's local copy is: ``--data NAME=PATH`` items first, then ``<data_dir>/<name>``
    with a suffix of :data:`SUFFIXES` or as a folder; a benchmark with neither is read from its source."""
    paths: dict[str, Path] = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or not name.strip() or not path.strip():
            raise BenchmarkError(f"--data: expected NAME=PATH, got {item!r}")
        try:
            BENCHMARKS.check(name.strip())
        except UnknownName as err:
            raise BenchmarkError(f"--data: {err}") from None
        paths[name.strip()] = Path(path.strip())
    if data_dir is not None:
        if not data_dir.is_dir():
            raise BenchmarkError(f"--data-dir: {data_dir} is not a folder")
        for bench in benches:
            found = [p for p in (data_dir / f"{bench.name}{s}" for s in SUFFIXES) if p.exists()]
            if bench.name not in paths and (found or (data_dir / bench.name).is_dir()):
                paths[bench.name] = found[0] if found else data_dir / bench.name
    return paths


def load_suite(benches: Sequence[Benchmark], copies: dict[str, Path], world: Path, settings: SuiteSettings
               ) -> list[Loaded]:
    """Every benchmark's evaluation rows (the first ``settings.limit``), all read before any is evaluated."""
    loaded = []
    for bench in benches:
        raw, source = load_source(bench, copies.get(bench.name), world)
        rows = problem_rows(bench, raw[:settings.limit], source, settings.template)
        loaded.append(Loaded(bench, rows, source))
    return loaded


def check_lengths(tokenizer: PreTrainedTokenizerBase, loaded: Sequence[Loaded], context: int | None,
                  max_new_tokens: int) -> None:
    """Refuse, naming the row, a prompt that leaves fewer than ``max_new_tokens`` of the model's context."""
    if context is None:
        return
    limit = context - max_new_tokens
    if limit < 1:
        raise BenchmarkError(f"--max-new-tokens: {max_new_tokens} leaves no room for a prompt in the model's "
                             f"context of {context} tokens")
    for item in loaded:
        try:
            fit_prompts(tokenizer, item.rows, limit, "error", item.source)
        except DatasetError as err:
            raise DatasetError(item.source, f"{item.bench.name}: the prompt and --max-new-tokens {max_new_tokens} "
                               f"exceed the model's context of {context} tokens; lower --max-new-tokens",
                               row=err.row, field=err.field) from None


def run_suite(engine: RolloutEngine, tokenizer: PreTrainedTokenizerBase, loaded: Sequence[Loaded],
              settings: SuiteSettings, log: Callable[[str], None] = print) -> dict[str, EvalReport]:
    """Each benchmark evaluated by :func:`evaluate` with its own verifier and sample count."""
    reports = {}
    for item in loaded:
        n = settings.samples_of(item.bench)
        log(f"{item.bench.name}: {len(item.rows)} problems x {n} samples")
        reports[item.bench.name] = evaluate(
            engine, tokenizer, item.rows, split=item.bench.name, ks=ks_up_to(n), n_samples=n,
            temperature=settings.temperature, max_new_tokens=settings.max_new_tokens, seed=settings.seed,
            verifier=REWARDS.get(item.bench.verifier), with_greedy=settings.greedy)
    return reports


def summarize(loaded: Sequence[Loaded], reports: dict[str, EvalReport], settings: SuiteSettings, tag: str,
              model: str, engine: str) -> dict:
    """The suite's result: settings, each benchmark's score and figures, each group's mean score."""
    benchmarks = {}
    for item in loaded:
        b, report = item.bench, reports[item.bench.name]
        n = settings.samples_of(b)
        benchmarks[b.name] = {
            "title": b.title, "group": b.group, "source": item.source, "template": settings.template or b.template,
            "verifier": b.verifier, "metric": f"avg@{n}" if b.metric == "avg@k" else "pass@1",
            "score": avg_at_k([(p.n, p.correct) for p in report.problems]), "problems": len(report.problems),
            "samples": n, "greedy": report.greedy_accuracy,
            "pass_at_k": {str(k): v for k, v in report.pass_at_k.items()},
            "mean_length": report.mean_length, "mean_distinct_paths": report.mean_distinct_paths,
            "report": f"eval/{tag}_{b.name}.json"}
    groups: dict[str, dict] = {}
    for name, result in benchmarks.items():
        groups.setdefault(result["group"], {"benchmarks": []})["benchmarks"].append(name)
    for group in groups.values():
        group["score"] = sum(benchmarks[n]["score"] for n in group["benchmarks"]) / len(group["benchmarks"])
    return {"model": model, "tag": tag, "engine": engine, "settings": asdict(settings), "benchmarks": benchmarks,
            "groups": groups}


def output_paths(out: Path, tag: str, loaded: Sequence[Loaded]) -> list[Path]:
    """The files a suite writes: the result, then each benchmark's per-problem report."""
    return [out / f"benchmarks_{tag}.json", *(out / "eval" / f"{tag}_{i.bench.name}.json" for i in loaded)]


def write_suite(out: Path, result: dict, reports: dict[str, EvalReport]) -> Path:
    """Each per-problem report, then the result (atomically, each); returns the result's path."""
    for name, report in reports.items():
        report.write_json(out / result["benchmarks"][name]["report"])
    path = out / f"benchmarks_{result['tag']}.json"
    write_json(path, result)
    return path


def read_results(path: Path) -> dict:
    """A suite's result file (``benchmarks_<tag>.json``, what ``guidedrl report`` shows); one that is not whole is
    a :class:`DamagedFile` naming it."""
    result = read_json(path)
    benchmarks = result.get("benchmarks")
    if not isinstance(result.get("tag"), str) or not isinstance(benchmarks, dict) or not benchmarks or not all(
            isinstance(b, dict) and isinstance(b.get("metric"), str) and isinstance(b.get("group"), str)
            and isinstance(b.get("score"), (int, float)) and 0 <= b["score"] <= 1 for b in benchmarks.values()):
        raise DamagedFile(f"{path}: not a benchmark result (a tag, and benchmarks each with a group, a metric and a "
                          "score in [0, 1]); the file is damaged")
    return result


def suite_table(result: dict, title: str) -> Table:
    """Each benchmark's score (%, with its metric), greedy accuracy, pass@k at the samples drawn and mean
    length; then each group's mean."""
    table = Table(title=escape(title))
    for col in ("benchmark", "group", "problems", "metric", "score", "greedy", "pass@n", "mean length"):
        table.add_column(col, justify="left" if col in ("benchmark", "group", "metric") else "right")
    for name, r in result["benchmarks"].items():
        top = max(r["pass_at_k"], key=int)
        table.add_row(escape(name), r["group"], str(r["problems"]), r["metric"], f"{100 * r['score']:.1f}",
                      "-" if r["greedy"] is None else f"{100 * r['greedy']:.1f}",
                      f"{100 * r['pass_at_k'][top]:.1f} (n={top})", f"{r['mean_length']:.1f}")
    for group, g in result["groups"].items():
        table.add_row(f"{group} average", group, "", f"mean of {len(g['benchmarks'])}", f"{100 * g['score']:.1f}",
                      "", "", "", style="bold")
    return table
