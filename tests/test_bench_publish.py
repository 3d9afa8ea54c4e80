"""Where a bench's result goes (bench/publish.py): a run folder unless told otherwise; the committed result and
the rendered tables (README and docs) change together, and only with --update-docs."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

import publish  # noqa: E402
import render_docs  # noqa: E402


def options(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, default=Path("runs/bench/x"))  # a bench's own option
    publish.add_result_options(parser, "grpo_step")
    return parser.parse_args(argv)


def test_a_result_reaches_the_committed_results_and_the_pages_only_with_update_docs(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    stored = json.loads((ROOT / "bench" / "results" / "grpo_step.json").read_text())
    results, readme, docs = tmp_path / "results", tmp_path / "README.md", tmp_path / "docs"
    results.mkdir()
    (docs / "methods").mkdir(parents=True)
    page, plain = docs / "methods" / "x.md", docs / "plain.md"  # a docs page with a table, and one without
    (results / "grpo_step.json").write_text(json.dumps(stored))
    monkeypatch.setattr(render_docs, "RESULTS", results)
    monkeypatch.setattr(render_docs, "PAGES", (readme, docs))
    monkeypatch.chdir(tmp_path)
    readme.write_text(render_docs.render("# t\n\n<!-- bench:grpo_step -->\n<!-- /bench:grpo_step -->\n"))
    page.write_text(render_docs.render("# p\n\n<!-- bench:grpo_step -->\n<!-- /bench:grpo_step -->\n"))
    plain.write_text("# no table\n")
    assert render_docs.pages() == [readme, page] and render_docs.stale() == []
    rendered, on_page = readme.read_text(), page.read_text()
    assert f"**guidedrl = {stored['speedup']:.2f}× TRL's throughput**" in rendered
    new = stored | {"speedup": 9.87}

    path = publish.save_result(new, options(), "grpo_step")  # a plain run: its run folder only
    assert path == Path("runs/bench/grpo_step.json") and json.loads(path.read_text()) == new
    assert json.loads((results / "grpo_step.json").read_text()) == stored and readme.read_text() == rendered
    assert page.read_text() == on_page

    path = publish.save_result(new, options("--name", "grpo_step_50m", "--result", "elsewhere/r.json"), "grpo_step")
    assert path == Path("elsewhere/r.json") and json.loads(path.read_text()) == new
    assert not Path("runs/bench/grpo_step_50m.json").exists() and not (results / "grpo_step_50m.json").exists()

    publish.save_result(new, options("--update-docs"), "grpo_step")  # the result file and the table, together
    assert json.loads((results / "grpo_step.json").read_text()) == new
    for path in (readme, page):  # every page holding the table, README and docs alike
        text = path.read_text()
        assert "**guidedrl = 9.87× TRL's throughput**" in text and render_docs.render(text) == text
    assert plain.read_text() == "# no table\n" and render_docs.stale() == []


def test_a_result_records_the_bench_s_own_options_not_where_it_went() -> None:
    assert publish.settings(options("--result", "r.json", "--update-docs", "--out", "runs/y")) == {"out": "runs/y"}
