"""The untrained student on the headline's held-out problems, under the headline's evaluation: the reference row
of the per-kind tables (bench/headline.py evaluates only after training).

Same problems (the first ``--problems`` of each split), samples, temperature, length limit and evaluation seeds
(one per training seed, as each run evaluates with its own seed) as the headline runs.

    python bench/untrained.py [--model worlds/default/models/student] [--seeds 0 1 2 3 4]

Writes ``runs/bench/untrained.json`` (``--update-docs``: also ``bench/results/``, read by the docs' headline
tables): per-problem (samples, correct, distinct paths) per split and seed, in
the layout of headline.py's ``problems``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from bench_env import environment
from compare import setup
from guidedrl.data import load_rows, validate_rows
from guidedrl.eval.evaluate import evaluate
from guidedrl.rollout.loading import load_for_sampling
from protocol import add_protocol
from publish import add_result_options, save_result, settings

SPLITS = ("test_id", "test_ood")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--world", type=Path, default=Path("worlds/default"))
    parser.add_argument("--model", default="student", help="a model of the world's zoo")
    add_protocol(parser, "seeds", "samples", "problems")
    parser.add_argument("--max-new-tokens", type=int, default=64, help="the presets' rollout.max_new_tokens")
    add_result_options(parser, "untrained")
    args = parser.parse_args()
    setup()
    model_dir = args.world / "models" / args.model
    tokenizer, _, engine = load_for_sampling(model_dir)
    sets = {split: validate_rows(load_rows(args.world / "data" / f"{split}.jsonl"), split)[:args.problems]
            for split in SPLITS}
    problems: dict[str, list] = {split: [] for split in SPLITS}
    for seed in args.seeds:
        for split, rows in sets.items():
            report = evaluate(engine, tokenizer, rows, split=split, ks=[1, args.samples], n_samples=args.samples,
                              temperature=1.0, max_new_tokens=args.max_new_tokens, seed=seed)
            problems[split].append([(p.n, p.correct, p.distinct_paths) for p in report.problems])
            print(f"seed {seed} {split}: pass@1 {100 * report.pass_at_k[1]:.1f}, "
                  f"pass@{args.samples} {100 * report.pass_at_k[args.samples]:.1f}")
    result = {"environment": environment(), "settings": settings(args), "problems": {args.model: problems}}
    save_result(result, args, "untrained")


if __name__ == "__main__":
    main()
