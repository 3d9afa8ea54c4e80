"""What keeps the guidance regime's target class from moving: the loss on the teacher tokens, or the teachers whose
text is inserted? AMPO and LUFFY trained again in the regime (bench/guidance_regime.py) at seed 0 and the rate
each chose there, in variants that change one or both: the teacher tokens' surrogate ``logp`` (−A·log π_θ, SFT's
gradient times the advantage) instead of ``shaped`` (−A·π_θ/(π_θ + γ), whose gradient is at most a quarter of
that), and the inserted solutions from one teacher's stored ones (the positive control's teacher_steps) instead of
the method's pool. Each run is paired, problem by problem, with the method's published seed-0 run
(bench/results/guidance_regime.json).

A diagnostic added after the regime's comparison was seen (docs/benchmarks.md says so); no target is attached.
Beside the scores, each run's training log: the student's probability of the inserted teacher tokens and its
training reward in the first and last tenth of the steps, and which teachers' solutions were inserted (the
published run's log is read from ``--regime-out`` when its folder is there).

    python bench/teacher_loss.py --update-docs
"""

from __future__ import annotations

import argparse
from pathlib import Path

from bench_env import environment
from compare import run as run_once
from compare import setup
from guidance_regime import held_out, paired_by_set, public
from guidedrl.files import read_json
from guidedrl.trainer.logger import read_metrics
from publish import add_result_options, save_result, settings


def training_log(run_dir: Path) -> dict | None:
    """Teacher-token probability and training reward, means over the first and the last tenth of the steps, and
    each teacher's share of the inserted solutions; None when the run's log is not there."""
    steps = [r for r in read_metrics(run_dir / "metrics.jsonl") if "reward" in r]
    if not steps:
        return None
    tenth = max(len(steps) // 10, 1)

    def mean(key: str, part: list[dict]) -> float:
        found = [r[key] for r in part if key in r]
        return sum(found) / len(found) if found else float("nan")

    prefix = "guidance/teacher/selected/"
    counts = {k[len(prefix):]: sum(r.get(k, 0.0) for r in steps) for k in {k for r in steps for k in r
                                                                            if k.startswith(prefix)}}
    return {**{f"{key}/{part}": mean(key, steps[:tenth] if part == "first" else steps[-tenth:])
               for key in ("teacher_prob_mean", "reward") for part in ("first", "last")},
            "selected": {k: v / max(sum(counts.values()), 1.0) for k, v in sorted(counts.items())}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--regime", type=Path, default=Path("bench/results/guidance_regime.json"),
                        help="the published regime result: its settings, rates and seed-0 tables")
    parser.add_argument("--methods", nargs="+", default=["ampo", "luffy"])
    parser.add_argument("--variants", nargs="+", default=["logp", "logp:teacher_steps", "shaped:teacher_steps"],
                        help="SURROGATE[:TEACHER]: the teacher tokens' surrogate, and with TEACHER the inserted "
                        "solutions from that teacher's stored ones only (the positive control's is teacher_steps)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("runs/teacher_loss"))
    parser.add_argument("--regime-out", type=Path, default=Path("runs/guidance_regime"),
                        help="the regime's run folders (for the published runs' training logs)")
    add_result_options(parser, "teacher_loss")
    args = parser.parse_args()
    published = read_json(args.regime)
    s = published["settings"]
    setup()
    overrides, regime = held_out(Path(s["world"]), args.out, s["target_problems"], s["validation_problems"],
                                 s["samples"])
    result = {"environment": environment(), "settings": settings(args),
              "regime": {k: s[k] for k in ("world", "steps", "target_problems", "samples")}, "methods": {}}
    for method in args.methods:
        lr, seed = published["chosen_lr"][method], str(args.seed)
        entry = result["methods"][method] = {
            "lr": lr, "published": published["methods"][method][seed], "variants": {},
            "log": training_log(args.regime_out / f"lr{lr}" / method / f"seed{args.seed}")}
        for variant in args.variants:
            surrogate, _, teacher = variant.partition(":")
            out = args.out / variant.replace(":", "_") / f"lr{lr}"
            pool = [f"guidance.teachers=[{{kind: offline, teachers: [{teacher}]}}]"] if teacher else []
            run_once(f"{method}.yaml", args.seed, s["steps"], out, [
                *overrides, f"optim.lr={lr}", "eval.before=false", f"algorithm.surrogate.teacher.name={surrogate}",
                *pool], reuse=True)
            run_dir = out / method / f"seed{args.seed}"
            found = regime.score(run_dir / "final", run_dir / "eval")
            entry["variants"][variant] = {**public(found), "log": training_log(run_dir),
                                               "diff": paired_by_set([found["problems"]],
                                                                     [published["problems"][method][seed]],
                                                                     s["samples"])}
            print(method, variant, entry["variants"][variant])
            save_result(result, args, "teacher_loss")


if __name__ == "__main__":
    main()
