"""TGPO's label weight on the embedded world: configs/tgpo.yaml trained on the sweep seed at each schedule
(λ_0, δ) of the label term, at one learning rate, chosen as headline.py chooses a rate (training reward).

The authors' schedule (λ_0 = 0.002, δ = 1e-5) reaches 0 at step 201 of 300; ``--schedules`` takes λ_0:δ pairs, so
the same shape at a larger λ_0 is λ_0:λ_0/200. The held-out figures use the headline's evaluation.

    python bench/tgpo_lambda.py [--lr 5e-5] [--schedules 0.01:0.0001 0.05:0.00025 ...]

Writes ``runs/bench/tgpo_lambda.json`` (or ``--result``); ``--update-docs`` also stores it as
``bench/results/tgpo_lambda.json`` and re-renders the docs' tables (bench/publish.py).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from bench_env import environment
from compare import setup
from headline import eval_overrides, over_training, reward_tail, run
from protocol import add_protocol
from publish import add_result_options, save_result, settings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lr", type=float, default=5e-5, help="TGPO's chosen rate in the headline protocol")
    parser.add_argument("--schedules", nargs="+", default=["0.01:0.0001", "0.01:0.00005", "0.05:0.00025",
                                                           "0.2:0.001", "1.0:0.005"])
    parser.add_argument("--seed", type=int, default=0)
    add_protocol(parser, "steps", "samples", "problems")
    parser.add_argument("--out", type=Path, default=Path("runs/bench/tgpo_lambda"))
    add_result_options(parser, "tgpo_lambda")
    args = parser.parse_args()
    setup()
    common = [*eval_overrides(args.samples, args.problems), f"optim.lr={args.lr}"]
    tried = {}
    for schedule in args.schedules:
        coef, decay = (float(x) for x in schedule.split(":"))
        out = args.out / f"lambda{coef:g}_decay{decay:g}"
        result = run("tgpo.yaml", args.seed, args.steps, out, [
            *common, f"algorithm.regularizers.label_ce.coef={coef}", f"algorithm.regularizers.label_ce.decay={decay}"])
        curves = over_training(out / "tgpo" / f"seed{args.seed}", 10)
        tried[schedule] = {"coef": coef, "decay": decay, "zero_at": 1 + coef / decay if decay else None,
                           "train_reward_tail": reward_tail(result["steps"]),
                           "after": {k: v for k, v in result["after"].items() if "pass@" in k},
                           "mismatch": curves["mismatch"], "all_wrong": curves["all_wrong"]}
        print(schedule, {k: round(v, 4) if isinstance(v, float) else v for k, v in tried[schedule].items()
                         if k in ("train_reward_tail", "zero_at")})
    chosen = max(tried, key=lambda s: tried[s]["train_reward_tail"])
    result = {"environment": environment(), "settings": settings(args),
              "tried": tried, "chosen": chosen}
    save_result(result, args, "tgpo_lambda")
    print("chosen", chosen)


if __name__ == "__main__":
    main()
