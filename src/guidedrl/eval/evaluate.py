"""Held-out evaluation: greedy accuracy, sampled pass@k, response length and solution-path diversity.

A sample is correct when the verifier's answer check passes (:func:`guidedrl.rewards.math_answer_reward`; a
benchmark of multiple-choice questions passes its own), whatever the training reward of the run mixes in (format
bonuses, a user's own terms): every method is scored under the same definition.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from transformers import PreTrainedTokenizerBase

from guidedrl.data import encode_prompts
from guidedrl.distributed import Ranks
from guidedrl.eval.metrics import distinct_correct_paths, mean_pass_at_k
from guidedrl.files import write_json
from guidedrl.rewards import RewardFn, call_reward, math_answer_reward
from guidedrl.rollout.engine import RolloutEngine, SamplingParams
from guidedrl.seeding import derive_seed


@dataclass
class ProblemScore:
    """One problem's outcome: samples drawn, samples correct, greedy correctness, diversity."""

    prompt: str
    answer: str
    n: int
    correct: int
    greedy_correct: bool | None  # None: not decoded greedily
    distinct_paths: int
    mean_length: float


@dataclass
class EvalReport:
    """Aggregate figures over a split, with the per-problem scores they come from."""

    split: str
    greedy_accuracy: float | None  # None: not decoded greedily
    pass_at_k: dict[int, float]
    mean_length: float
    mean_distinct_paths: float
    problems: list[ProblemScore] = field(default_factory=list)

    def summary(self) -> dict:
        """The aggregate figures only (what tables and logs show)."""
        return {k: v for k, v in asdict(self).items() if k != "problems"}

    def write_json(self, path: str | Path) -> None:
        """Write the full report, per-problem scores included (atomically: a kill leaves no half report)."""
        write_json(Path(path), asdict(self))


def _chunks(items: Sequence, size: int) -> list[Sequence]:
    return [items[i:i + size] for i in range(0, len(items), size)]


