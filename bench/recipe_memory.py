"""The memory estimate of every shipped recipe (configs/recipes/) on its stated hardware, from the published
shapes of Qwen2.5-Math-1.5B / 7B (configs/models/): the table the docs show, and the one-line summary each
recipe carries in its header (``--write`` rewrites those lines; tests/test_recipes.py checks they are current).

    PYTHONPATH=bench python bench/recipe_memory.py [--write]
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RECIPES = sorted((ROOT / "configs" / "recipes").glob("*.yaml"))
SHAPES = ROOT / "configs" / "models"
SUMMARY = re.compile(r"^# Memory \(estimate\): .*\n", re.MULTILINE)


def shape_of(path: str) -> Path:
    """The shape folder standing for a recipe's model path (by its size in the name)."""
    return SHAPES / ("qwen2.5-math-7b" if "7B" in path else "qwen2.5-math-1.5b")


def recipe_estimate(recipe: Path) -> tuple[object, object]:
    """A recipe's config and its estimate per process (model and teacher read from their shapes)."""
    from guidedrl.config import TrainConfig
    from guidedrl.memory.plan import plan
    from guidedrl.yaml_config import load_config

    cfg = load_config(recipe, TrainConfig)
    teachers = {name: shape_of(spec.path) for name, spec in cfg.teacher_signal.scoring_teachers().items()}
    return cfg, plan(cfg, shape_of(cfg.model), teachers)


def summary(cfg: object, estimate: object) -> str:
    """The header line a recipe carries."""
    m = cfg.memory
    hardware = f"{m.processes} × {m.gpu_memory_gib:g} GiB" + (f", {m.sharding}-sharded" if m.sharding != "none" else "")
    return (f"# Memory (estimate): {estimate.total / 1024 ** 3:.1f} GiB per process on {hardware} "
            f"(bench/recipe_memory.py; docs: Memory)\n")


def write(recipe: Path, line: str) -> None:
    """Replace (or add, after the header comment) the recipe's summary line."""
    text = recipe.read_text()
    if SUMMARY.search(text):
        text = SUMMARY.sub(line, text)
    else:
        lines = text.splitlines(keepends=True)
        n = next(i for i, ln in enumerate(lines) if not ln.startswith("#"))
        text = "".join(lines[:n]) + line + "".join(lines[n:])
    recipe.write_text(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help="rewrite each recipe's summary line")
    args = parser.parse_args()
    from bench_env import environment
    env = environment()
    print(f"{env['date']}, guidedrl {env['guidedrl']}, transformers {env['transformers']} (estimates, not measured)")
    for recipe in RECIPES:
        cfg, estimate = recipe_estimate(recipe)
        print(f"\n{recipe.relative_to(ROOT)}: {'fits' if estimate.fits else 'DOES NOT FIT'}")
        print("\n".join(estimate.lines()))
        if args.write:
            write(recipe, summary(cfg, estimate))


if __name__ == "__main__":
    main()
