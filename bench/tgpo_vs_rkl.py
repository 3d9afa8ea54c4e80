"""TGPO vs reverse-KL distillation vs GRPO, with a divergent teacher (another solution style than the
student's) and a matched one (the student's style): equal steps, same seeds, held-out ID/OOD pass@1.

    python bench/tgpo_vs_rkl.py [--seeds 0 1 2] [--steps 60] [--methods grpo tgpo rkl_distill]
        [--teachers divergent matched] [--set algorithm.regularizers.label_ce.coef=0.01 ...]
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

from compare import run, save, setup, table
from rich.console import Console

TEACHERS = {"divergent": "teacher_rewrite", "matched": "teacher_steps"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--out", type=Path, default=Path("runs/bench/tgpo_vs_rkl"))
    parser.add_argument("--methods", nargs="+", default=["grpo", "tgpo", "rkl_distill"])
    parser.add_argument("--teachers", nargs="+", default=list(TEACHERS), choices=list(TEACHERS))
    parser.add_argument("--set", nargs="*", default=[], help="config overrides for every run, e.g. "
                        "algorithm.regularizers.label_ce.coef=0.01")
    args = parser.parse_args()
    setup()
    evals = ["eval.samples=16", "eval.ks=[1,16]", "eval.every=0", "eval.max_problems=100", *args.set]
    results = {}
    if "grpo" in args.methods:
        results["grpo"] = [run("grpo.yaml", s, args.steps, args.out, evals) for s in args.seeds]
    for kind in args.teachers:
        teacher = TEACHERS[kind]
        for method in [m for m in args.methods if m != "grpo"]:
            out = args.out / kind
            results[f"{method} ({kind})"] = [run(f"{method}.yaml", s, args.steps, out,
                                                 [*evals, f"teacher_signal.path={teacher}"]) for s in args.seeds]
    save(results, args.out)
    console = Console()
    console.print(table(results, (1, 16), f"TGPO vs RKL vs GRPO: {args.steps} steps, seeds {args.seeds}"))
    for name, runs in results.items():
        if "teacher_signal/mismatch_ratio" not in runs[0]["steps"][0]:
            continue
        first = statistics.fmean(r["steps"][0]["teacher_signal/mismatch_ratio"] for r in runs)
        last = statistics.fmean(statistics.fmean(s["teacher_signal/mismatch_ratio"] for s in r["steps"][-10:]) for r in runs)
        console.print(f"{name}: teacher/student mismatch ratio {first:.2f} at step 1, {last:.2f} over the last 10 steps")


if __name__ == "__main__":
    main()
