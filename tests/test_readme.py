"""The README's measured tables are the benches' result files rendered (bench/render_readme.py), never typed."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from render_readme import render  # noqa: E402


def test_the_readme_tables_are_what_the_bench_results_render_to() -> None:
    text = (ROOT / "README.md").read_text()
    assert "<!-- bench:" in text
    assert render(text) == text, "README.md is stale: run python bench/render_readme.py"


def test_the_readme_opens_with_the_two_set_up_commands() -> None:
    lines = (ROOT / "README.md").read_text().splitlines()
    block = lines[lines.index("```bash") + 1:lines.index("```bash") + 3]
    assert [line.split()[:2] for line in block] == [["make", "demo"], ["make", "test"]]
