"""MkDocs hooks: the docs' generated parts, made from the code at every build so they cannot drift from it.

- ``reference/config.md``: every config key (dotted path), its type, default and description, read from the
  pydantic models of :mod:`guidedrl.config` (``TrainConfig`` and its sections) and ``guidedrl sft``'s section.
- ``<!-- source: FILE QUALNAME -->`` in a page: replaced by that function's source, read from the file (e.g. the
  architecture page's step, ``Trainer.train_step``).
- ``<!-- generated: registries -->``: every registry of :mod:`guidedrl.registry` with its built-in names.
"""

from __future__ import annotations

import ast
import json
import re
import textwrap
import types
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, Union, get_args, get_origin

import annotated_types
from pydantic import BaseModel
from pydantic.fields import FieldInfo

if TYPE_CHECKING:  # the generators import without mkdocs (the tests call them directly)
    from mkdocs.config.defaults import MkDocsConfig
    from mkdocs.structure.files import Files
    from mkdocs.structure.pages import Page

ROOT = Path(__file__).resolve().parents[1]
CONFIG_PAGE = "reference/config.md"
SOURCE = re.compile(r"<!-- source: (\S+) (\S+) -->")
REGISTRIES = "<!-- generated: registries -->"
BOUNDS = {annotated_types.Ge: ("≥", "ge"), annotated_types.Gt: (">", "gt"), annotated_types.Le: ("≤", "le"),
          annotated_types.Lt: ("<", "lt"), annotated_types.MinLen: ("at least", "min_length")}


# ---- the config reference ------------------------------------------------------------------------------------
def nested(annotation: Any) -> tuple[str, type[BaseModel]] | None:
    """The section model a field holds and the key step that reaches its fields: ``""`` (the field is the
    section), ``"[]"`` (a list of them) or ``".<name>"`` (a mapping of them by name); None for a plain value."""
    origin, args = get_origin(annotation), get_args(annotation)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "", annotation
    if origin in (Union, types.UnionType):
        return next(filter(None, (nested(a) for a in args if a is not type(None))), None)
    step = {list: "[]", dict: ".<name>"}.get(origin)
    inner = nested(args[-1]) if step and args else None
    return (step + inner[0], inner[1]) if inner else None


def bounds(metadata: list[Any]) -> str:
    """A field's numeric bounds and minimum length, e.g. `` (≥ 0, < 1)``; empty without any."""
    found = [f"{sign} {getattr(m, attr)}" for m in metadata for kind, (sign, attr) in BOUNDS.items()
             if isinstance(m, kind)]
    return f" ({', '.join(found)})" if found else ""


def type_name(annotation: Any) -> str:
    """A field's type as a config writer reads it: ``int``, ``"error" | "drop"``, ``list[str] | null``."""
    origin, args = get_origin(annotation), get_args(annotation)
    if annotation is type(None):
        return "null"
    if origin is Literal:
        return " | ".join(json.dumps(a) for a in args)
    if origin in (Union, types.UnionType):
        return " | ".join(type_name(a) for a in args)
    if origin is Annotated:
        return type_name(args[0]) + bounds([m for a in args[1:] for m in (a.metadata if isinstance(a, FieldInfo)
                                                                         else [a])])
    if origin is not None:
        return f"{origin.__name__}[{', '.join(type_name(a) for a in args)}]"
    return getattr(annotation, "__name__", str(annotation))


def anchor(key: str) -> str:
    """The heading id of a section's key (``algorithm.regularizers.<name>`` -> ``algorithm-regularizers-name``)."""
    return re.sub(r"[^a-z0-9]+", "-", key.lower()).strip("-") or "top-level"


def text(doc: str | None) -> str:
    """A docstring or description as one Markdown line (reST's double backticks as code, table pipes escaped)."""
    return " ".join((doc or "").split()).replace("``", "`").replace("*", "\\*").replace("<", "&lt;").replace(
        "|", "\\|")


def cell(value: Any) -> str:
    """A default as the JSON (valid YAML) it is written as, in code."""
    dumped = json.dumps(value, ensure_ascii=False, default=lambda model: model.model_dump(mode="json"))
    return f"`{dumped}`".replace("|", "\\|")


