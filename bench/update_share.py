"""Where the update goes: per step, the gradient norm of the teacher tokens' policy-gradient term beside the
student's own (``optim.grad_norm_by_kind``), for AMPO and LUFFY at the guidance regime's rate, to put beside
its positive control (docs/benchmarks.md, "The guidance regime").

    python bench/update_share.py                  # ampo and luffy, 60 steps at lr 5e-5, seed 0
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

from bench_env import environment
from compare import run as run_once
from compare import setup
from publish import add_result_options, save_result, settings

KINDS = ("policy", "teacher")


def shares(steps: list[dict]) -> dict[str, float]:
    """Means over the steps of each kind's gradient norm, of the teacher's share of their sum, and of the teacher
    rows inserted per step."""
    out = {kind: statistics.fmean(s.get(f"grad_norm/{kind}", 0.0) for s in steps) for kind in KINDS}
    out["teacher_share"] = statistics.fmean(
        s.get("grad_norm/teacher", 0.0) / max(s.get("grad_norm/teacher", 0.0) + s.get("grad_norm/policy", 0.0), 1e-12)
        for s in steps)
    out["teacher_rows"] = statistics.fmean(s.get("guidance/teacher/inserted", 0.0) for s in steps)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", nargs="+", default=["ampo", "luffy"])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--lr", type=float, default=5e-5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("runs/update_share"))
    add_result_options(parser, "update_share")
    args = parser.parse_args()
    setup()
    result = {"environment": environment(), "settings": settings(args), "methods": {}}
    for method in args.methods:
        run = run_once(f"{method}.yaml", args.seed, args.steps, args.out, [
            f"optim.lr={args.lr}", "optim.grad_norm_by_kind=true", "eval.before=false", "eval.max_problems=1",
            "eval.samples=1", "eval.ks=[1]"])
        tenth = max(args.steps // 10, 1)
        result["methods"][method] = {"all": shares(run["steps"]), "first": shares(run["steps"][:tenth]),
                                     "last": shares(run["steps"][-tenth:])}
        print(method, result["methods"][method])
    save_result(result, args, "update_share")


if __name__ == "__main__":
    main()
