"""The docs site: it builds with ``mkdocs build --strict`` (a broken link fails it), its generated parts are the
code's (the config reference from the pydantic models, the step's source, the registries), and its pages render
in headless Chromium."""

from __future__ import annotations

import html
import importlib.util
import inspect
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from browser import painted, screenshot
from guidedrl import registry
from guidedrl.config import TrainConfig
from guidedrl.sft import SFTRunConfig

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "docs"))
import hooks  # noqa: E402  (docs/hooks.py: the generators the build runs)

needs_mkdocs = pytest.mark.skipif(importlib.util.find_spec("mkdocs") is None,
                                  reason="mkdocs is not installed (pip install -e .[docs]; make test installs it)")


def build(config: Path, out: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(config), "-d", str(out)],
                          capture_output=True, text=True, timeout=600, env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("site")
    done = build(ROOT / "mkdocs.yml", out)
    assert done.returncode == 0, done.stderr
    return out


def nav_pages(nav: list) -> list[str]:
    """Every page named in mkdocs.yml's nav."""
    pages = []
    for item in nav:
        for value in item.values():
            pages += nav_pages(value) if isinstance(value, list) else [value]
    return pages


def flat(data: dict, prefix: str = "") -> dict[str, object]:
    """Dotted keys of a dumped config (an empty mapping is a value, as resume_changes reads it)."""
    out: dict[str, object] = {}
    for key, value in data.items():
        out.update(flat(value, f"{prefix}{key}.") if isinstance(value, dict) and value else {f"{prefix}{key}": value})
    return out