def sections(model: type[BaseModel], instance: BaseModel | None, key: str, about: str) -> Iterator[str]:
    """One table per section, depth first: each field's dotted key, type, default and description. Defaults are
    the ones a run gets: a section's own defaults where the parent's default holds it (``algorithm.surrogate.
    teacher`` is ``shaped``, not the class default ``clip``), the class's in an optional, listed or named one."""
    rows, below = [], []
    for name, field in model.model_fields.items():
        path = f"{key}.{name}" if key else name
        required = instance is None and field.is_required()
        value = getattr(instance, name) if instance is not None else (
            None if required else field.get_default(call_default_factory=True))
        inner = nested(field.annotation)
        description = text(field.description or (inner[1].__doc__.split("\n\n")[0] if inner else ""))
        kind = (type_name(field.annotation) + bounds(field.metadata)).replace("|", "\\|")
        if inner is not None:  # a section: its fields get a table of their own
            kind = f"[{kind}](#{anchor(path + inner[0])})"
            below.append((inner[1], value if isinstance(value, BaseModel) else None, path + inner[0]))
        default = "required" if required else "the section below" if isinstance(value, BaseModel) else cell(value)
        rows.append(f"| `{path}` | {kind} | {default} | {description} |")
    title = f"`{key}`" if key else "Top level"
    yield (f"## {title} {{#{anchor(key)}}}\n\n{text(model.__doc__)}" + (f" ({about})" if about else "")
           + "\n\n| key | type | default | description |\n|---|---|---|---|\n" + "\n".join(rows) + "\n")
    for sub, value, path in below:
        yield from sections(sub, value, path, "")


def config_reference() -> str:
    """The config reference page: ``TrainConfig``'s keys, then the section only ``guidedrl sft`` reads."""
    from guidedrl.config import TrainConfig
    from guidedrl.sft import SFTRunConfig, SFTSection
    return "\n".join([
        "# Config reference\n",
        "Every key of a run's YAML config (and of `--set key=value`), generated from the pydantic models in "
        "`guidedrl/config.py` when these docs are built. A key in a list is written `key[]`, a key of a mapping "
        "by name `key.<name>`; a default is shown as the JSON (also valid YAML) it equals.\n",
        *sections(TrainConfig, TrainConfig(), "", ""),
        *sections(SFTSection, SFTRunConfig().sft, "sft", "read by `guidedrl sft` only")])


# ---- sources and registries ------------------------------------------------------------------------------------
def source_of(path: str, qualname: str) -> str:
    """The source of function ``qualname`` (``Class.method``) in ``path`` (relative to the repository), dedented,
    read from the file without importing it."""
    file = ROOT / path
    node: Any = ast.parse(file.read_text(encoding="utf-8"))
    for part in qualname.split("."):
        node = next((n for n in node.body if getattr(n, "name", None) == part), None)
        if node is None:
            raise ValueError(f"{path}: no {qualname}")
    lines = file.read_text(encoding="utf-8").splitlines()
    first = min([node.lineno, *(d.lineno for d in node.decorator_list)])
    return textwrap.dedent("\n".join(lines[first - 1:node.end_lineno])) + "\n"


def registries_table() -> str:
    """Every registry of ``guidedrl.registry``: its name, kind of piece, the modules of its built-ins and their
    names (importing those modules)."""
    from guidedrl import registry
    rows = [f"| `{name}` | {reg.kind} | {', '.join(f'`{m}`' for m in reg.builtins)} | "
            f"{', '.join(f'`{n}`' for n in reg.names())} |"
            for name, reg in vars(registry).items() if isinstance(reg, registry.Registry)]
    return "| registry | pieces | built-ins defined in | built-in names |\n|---|---|---|---|\n" + "\n".join(rows)


def expand(markdown: str) -> str:
    """A page's Markdown with its ``source`` and ``generated`` markers replaced by what they name."""
    markdown = SOURCE.sub(lambda m: f"```python\n{source_of(m.group(1), m.group(2))}```", markdown)
    return markdown.replace(REGISTRIES, registries_table()) if REGISTRIES in markdown else markdown


# ---- the hooks -------------------------------------------------------------------------------------------------
def on_files(files: Files, config: MkDocsConfig) -> Files:
    """Add the generated config reference to the site's pages."""
    from mkdocs.structure.files import File
    files.append(File.generated(config, CONFIG_PAGE, content=config_reference()))
    return files


def on_page_markdown(markdown: str, page: Page, config: MkDocsConfig, files: Files) -> str:
    return expand(markdown)
