"""Fill the README's measured tables from the benches' result files, so no figure is typed by hand.

A table lives between ``<!-- bench:NAME -->`` and ``<!-- /bench:NAME -->`` in README.md and is rendered from
``bench/results/NAME.json`` by the function registered for NAME below.

    python bench/render_readme.py            # rewrite README.md in place
    python bench/render_readme.py --check    # exit 1 if README.md is not what the results render to
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
RENDERERS: dict[str, Callable[[dict], str]] = {}


def renders(name: str) -> Callable[[Callable[[dict], str]], Callable[[dict], str]]:
    def add(fn: Callable[[dict], str]) -> Callable[[dict], str]:
        RENDERERS[name] = fn
        return fn
    return add


def environment_line(env: dict) -> str:
    return (f"*{env['machine']}; torch {env['torch']}, transformers {env['transformers']}"
            + (f", trl {env['trl']}" if env.get("trl") else "") + f"; {env['torch_threads']} torch threads; "
            f"measured {env['date']}.*")


@renders("grpo_step")
def grpo_step(r: dict) -> str:
    t, g = r["trl"], r["guidedrl"]
    label = "bf16 autocast (its default)" if r["settings"].get("trl_bf16") else "fp32"
    rows = ["| trainer | median step (s) | where the step goes (median s) |", "|---|---|---|",
            f"| TRL GRPOTrainer, {label} | {t['median_step_s']:.3f} | generate {t['generate']:.3f}, rewards "
            f"{t['reward']:.3f}, loss forward {t['loss_forward']:.3f}, backward + optimizer + rest {t['other']:.3f} |",
            f"| guidedrl, fp32 | {g['median_step_s']:.3f} | rollout {g['rollout']:.3f}, rewards {g['reward']:.3f}, "
            f"update {g['update']:.3f} |"]
    return "\n".join(rows) + f"\n\n**guidedrl = {r['speedup']:.2f}× TRL's throughput** ({label} TRL). " + \
        environment_line(r["environment"])


@renders("grpo_step_trl_bf16")
def grpo_step_bf16(r: dict) -> str:
    return grpo_step(r)


def render(text: str) -> str:
    def fill(match: re.Match) -> str:
        name = match.group(1)
        path = RESULTS / f"{name}.json"
        body = RENDERERS[name](json.loads(path.read_text())) if path.exists() else f"(not measured: {path.name} is missing)"
        return f"<!-- bench:{name} -->\n{body}\n<!-- /bench:{name} -->"
    return re.sub(r"<!-- bench:(\w+) -->.*?<!-- /bench:\1 -->", fill, text, flags=re.S)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args()
    readme = ROOT / "README.md"
    text = readme.read_text()
    new = render(text)
    if args.check:
        sys.exit(0 if new == text else 1)
    readme.write_text(new)


if __name__ == "__main__":
    main()
