"""YAML configuration files and ``key.path=value`` overrides, validated by strict pydantic models.

Every problem is reported as ``file: dotted.key: message``, one line each, so a typo in a long config is
found without reading a traceback.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from guidedrl.errors import GuidedError

M = TypeVar("M", bound=BaseModel)


class ConfigError(GuidedError, ValueError):
    """An unreadable config file, a malformed override, or values the config models reject."""


class StrictModel(BaseModel):
    """Base of every config section: unknown keys are errors, assignments are validated too, and no float
    may be inf or nan (a bound like ``gt=0`` would let ``.inf`` through)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


class _Loader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that also reads ``1e-5`` as a float (YAML 1.1 insists on ``1.0e-5``)."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)[eE][-+]?[0-9]+$"),
    list("-+0123456789."),
)


def _load_yaml(text: str) -> Any:
    """Safe YAML parsing, with exponent-only floats understood."""
    return yaml.load(text, Loader=_Loader)  # noqa: S506 - _Loader is a SafeLoader


def parse_overrides(items: Iterable[str]) -> dict:
    """Nested dict from ``a.b=value`` items; values are YAML (``1e-5``, ``[1, 2]``, ``null``); later items win."""
    out: dict = {}
    for item in items:
        key, sep, raw = item.partition("=")
        parts = key.strip().split(".")
        if not sep or not all(p.strip() for p in parts):
            raise ConfigError(f"override {item!r}: expected key.path=value")
        try:
            value = _load_yaml(raw)
        except yaml.YAMLError as err:
            raise ConfigError(f"override {item!r}: invalid YAML value: {' '.join(str(err).split())}") from None
        node = out
        for depth, part in enumerate(parts[:-1]):
            node = node.setdefault(part.strip(), {})
            if not isinstance(node, dict):
                prefix = ".".join(parts[:depth + 1])
                raise ConfigError(f"override {item!r}: {prefix} was set to a value, not a section")
        node[parts[-1].strip()] = value
    return out


def _merge(base: dict, extra: dict) -> dict:
    """``base`` updated by ``extra``, recursing into sections present in both; neither input is modified."""
    merged = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def load_config(path: str | Path | None, model_cls: type[M], overrides: Sequence[str] = (),
                base: dict | None = None) -> M:
    """The YAML file at ``path`` (or ``base``, or just defaults, when ``None``) with ``overrides`` applied, validated.

    Raises :class:`ConfigError` naming, for each offending key, the file or the ``--set`` item it came from.
    """
    source = str(path) if path is not None else "<defaults>"
    data: Any = dict(base or {})
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"{source}: no such config file")
        try:
            data = _load_yaml(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as err:
            raise ConfigError(f"{source}: invalid YAML: {' '.join(str(err).split())}") from None
        except UnicodeDecodeError as err:
            raise ConfigError(f"{source}: not UTF-8 text (byte {err.start}); the file is damaged") from None
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise ConfigError(f"{source}: expected a mapping of keys at the top level, got {type(data).__name__}")
    data = _merge(data, parse_overrides(overrides))
    try:
        return model_cls.model_validate(data, context={"config_dir": str(path.parent) if path is not None else None})
    except ValidationError as err:
        by_key = {item.partition("=")[0].strip(): item for item in overrides}
        raise ConfigError("\n".join(_describe(err, source, model_cls, by_key))) from None


def _describe(err: ValidationError, source: str, model_cls: type[BaseModel], overrides: dict[str, str]) -> list[str]:
    """One ``source: key.path: message`` line per problem, unknown keys with a close known key if any; a key
    that an override set is attributed to that ``--set`` item instead of the file."""
    lines: list[str] = []
    for e in err.errors():
        loc = e["loc"]
        key = ".".join(f"[{p}]" if isinstance(p, int) else str(p) for p in loc).replace(".[", "[")
        if e["type"] == "extra_forbidden":
            message = "unknown key"
            known = _fields_at(model_cls, loc[:-1])
            close = difflib.get_close_matches(str(loc[-1]), known, n=1)
            if close:
                message += f" (did you mean {close[0]!r}?)"
        else:
            message = e["msg"].removeprefix("Value error, ")
        dotted = ".".join(str(p) for p in loc)
        # the override that set this key (or a section above it), else the overrides inside a section whose
        # own check failed, else the file
        given = [item for k, item in overrides.items() if dotted == k or dotted.startswith(f"{k}.")] or [
            item for k, item in overrides.items() if dotted and k.startswith(f"{dotted}.")]
        where = ", ".join(f"--set {item}" for item in given) if given else source
        line = f"{where}: {key}: {message}" if key else f"{where}: {message}"
        if line not in lines:
            lines.append(line)
    return lines


def _fields_at(model_cls: type[BaseModel], loc: Sequence[int | str]) -> list[str]:
    """Field names of the section at ``loc``, following nested models; empty where that cannot be known."""
    for part in loc:
        field = model_cls.model_fields.get(str(part))
        annotation = field.annotation if field is not None else None
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return []
        model_cls = annotation
    return list(model_cls.model_fields)


def dump_config(cfg: BaseModel, path: str | Path) -> None:
    """Write the resolved config as YAML that :func:`load_config` reads back to an equal model."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False, allow_unicode=True)
    path.write_text(text, encoding="utf-8")
