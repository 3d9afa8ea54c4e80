"""The headline comparison: each method at its best learning rate of one small sweep, several seeds, paired.

Protocol (fixed before any run, written in docs/benchmarks.md): the world and its splits are the shipped default; the
learning rate of each method is chosen on the sweep seed by its *training* reward (mean over the last fifth of
the steps: no held-out problem is seen), then every seed is trained at that rate; the held-out evaluation
samples ``--samples`` answers per problem after training (a finished run evaluated with fewer samples is
evaluated again from its final weights, with its own seed and settings). Differences to GRPO are paired (same seed, same
problem, same evaluation seed) and their 95% intervals come from a crossed bootstrap over seeds and problems
(bench/paired.py). Every configuration tried is kept in the result file.

    python bench/headline.py [--methods grpo ampo luffy] [--seeds 0 1 2 3 4] [--steps 300] [--lrs 2.5e-5 5e-5 1e-4 2e-4]
    python bench/headline.py --methods grpo guide_grpo --prior bench/results/headline.json \
        --name headline_guide       # GRPO keeps the sweep it chose its rate in

A method swept in ``--prior`` (earlier result files of the same protocol) keeps that sweep's record; rates of
``--lrs`` it did not try are tried on the sweep seed and added, and the rate is chosen again over them all. If the
rate stays and a prior file holds the method's per-problem scores under the same ``PROTOCOL``, they are used; else
its runs at that rate are trained again where their folders are gone (seeded: the same runs).

    python bench/headline.py --prior OLD.json --lrs 2.5e-5  # OLD's sweep widened by one rate

Writes ``runs/bench/headline.json`` (or ``--result``); ``--update-docs`` also stores it as
``bench/results/headline.json`` and re-renders the docs' tables (bench/publish.py).
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from bench_env import environment
from compare import run as run_once
from compare import setup
from guidedrl.config import TrainConfig
from guidedrl.data import load_rows, validate_rows
from guidedrl.eval.evaluate import evaluate_sets
from guidedrl.rollout.loading import load_for_sampling
from guidedrl.trainer.logger import read_metrics
from guidedrl.trainer.paths import RunPaths
from guidedrl.yaml_config import load_config
from paired import mean_distinct_paths, mean_pass_at_k, paired_diffs
from protocol import PROTOCOL, add_protocol
from publish import add_result_options, save_result, settings

SPLITS = ("test_id", "test_ood")


def pass_ks(samples: int) -> list[int]:
    """The k of the pass@k curve: powers of two up to the samples per problem."""
    return [k for k in (1, 2, 4, 8, 16, 32, 64) if k <= samples]


def eval_overrides(samples: int, problems: int) -> list[str]:
    """The headline's evaluation: only after training, ``samples`` answers to each of ``problems`` per split."""
    return [f"eval.samples={samples}", f"eval.ks={json.dumps(pass_ks(samples))}", f"eval.max_problems={problems}",
            "eval.every=0", "eval.before=false"]


def per_problem(run_dir: Path, split: str) -> list[tuple[int, int, int]]:
    """(samples, correct, distinct correct paths) of each problem of a run's final evaluation."""
    report = json.loads((run_dir / "eval" / f"after_{split}.json").read_text())
    return [(p["n"], p["correct"], p["distinct_paths"]) for p in report["problems"]]


def widen(run_dir: Path, samples: int, ks: list[int]) -> None:
    """Evaluate a finished run again from its final weights when its reports hold fewer than ``samples``
    answers per problem: same held-out problems, evaluation seed, temperature and length limit as the run's."""
    if all(n >= samples for n, _, _ in per_problem(run_dir, SPLITS[0])):
        return
    cfg = load_config(run_dir / "config.yaml", TrainConfig)
    tokenizer, _, engine = load_for_sampling(run_dir / "final", what="final")
    sets = {name: validate_rows(load_rows(path), str(path))[:cfg.eval.max_problems]
            for name, path in RunPaths.resolve(cfg).eval_sets.items()}
    evaluate_sets(engine, tokenizer, sets, ks=ks, samples=samples, temperature=cfg.eval.temperature,
                  max_new_tokens=cfg.rollout.max_new_tokens, seed=cfg.seed, report_dir=run_dir / "eval", tag="after")


