"""``make demo`` as a newcomer runs it, timed: the output the README shows (rendered from bench/results/demo.json
by the demo's own table and sentence functions) and the wall time it takes on this machine.

    python bench/demo.py --update-docs
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import yaml

from bench_env import environment
from guidedrl.data import load_rows
from publish import add_result_options, save_result, settings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--world", type=Path, default=Path("worlds/default"))
    parser.add_argument("--out", type=Path, default=Path("runs/bench/demo"))
    add_result_options(parser, "demo")
    args = parser.parse_args()
    start = time.perf_counter()  # the whole command, as `make demo` runs it once set up: start-up included
    subprocess.run([sys.executable, "-m", "guidedrl", "demo", "--world", str(args.world), "--out", str(args.out)],
                   check=True)
    wall = time.perf_counter() - start
    comparison = json.loads((args.out / "comparison.json").read_text())
    steps = yaml.safe_load((args.out / next(iter(comparison)) / "config.yaml").read_text())["steps"]
    target = load_rows(args.out / "target.jsonl")
    save_result({"environment": environment(), "settings": settings(args), "wall_s": round(wall, 1), "steps": steps,
                 "target": [row["n_operands"] for row in target], "methods": comparison},
                args, "demo")
    print(f"make demo's command: {wall / 60:.1f} min")


if __name__ == "__main__":
    main()
