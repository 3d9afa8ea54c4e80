"""The README and the docs: their measured tables are the benches' result files rendered (bench/render_docs.py),
never typed; the README opens with the two set-up commands and shows the Python quick start the docs test."""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from render_docs import pages, render  # noqa: E402


def test_every_page_s_tables_are_what_the_bench_results_render_to() -> None:
    found = pages()
    assert ROOT / "README.md" in found and ROOT / "docs" / "benchmarks.md" in found
    tables = {name for path in found for name in re.findall(r"<!-- bench:(\w+) -->", path.read_text())}
    results = {path.stem for path in (ROOT / "bench" / "results").glob("*.json")} - {"untrained"}
    assert results <= tables, f"results rendered on no page: {sorted(results - tables)}"
    for path in found:
        text = path.read_text()
        assert render(text) == text, f"{path.relative_to(ROOT)} is stale: run python bench/render_docs.py"


def test_each_table_lives_on_one_page() -> None:
    names = [name for path in pages() for name in re.findall(r"<!-- bench:(\w+) -->", path.read_text())]
    assert len(names) == len(set(names)), sorted(n for n in names if names.count(n) > 1)


def test_the_readme_opens_with_the_two_set_up_commands() -> None:
    lines = (ROOT / "README.md").read_text().splitlines()
    block = lines[lines.index("```bash") + 1:lines.index("```bash") + 3]
    assert [line.split()[:2] for line in block] == [["make", "demo"], ["make", "test"]]


def test_the_readme_is_one_screenful_of_purpose_linking_to_the_docs() -> None:
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 250
    for target in re.findall(r"\]\((docs/[^)#]+)", text):  # relative links GitHub renders
        assert (ROOT / target).is_file(), target


def test_the_readme_s_python_quick_start_is_the_tested_one_of_the_docs() -> None:
    """tests/test_api.py runs the docs' block; the README shows the same lines."""
    def block(text: str) -> str:
        return re.search(r"```python\n(from guidedrl import .*?)```", text, re.S).group(1)
    assert block((ROOT / "README.md").read_text()) == block((ROOT / "docs" / "getting-started.md").read_text())
