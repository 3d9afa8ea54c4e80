"""Where a bench's result goes (bench/publish.py): a run folder unless told otherwise; the committed result and
the README's table change together, and only with --update-docs."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

import publish  # noqa: E402
import render_readme  # noqa: E402


def options(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, default=Path("runs/bench/x"))  # a bench's own option
    publish.add_result_options(parser, "grpo_step")
    return parser.parse_args(argv)


def test_a_result_reaches_the_committed_results_and_the_readme_only_with_update_docs(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    stored = json.loads((ROOT / "bench" / "results" / "grpo_step.json").read_text())
    results, readme = tmp_path / "results", tmp_path / "README.md"
    results.mkdir()
    (results / "grpo_step.json").write_text(json.dumps(stored))
    monkeypatch.setattr(render_readme, "RESULTS", results)
    monkeypatch.setattr(render_readme, "README", readme)
    monkeypatch.chdir(tmp_path)
    readme.write_text(render_readme.render("# t\n\n<!-- bench:grpo_step -->\n<!-- /bench:grpo_step -->\n"))
    rendered = readme.read_text()
    assert f"**guidedrl = {stored['speedup']:.2f}× TRL's throughput**" in rendered
    new = stored | {"speedup": 9.87}

    path = publish.save_result(new, options(), "grpo_step")  # a plain run: its run folder only
    assert path == Path("runs/bench/grpo_step.json") and json.loads(path.read_text()) == new
    assert json.loads((results / "grpo_step.json").read_text()) == stored and readme.read_text() == rendered

    path = publish.save_result(new, options("--name", "grpo_step_50m", "--result", "elsewhere/r.json"), "grpo_step")
    assert path == Path("elsewhere/r.json") and json.loads(path.read_text()) == new
    assert not Path("runs/bench/grpo_step_50m.json").exists() and not (results / "grpo_step_50m.json").exists()

    publish.save_result(new, options("--update-docs"), "grpo_step")  # the result file and the table, together
    assert json.loads((results / "grpo_step.json").read_text()) == new
    text = readme.read_text()
    assert "**guidedrl = 9.87× TRL's throughput**" in text and render_readme.render(text) == text


def test_a_result_records_the_bench_s_own_options_not_where_it_went() -> None:
    assert publish.settings(options("--result", "r.json", "--update-docs", "--out", "runs/y")) == {"out": "runs/y"}