def over_training(run_dir: Path, buckets: int) -> dict[str, list[float]]:
    """Per tenth (``buckets``) of the steps: the training reward, the share of groups whose on-policy samples all
    failed, the share guided (teacher or hint rate; absent for unguided methods), for hints the share of hinted
    groups with a correct sample and of hinted samples correct, for a teacher signal the share of the student's
    tokens that differ from the teacher's argmax, for inserted teacher text the student's mean probability of its
    tokens, and the median step time."""
    steps = [r for r in read_metrics(run_dir / "metrics.jsonl") if "reward" in r]
    size = max(1, len(steps) // buckets)
    parts = [steps[i:i + size] for i in range(0, size * buckets, size)]
    curves = {"reward": [statistics.fmean(r["reward"] for r in part) for part in parts],
              "all_wrong": [statistics.fmean(r["all_wrong"] for r in part) for part in parts],
              "step_time": [statistics.median(r["step_time"] for r in part) for part in parts]}
    for key in ("guidance/teacher/rate", "guidance/hint/rate"):
        if any(key in r for r in steps):
            curves["guided"] = [statistics.fmean(r.get(key, 0.0) for r in part) for part in parts]
    for name, key in (("rescued", "guidance/hint/rescued"), ("hint_accuracy", "guidance/hint/accuracy"),
                      ("mismatch", "teacher_signal/mismatch_ratio"), ("teacher_prob", "teacher_prob_mean")):
        if any(key in r for r in steps):  # means over the steps that log them
            curves[name] = [statistics.fmean([r[key] for r in part if key in r] or [0.0]) for part in parts]
    return curves


def merge_priors(paths: list[Path]) -> dict:
    """Sweeps and chosen rates of earlier result files (for a method in several, the first file decides), and
    every file's per-problem scores of a method with the figures, rate and protocol (``PROTOCOL``) they have."""
    merged: dict = {"sweep": {}, "chosen_lr": {}, "scores": {}}
    for path in paths:
        result = json.loads(path.read_text())
        for method in result["sweep"]:
            if method not in merged["sweep"]:
                merged["sweep"][method] = result["sweep"][method]
                merged["chosen_lr"][method] = result["chosen_lr"][method]
        for method, problems in result.get("problems", {}).items():
            merged["scores"].setdefault(method, []).append(
                {"source": path.name, "problems": problems, "figures": result["methods"][method],
                 "protocol": {k: result["settings"][k] for k in PROTOCOL}})
    return merged


def reusable_scores(prior: dict, chosen: dict[str, str], protocol: dict) -> dict[str, dict]:
    """Per method, the stored scores (of ``merge_priors``) at the method's chosen rate under the same protocol,
    or under the same protocol but for fewer seeds, all of them among ``protocol``'s; of several, the one with
    the most seeds, then the first. The runs of its seeds (``seeds`` of the entry) need no training again."""
    def fits(entry: dict, lr: str) -> bool:
        stored = entry["protocol"]
        return (entry["figures"]["lr"] == lr and set(stored["seeds"]) <= set(protocol["seeds"])
                and all(stored[k] == protocol[k] for k in PROTOCOL if k != "seeds"))
    found = {m: [c for c in prior["scores"].get(m, []) if fits(c, lr)] for m, lr in chosen.items()}
    best = {m: max(entries, key=lambda c: len(c["protocol"]["seeds"])) for m, entries in found.items() if entries}
    return {m: {**entry, "seeds": entry["protocol"]["seeds"]} for m, entry in best.items()}


def combine(seeds: list[int], kept: dict | None, trained: dict[int, dict], curves: dict[int, dict]
            ) -> tuple[dict, dict]:
    """A method's per-problem scores in ``seeds`` order, each seed's from ``kept`` (stored scores) or from its
    run in ``trained`` (split -> scores), and its over-training curves as the mean over all seeds (the stored
    curves are a mean over the kept seeds: weighted by their number, the mean over every seed is exact)."""
    have = kept["seeds"] if kept else []
    scores = {split: [kept["problems"][split][have.index(s)] if s in have else trained[s][split] for s in seeds]
              for split in SPLITS}
    parts = [(len(have), kept["figures"]["over_training"])] if have else []
    parts += [(1, curves[s]) for s in seeds if s not in have]
    keys = parts[0][1].keys()
    history = {key: [sum(w * c[key][i] for w, c in parts) / len(seeds) for i in range(len(parts[0][1][key]))]
               for key in keys}
    return scores, history


def reward_tail(steps: list[dict]) -> float:
    """The selection score of a sweep run: its mean training reward over the last fifth of its steps."""
    return statistics.fmean(s["reward"] for s in steps[-max(1, len(steps) // 5):])


def run(config: str, seed: int, steps: int, out: Path, overrides: list[str]) -> dict:
    """One training run, or, when its folder already holds a finished one (an interrupted bench restarted),
    that run's summary and step log."""
    run_dir = out / Path(config).stem / f"seed{seed}"
    if (run_dir / "summary.json").exists():
        records = read_metrics(run_dir / "metrics.jsonl")
        return {**json.loads((run_dir / "summary.json").read_text()), "steps": [r for r in records if "reward" in r]}
    return run_once(config, seed, steps, out, overrides)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", nargs="+", default=["grpo", "ampo", "luffy"])
    add_protocol(parser, "seeds", "steps", "samples", "problems")
    parser.add_argument("--lrs", type=float, nargs="+", default=[2.5e-5, 5e-5, 1e-4, 2e-4])
    parser.add_argument("--out", type=Path, default=Path("runs/bench/headline"))
    add_result_options(parser, "headline")
    parser.add_argument("--contrasts", nargs="*", default=["ampo-luffy"],
                        help="more paired differences A-B, where both methods ran")
    parser.add_argument("--set", nargs="*", default=[], help="config overrides for every run")
    parser.add_argument("--prior", type=Path, nargs="*", default=[],
                        help="earlier result files whose sweeps (and per-problem scores) to keep")
    args = parser.parse_args()
    setup()
    ks = pass_ks(args.samples)
    common = [*eval_overrides(args.samples, args.problems), *args.set]
    sweep_seed, tried, chosen = args.seeds[0], {}, {}
    prior = merge_priors(args.prior)
    for method in args.methods:  # the sweep: sweep seed only, chosen by training reward
        tried[method] = dict(prior["sweep"].get(method, {}))
        for lr in [lr for lr in args.lrs if f"{lr:g}" not in tried[method]]:
            out = args.out / "sweep" / f"lr{lr:g}"
            result = run(f"{method}.yaml", sweep_seed, args.steps, out, [*common, f"optim.lr={lr}"])
            tried[method][f"{lr:g}"] = {"train_reward_tail": reward_tail(result["steps"]),
                                        "after": result["after"], "dir": str(out / method / f"seed{sweep_seed}")}
        chosen[method] = max(tried[method], key=lambda lr: tried[method][lr]["train_reward_tail"])
    kept = reusable_scores(prior, chosen, {k: getattr(args, k) for k in PROTOCOL})
    runs: dict[str, dict[int, Path]] = {m: {} for m in args.methods}
    for method in args.methods:
        lr, have = chosen[method], kept.get(method, {}).get("seeds", [])
        missing = [s for s in args.seeds if s not in have]
        if sweep_seed in missing and lr in prior["sweep"].get(method, {}):  # its sweep-seed run is the prior's
            out = args.out / "sweep" / f"lr{lr}"
            again = run(f"{method}.yaml", sweep_seed, args.steps, out, [*common, f"optim.lr={lr}"])
            key = "eval/test_id/pass@1"
            print(f"{method}: the prior's seed-{sweep_seed} run at lr {lr}: {key} "
                  f"{tried[method][lr]['after'][key]:.6f} then, {again['after'][key]:.6f} now")
            tried[method][lr]["dir"] = str(out / method / f"seed{sweep_seed}")
        for seed in missing:
            if seed == sweep_seed:
                runs[method][seed] = Path(tried[method][lr]["dir"])
                continue
            out = args.out / "seeds" / f"lr{lr}"
            run(f"{method}.yaml", seed, args.steps, out, [*common, f"optim.lr={lr}"])
            runs[method][seed] = out / method / f"seed{seed}"
    for method_runs in runs.values():
        for run_dir in method_runs.values():
            widen(run_dir, args.samples, ks)
    figures: dict[str, dict] = {}
    scores: dict[str, dict] = {}
    for method in args.methods:
        trained = {s: {split: per_problem(d, split) for split in SPLITS} for s, d in runs[method].items()}
        curves = {s: over_training(d, 10) for s, d in runs[method].items()}
        scores[method], history = combine(args.seeds, kept.get(method), trained, curves)
        figures[method] = {"lr": chosen[method], "splits": {}, "over_training": history}
        for split in SPLITS:
            table = scores[method][split]
            curve = {k: mean_pass_at_k(table, k) for k in ks}
            entry = {"pass_at_k": curve, "distinct_paths": mean_distinct_paths(table)}
            if method != args.methods[0]:
                entry |= paired_diffs(table, scores[args.methods[0]][split], ks)
            figures[method]["splits"][split] = entry
    pairs = [pair.split("-") for pair in args.contrasts]
    contrasts = {f"{a} − {b}": {split: paired_diffs(scores[a][split], scores[b][split], ks) for split in SPLITS}
                 for a, b in pairs if a in scores and b in scores}
    result = {"environment": environment(), "settings": {**settings(args), "ks": ks},
              "sweep": tried, "chosen_lr": chosen, "swept_before": [m for m in args.methods if m in prior["sweep"]],
              "scores_kept": {m: {"source": found["source"], "seeds": found["seeds"]} for m, found in kept.items()},
              "methods": figures, "contrasts": contrasts,
              "problems": scores}  # (samples, correct, distinct paths) per method, split, seed and problem
    save_result(result, args, "headline")
    for method, f in figures.items():
        print(method, "lr", f["lr"], {s: {k: round(100 * v, 1) for k, v in e["pass_at_k"].items()}
                                      for s, e in f["splits"].items()})
        for split, e in f["splits"].items():
            for key in [k for k in e if k.startswith("diff_")]:
                m, lo, hi = e[key]
                print(f"  {split} {key} vs {args.methods[0]}: {100 * m:+.1f} [{100 * lo:+.1f}, {100 * hi:+.1f}]")
    for name, splits in contrasts.items():
        for split, diffs in splits.items():
            for key, (m, lo, hi) in diffs.items():
                print(f"{name} {split} {key}: {100 * m:+.1f} [{100 * lo:+.1f}, {100 * hi:+.1f}]")


if __name__ == "__main__":
    main()