def _sample_and_check(engine: RolloutEngine, tokenizer: PreTrainedTokenizerBase, rows: Sequence[dict], n: int,
                      sampling: SamplingParams, rows_per_batch: int | None, verifier: RewardFn = math_answer_reward,
                      first: int = 0) -> tuple[list[list[str]], list[list[bool]], list[list[int]]]:
    """Texts, answer-check verdicts and token lengths of ``n`` responses per row, generated ``rows_per_batch``
    rows at a time (None: in one call, which the engine cuts by its own token budget); a sampled problem draws
    from a seed of its own (from ``sampling.seed`` and its position, the first row being at ``first``), so its
    samples depend neither on the batching nor on the rank that evaluates it."""
    texts: list[list[str]] = []
    correct: list[list[bool]] = []
    lengths: list[list[int]] = []
    size = max(1, len(rows) if rows_per_batch is None else rows_per_batch // n)
    for start, part in zip(range(0, len(rows), size), _chunks(rows, size)):
        if sampling.temperature > 0 and sampling.seed is not None:
            sampling = replace(sampling, seeds=tuple(derive_seed(sampling.seed, "eval", first + start + i)
                                                     for i in range(len(part))))
        rollouts = engine.generate(encode_prompts(tokenizer, [r["prompt"] for r in part]), n, sampling)
        outs = rollouts.response_texts(tokenizer)
        verdicts = call_reward(verifier, [r for r in part for _ in range(n)], outs)
        lens = rollouts.response_lengths.tolist()
        for i in range(len(part)):
            sl = slice(i * n, (i + 1) * n)
            texts.append(outs[sl])
            correct.append([v == 1.0 for v in verdicts[sl]])
            lengths.append(lens[sl])
    return texts, correct, lengths


def evaluate(engine: RolloutEngine, tokenizer: PreTrainedTokenizerBase, rows: Sequence[dict], *, split: str,
             ks: Sequence[int] = (1, 8), n_samples: int | None = None, temperature: float = 1.0,
             max_new_tokens: int = 128, seed: int = 0, rows_per_batch: int | None = 512,
             verifier: RewardFn = math_answer_reward, with_greedy: bool = True,
             ranks: Ranks | None = None) -> EvalReport | None:
    """Greedy decoding once (unless ``with_greedy`` is False) and ``n_samples`` (default ``max(ks)``) sampled
    responses per problem, each checked by ``verifier`` (a reward in TRL's convention: 1.0 is correct). With
    several ``ranks``, each evaluates its share of the problems and rank 0 gets the report (None on the others)."""
    n = n_samples or max(ks)
    if max(ks) > n:
        raise ValueError(f"pass@{max(ks)} needs at least {max(ks)} samples per problem, got {n}")
    ranks = ranks or Ranks()
    share, first = ranks.split(rows)
    greedy = SamplingParams(temperature=0.0, max_new_tokens=max_new_tokens, behaviour_logp=False)
    greedy_ok = (_sample_and_check(engine, tokenizer, share, 1, greedy, rows_per_batch, verifier, first)[1]
                 if with_greedy else [[None]] * len(share))
    sampled = SamplingParams(temperature=temperature, max_new_tokens=max_new_tokens, seed=seed, behaviour_logp=False)
    texts, correct, lengths = _sample_and_check(engine, tokenizer, share, n, sampled, rows_per_batch, verifier, first)
    mine = [ProblemScore(prompt=r["prompt"] if isinstance(r["prompt"], str) else json.dumps(r["prompt"]),
                         answer=str(r["answer"]), n=n, correct=sum(c), greedy_correct=g[0],
                         distinct_paths=distinct_correct_paths(t, c), mean_length=sum(ln) / n)
            for r, t, c, g, ln in zip(share, texts, correct, greedy_ok, lengths)]
    problems = [p for part in ranks.gather(mine) for p in part]
    if not ranks.main:
        return None
    counts = [(p.n, p.correct) for p in problems]
    solved = [p for p in problems if p.correct]
    return EvalReport(
        split=split,
        greedy_accuracy=sum(p.greedy_correct for p in problems) / len(problems) if with_greedy else None,
        pass_at_k={k: mean_pass_at_k(counts, k) for k in ks},
        mean_length=sum(p.mean_length for p in problems) / len(problems),
        mean_distinct_paths=sum(p.distinct_paths for p in solved) / len(solved) if solved else 0.0,
        problems=problems,
    )


def evaluate_sets(engine: RolloutEngine, tokenizer: PreTrainedTokenizerBase, sets: dict[str, Sequence[dict]], *,
                  ks: Sequence[int], samples: int, temperature: float, max_new_tokens: int, seed: int,
                  report_dir: Path | None = None, tag: str | None = None, ranks: Ranks | None = None
                  ) -> dict[str, float]:
    """pass@k, greedy accuracy, length and distinct correct paths on every held-out set, as flat metrics
    (``eval/<set>/<name>``); with a ``tag`` the per-problem reports are kept as ``<report_dir>/<tag>_<set>.json``
    (what ``guidedrl analyze`` and ``guidedrl report`` read). Each set is decoded in one engine call (the engine
    cuts it by its token budget); with several ``ranks`` each decodes its share and only rank 0 gets metrics and
    writes reports."""
    metrics: dict[str, float] = {}
    for name, rows in sets.items():
        report = evaluate(engine, tokenizer, rows, split=name, ks=ks, n_samples=samples, temperature=temperature,
                          max_new_tokens=max_new_tokens, seed=seed, rows_per_batch=None, ranks=ranks)
        if report is None:
            continue
        if tag is not None and report_dir is not None:
            report_dir.mkdir(parents=True, exist_ok=True)
            report.write_json(report_dir / f"{tag}_{name}.json")
        metrics[f"eval/{name}/greedy"] = report.greedy_accuracy
        metrics.update({f"eval/{name}/pass@{k}": v for k, v in report.pass_at_k.items()})
        metrics[f"eval/{name}/distinct_paths"] = report.mean_distinct_paths
        metrics[f"eval/{name}/length"] = report.mean_length
    return metrics
