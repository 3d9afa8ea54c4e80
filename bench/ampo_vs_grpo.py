"""AMPO vs GRPO (and LUFFY) on the embedded world: equal steps, same seeds, held-out ID/OOD pass@k.

    python bench/ampo_vs_grpo.py [--seeds 0 1 2] [--steps 60] [--out runs/bench/ampo_vs_grpo] [--set key=value ...]

Prints mean ± std over seeds of pass@1 and pass@16 (ID, OOD), distinct correct paths, median step
time, and the step at which AMPO's periodic evaluation first reaches GRPO's final ID pass@1.
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

from compare import run, save, setup, step_time, table
from rich.console import Console


def steps_to_reach(evals: list[dict], target: float) -> int | None:
    """First logged evaluation step whose ID pass@1 is at least ``target``."""
    for record in evals:
        if record.get("eval/test_id/pass@1", -1.0) >= target:
            return int(record["step"])
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--methods", nargs="+", default=["grpo", "ampo"])
    parser.add_argument("--eval-every", type=int, default=20)
    parser.add_argument("--out", type=Path, default=Path("runs/bench/ampo_vs_grpo"))
    parser.add_argument("--set", nargs="*", default=[], help="config overrides for every run, e.g. optim.lr=3e-4")
    args = parser.parse_args()
    setup()
    overrides = ["eval.samples=16", "eval.ks=[1,16]", f"eval.every={args.eval_every}", "eval.max_problems=100",
                 *args.set]
    results = {m: [run(f"{m}.yaml", s, args.steps, args.out, overrides) for s in args.seeds] for m in args.methods}
    save(results, args.out)
    console = Console()
    console.print(table(results, (1, 16), f"{' vs '.join(args.methods)}: {args.steps} steps, seeds {args.seeds}"))
    if "grpo" in results and "ampo" in results:
        reach = []
        for grpo, ampo in zip(results["grpo"], results["ampo"]):
            reach.append(steps_to_reach(ampo["evals"] + [{"step": args.steps, **ampo["after"]}],
                                        grpo["after"]["eval/test_id/pass@1"]))
        console.print(f"steps for AMPO to reach GRPO's final ID pass@1, per seed: {reach}")
        ratio = statistics.fmean(step_time(a) / step_time(g) for g, a in zip(results["grpo"], results["ampo"]))
        console.print(f"AMPO step time / GRPO step time: {ratio:.2f}")


if __name__ == "__main__":
    main()
