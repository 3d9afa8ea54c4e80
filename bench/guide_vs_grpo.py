"""Guide-GRPO vs GRPO (and Guide-PPO vs PPO) on the embedded world: equal steps, same seeds.

    python bench/guide_vs_grpo.py [--seeds 0 1 2] [--steps 60] [--methods grpo guide_grpo ppo guide_ppo]

Prints mean ± std over seeds of held-out pass@1 and pass@16 (ID, OOD), and the capability-gain
counts of the Guide paper (per held-out ID problem: compressed, capability gain, ...), summed over seeds.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from compare import run, save, setup, table
from rich.console import Console
from rich.table import Table

from guidedrl.eval.capability import CATEGORIES, capability_table


def capability_counts(out: Path, method: str, seeds: list[int], split: str = "test_id") -> dict[str, int]:
    """Capability-gain categories of one method's runs, summed over seeds."""
    total = dict.fromkeys(CATEGORIES, 0)
    for seed in seeds:
        run_dir = out / method / f"seed{seed}" / "eval"
        before, after = (json.loads((run_dir / f"{tag}_{split}.json").read_text())["problems"] for tag in ("before", "after"))
        for category, count in capability_table(before, after, 16)["counts"].items():
            total[category] += count
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--methods", nargs="+", default=["grpo", "guide_grpo", "ppo", "guide_ppo"])
    parser.add_argument("--out", type=Path, default=Path("runs/bench/guide_vs_grpo"))
    args = parser.parse_args()
    setup()
    overrides = ["eval.samples=16", "eval.ks=[1,16]", "eval.every=0", "eval.max_problems=100"]
    results = {m: [run(f"{m}.yaml", s, args.steps, args.out, overrides) for s in args.seeds] for m in args.methods}
    save(results, args.out)
    console = Console()
    console.print(table(results, (1, 16), f"{' vs '.join(args.methods)}: {args.steps} steps, seeds {args.seeds}"))
    gains = Table(title="held-out ID problems by what training changed (pass@16 before decides 'solvable'), summed over seeds")
    gains.add_column("method")
    for category in CATEGORIES:
        gains.add_column(category, justify="right")
    for method in args.methods:
        counts = capability_counts(args.out, method, args.seeds)
        gains.add_row(method, *[str(counts[c]) for c in CATEGORIES])
    console.print(gains)


if __name__ == "__main__":
    main()
