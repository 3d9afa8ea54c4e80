"""Every preset's first steps, step by step: reward, loss and gradient norm, to check that a refactor changes no
number. Run it on two checkouts and compare:

    PYTHONPATH=OLD/src python bench/preset_trace.py --out runs/trace_old.json
    PYTHONPATH=src python bench/preset_trace.py --out runs/trace_new.json
    python bench/preset_trace.py --compare runs/trace_old.json runs/trace_new.json

Each run trains on the shipped world with a few prompts per step and no evaluation; the figures are the
logger's (``metrics.jsonl``).
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import torch
from rich.console import Console

from bench_env import environment
from guidedrl.config import TrainConfig
from guidedrl.trainer.logger import read_metrics
from guidedrl.trainer.loop import Trainer
from guidedrl.yaml_config import load_config

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
# every RL preset (sft_grpo and sft_ampo are grpo and ampo started from an SFT model)
PRESETS = ("grpo", "ampo", "luffy", "guide_grpo", "ppo", "guide_ppo", "tgpo", "rkl_distill", "self_distill")
KEYS = ("reward", "loss", "grad_norm")
SMALL = ("rollout.prompts_per_step=4", "rollout.group_size=4", "save_every=0", "eval.before=false",
         "eval.max_problems=2", "eval.samples=2", "eval.ks=[1,2]")


def trace(preset: str, steps: int, out: Path) -> list[dict[str, float]]:
    """``steps`` steps of ``configs/<preset>.yaml`` from scratch: the traced keys of each step."""
    torch.set_num_threads(1)
    cfg = load_config(CONFIGS / f"{preset}.yaml", TrainConfig, [f"steps={steps}", f"output_dir={out}", *SMALL])
    Trainer(cfg, console=Console(quiet=True)).train()
    return [{k: row[k] for k in KEYS if k in row} for row in read_metrics(out / "metrics.jsonl") if "reward" in row]


FLOOR = 1e-4  # figures nearer 0 than this are compared absolutely (PPO's loss of whitened advantages is ~1e-8)


def compare(old: dict, new: dict) -> float:
    """The largest relative difference of any traced figure, printed per preset."""
    worst = 0.0
    for preset in [p for p in old["presets"] if p in new["presets"]]:
        a, b = old["presets"][preset], new["presets"][preset]
        if len(a) != len(b):
            print(f"{preset}: steps differ")
            worst = float("inf")
            continue
        diff = max((abs(x[k] - y[k]) / max(abs(x[k]), abs(y[k]), FLOOR) for x, y in zip(a, b) for k in x),
                   default=0.0)
        worst = max(worst, diff)
        print(f"{preset:13s} max relative difference {diff:.2e}")
    for preset in set(old["presets"]) ^ set(new["presets"]):
        print(f"{preset:13s} traced on one side only")
    return worst


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--presets", default=",".join(PRESETS))
    parser.add_argument("--out", type=Path, default=Path("runs/preset_trace.json"))
    parser.add_argument("--compare", nargs=2, type=Path, metavar=("OLD", "NEW"))
    args = parser.parse_args()
    if args.compare:
        old, new = (json.loads(p.read_text()) for p in args.compare)
        print(f"largest relative difference: {compare(old, new):.2e}")
        return
    result = {"environment": environment(), "steps": args.steps, "presets": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for preset in args.presets.split(","):
            result["presets"][preset] = trace(preset, args.steps, Path(tmp) / preset)
            print(preset, result["presets"][preset][-1])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