def rows(page: str) -> dict[str, list[str]]:
    """The reference's table rows by key: [type, default, description] (cells as written, pipes unescaped)."""
    found = {}
    for line in page.splitlines():
        if line.startswith("| `"):
            cells = [c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", line)[1:-1]]
            found[cells[0].strip("`")] = cells[1:]
    return found


@needs_mkdocs
def test_the_site_builds_strict_with_every_page_of_the_nav(site: Path) -> None:
    nav = nav_pages(yaml.safe_load((ROOT / "mkdocs.yml").read_text())["nav"])
    assert {"reference/config.md", "architecture.md", "methods/ampo.md", "changelog.md"} <= set(nav)
    for page in nav:
        built = site / ("index.html" if page == "index.md" else page.removesuffix(".md") + "/index.html")
        assert built.is_file(), page
    config = (site / "reference" / "config" / "index.html").read_text()
    assert "<td><code>rollout.group_size</code></td>" in config
    assert '<h2 id="unreleased">Unreleased' in (site / "changelog" / "index.html").read_text()  # CHANGELOG.md


@needs_mkdocs
def test_a_broken_link_fails_the_build(tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    shutil.copytree(ROOT / "docs", docs, ignore=shutil.ignore_patterns("__pycache__"))
    (docs / "extending.md").write_text((docs / "extending.md").read_text() + "\n[gone](no-such-page.md)\n")
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text())
    config |= {"docs_dir": str(docs), "hooks": [str(ROOT / "docs" / "hooks.py")]}  # the same site, elsewhere
    config["plugins"][1]["mkdocstrings"]["handlers"]["python"]["paths"] = [str(ROOT / "src")]
    snippets = next(e for e in config["markdown_extensions"] if isinstance(e, dict) and "pymdownx.snippets" in e)
    snippets["pymdownx.snippets"]["base_path"] = [str(ROOT)]
    (tmp_path / "mkdocs.yml").write_text(yaml.safe_dump(config))
    done = build(tmp_path / "mkdocs.yml", tmp_path / "site")
    assert done.returncode != 0 and "no-such-page.md" in done.stderr


def test_the_config_reference_holds_every_key_with_the_default_a_run_gets() -> None:
    table = rows(hooks.config_reference())
    defaults = {**flat(TrainConfig().model_dump(mode="json")),
                **flat({"sft": SFTRunConfig().sft.model_dump(mode="json")})}
    assert len(defaults) > 100
    for key, value in defaults.items():
        assert key in table, key
        assert table[key][1] == f"`{json.dumps(value, ensure_ascii=False)}`", key
    for key, (kind, default, description) in table.items():  # every row says what its key does
        assert description, key
    # the section's own default, not the class's (SurrogateSpec's name defaults to clip)
    assert table["algorithm.surrogate.teacher.name"][1] == '`"shaped"`'
    assert table["algorithm.surrogate.policy.name"][1] == '`"clip"`'
    # listed, named and optional sections take their class's defaults; a key without one is required
    assert table["rewards[].weight"][1] == "`1.0`" and table["rewards[].name"][1] == "required"
    assert table["algorithm.regularizers.<name>.coef"][1] == "`0.0`"
    assert table["teacher_signal.teachers.<name>.server.timeout_s"][1] == "`60.0`"
    assert table["guidance.teachers[].server.base_url"][1] == "required"
    assert table["lora"][1] == "`null`" and table["lora.r"][1] == "`16`"
    # types with their bounds, and the description as written
    assert table["rollout.group_size"][0] == "int (≥ 2)" and table["rewards"][0].startswith("[list[RewardSpec] "
                                                                                          "(at least 1)](#rewards)")
    assert table["optim.betas"][0] == "tuple[float (≥ 0, < 1), float (≥ 0, < 1)]"
    assert table["rollout.long_prompts"][0] == '"error" | "drop"'
    assert table["rollout.group_size"][2] == "G: responses per prompt (a group of 1 has no baseline)"
    assert table["rollout"][1] == "the section below" and table["rollout"][0] == "[RolloutConfig](#rollout)"


def test_the_step_in_the_docs_is_the_source_of_train_step() -> None:
    from guidedrl.trainer.loop import Trainer
    source = hooks.source_of("src/guidedrl/trainer/loop.py", "Trainer.train_step")
    assert source == textwrap.dedent(inspect.getsource(Trainer.train_step))
    page = (ROOT / "docs" / "architecture.md").read_text()
    assert "<!-- source: src/guidedrl/trainer/loop.py Trainer.train_step -->" in page
    assert f"```python\n{source}```" in hooks.expand(page)
    with pytest.raises(ValueError, match="no Trainer.no_such_step"):
        hooks.source_of("src/guidedrl/trainer/loop.py", "Trainer.no_such_step")


@needs_mkdocs
def test_the_built_architecture_page_shows_the_step_as_it_is(site: Path) -> None:
    page = (site / "architecture" / "index.html").read_text()
    code = re.search(r"<pre>.*?<code>(.*?)</code></pre>", page, re.S).group(1)
    assert html.unescape(re.sub(r"<[^>]+>", "", code)) == hooks.source_of("src/guidedrl/trainer/loop.py",
                                                                         "Trainer.train_step")


def test_the_registries_table_lists_every_registry_with_its_built_in_names() -> None:
    table = hooks.registries_table()
    names = [name for name, value in vars(registry).items() if isinstance(value, registry.Registry)]
    assert {"ADVANTAGES", "SURROGATES", "REGULARIZERS", "GUIDANCE", "REWARDS", "ENGINES"} <= set(names)
    assert len(table.splitlines()) == 2 + len(names)
    assert ("| `ADVANTAGES` | advantage estimator | `guidedrl.algorithms.advantages` | "
            + ", ".join(f"`{n}`" for n in registry.ADVANTAGES.names()) + " |") in table.splitlines()
    assert "`dr_grpo`" in table and "`shaped`" in table


@needs_mkdocs
@pytest.mark.parametrize("page", ["index.html", "methods/ampo/index.html"])
def test_the_built_pages_render_in_headless_chromium(site: Path, page: str, tmp_path: Path) -> None:
    image = screenshot((site / page).as_uri(), tmp_path / "shot.png", "1280,900").convert("RGB")
    assert painted(image)  # text was drawn
    red, green, blue = image.getpixel((image.width // 2, 10))
    assert min(red, green, blue) < 200  # the theme's header bar: its stylesheet was loaded, not a bare page
