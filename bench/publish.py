"""Where a bench's result file goes: a run folder by default; the committed results and the rendered tables (the
README's and the docs') only when asked, both in one step.

Every bench that records a result takes the same options and saves through :func:`save_result`:

    --result PATH     this run's result file (default runs/bench/NAME.json)
    --name NAME       the result's name: bench/results/NAME.json and the ``<!-- bench:NAME -->`` table
    --update-docs     also store it as bench/results/NAME.json and re-render the tables (render_docs.py)

so running a bench never changes a committed file, and no page disagrees with bench/results/.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import render_docs

RUNS = Path("runs") / "bench"
OPTIONS = ("name", "result", "update_docs")  # where the result goes, not how it was measured


def add_result_options(parser: argparse.ArgumentParser, name: str) -> None:
    """The result options; ``name`` is the bench's default result name (as its help shows it)."""
    parser.add_argument("--name", help=f"the result's name (default {name}): bench/results/NAME.json and the "
                        "table bench:NAME")
    parser.add_argument("--result", type=Path, help="this run's result file (default runs/bench/NAME.json)")
    parser.add_argument("--update-docs", action="store_true", help="also store the result as "
                        "bench/results/NAME.json and re-render the README's and the docs' tables from bench/results/")


def settings(args: argparse.Namespace) -> dict:
    """The bench's own options as JSON (paths as text), recorded in its result; the result options left out."""
    own = {k: v for k, v in vars(args).items() if k not in OPTIONS}
    return json.loads(json.dumps(own, default=str))


def save_result(result: dict, args: argparse.Namespace, name: str) -> Path:
    """Write ``result`` to ``--result`` (or runs/bench/NAME.json); with ``--update-docs`` also to the committed
    results, then re-render the README's and the docs' tables. NAME is ``--name``, else ``name``. Returns the run's
    result file."""
    name = args.name or name
    path = args.result or RUNS / f"{name}.json"
    text = json.dumps(result, indent=1) + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    if args.update_docs:
        (render_docs.RESULTS / f"{name}.json").write_text(text)
        render_docs.update()
    return path
