"""Checks the config models run on settings that name something (a template's fields, a device, a user's
function), so a name that does not fit is an error when the config loads, not a traceback at step 1.

Each check returns the value or raises ``ValueError`` with the problem in words; pydantic adds the key.
"""

from __future__ import annotations

import inspect
import re
import string

from guidedrl.registry import REWARDS

SEED_MAX = 2**32 - 1  # numpy's range, the narrowest of the libraries a run seeds (torch, random, numpy in TRL)
_DEVICE = re.compile(r"auto|cpu|mps|cuda(:\d+)?")


def template_fields(template: str, fields: set[str]) -> str:
    """A ``str.format`` template that uses every one of ``fields`` and no other (literal braces doubled, ``{{``)."""
    try:
        used = {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}
    except ValueError as err:
        raise ValueError(f"not a valid template ({err}); write a literal brace as {{{{ or }}}}") from None
    names = ", ".join("{" + f + "}" for f in sorted(fields))
    unknown = sorted(used - fields)
    if unknown:
        raise ValueError(f"unknown field {{{unknown[0]}}}; the fields are {names}")
    missing = sorted(fields - used)
    if missing:
        raise ValueError(f"must contain {{{missing[0]}}} (the fields are {names})")
    return template


def device_spec(value: str) -> str:
    """``auto``, ``cpu``, ``mps``, ``cuda`` or ``cuda:N``."""
    if not _DEVICE.fullmatch(value):
        raise ValueError(f"unknown device {value!r}; expected auto, cpu, mps, cuda or cuda:N")
    return value


def keyword_reward(name: str) -> str:
    """A reward (registered, or ``package.module:function``) that can be called the way TRL calls one, by
    keyword with every dataset column: ``f(prompts=, completions=, **kwargs)``; a fixed signature is refused."""
    fn = REWARDS.get(REWARDS.check(name))
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return name  # a builtin without a signature: its call will tell
    if not any(p.kind is p.VAR_KEYWORD for p in params) or any(p.kind is p.POSITIONAL_ONLY and p.default is p.empty
                                                                 for p in params):
        raise ValueError(f"reward {name!r} has the signature {inspect.signature(fn)}, which cannot be called by "
                         "keyword with the dataset's columns; define it as f(prompts, completions, **kwargs) (TRL's "
                         "convention)")
    return name
