"""What one method's training logs say at each rate of the headline sweep, per tenth of the steps: the
training reward, the share of groups whose samples all fail, the share guided and, for inserted teacher
text, the student's mean probability of its tokens (does the student learn what it is shown?).

Runs are the headline's sweep runs (same config, seed, steps and evaluation); a finished one in ``--out`` is
read, not trained again. An ablation is the same with config overrides, named by a tag:

    python bench/trace.py --method ampo [--lrs 1.25e-5 2.5e-5 1e-4 2e-4] [--out runs/bench/headline/sweep]
    python bench/trace.py --method ampo --lrs 2.5e-5 --tag plain --set "algorithm.surrogate.teacher={name: plain}"

Writes ``runs/bench/trace_<method>[_<tag>].json`` (or ``--result``); ``--update-docs`` also stores it as
``bench/results/trace_<method>[_<tag>].json`` and re-renders the docs' tables (bench/publish.py).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from bench_env import environment
from compare import setup
from headline import eval_overrides, over_training, run
from protocol import add_protocol
from publish import add_result_options, save_result, settings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--method", default="ampo", help="a config of configs/")
    parser.add_argument("--lrs", type=float, nargs="+", default=[1.25e-5, 2.5e-5, 1e-4, 2e-4])
    parser.add_argument("--seed", type=int, default=0)
    add_protocol(parser, "steps", "samples", "problems")
    parser.add_argument("--out", type=Path, default=Path("runs/bench/headline/sweep"))
    parser.add_argument("--set", nargs="*", default=[], help="config overrides (an ablation; name it with --tag)")
    parser.add_argument("--tag", default=None, help="the ablation's name: its runs go to OUT/<tag>/")
    add_result_options(parser, "trace_<method>[_<tag>]")
    args = parser.parse_args()
    setup()
    traced = {}
    for lr in args.lrs:
        out = (args.out / args.tag if args.tag else args.out) / f"lr{lr:g}"
        result = run(f"{args.method}.yaml", args.seed, args.steps, out,
                     [*eval_overrides(args.samples, args.problems), *args.set, f"optim.lr={lr}"])
        traced[f"{lr:g}"] = {
            **over_training(out / args.method / f"seed{args.seed}", 10),
            "after": {k: v for k, v in result["after"].items() if k.endswith(("/pass@1", f"/pass@{args.samples}"))}}
        print(f"lr {lr:g}:", {k: [round(v, 3) for v in c] for k, c in traced[f"{lr:g}"].items() if k != "after"})
    save_result({"environment": environment(), "settings": settings(args), "traced": traced}, args,
                f"trace_{args.method}{f'_{args.tag}' if args.tag else ''}")


if __name__ == "__main__":
    main()
