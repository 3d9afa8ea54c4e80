"""The headline protocol's settings, defined once: every comparison bench trains and evaluates under them
unless told otherwise (docs/benchmarks.md: the protocol)."""

from __future__ import annotations

import argparse

DEFAULTS = {"seeds": [0, 1, 2, 3, 4], "steps": 300, "samples": 64, "problems": 100}
HELP = {"seeds": "training seeds (the first is the sweep's)", "steps": "training steps of every run",
        "samples": "samples per held-out problem (pass@k up to it)", "problems": "held-out problems per split"}
PROTOCOL = ("seeds", "steps", "samples", "problems", "set")  # settings under which stored scores are reused


def add_protocol(parser: argparse.ArgumentParser, *names: str) -> None:
    """Add the named protocol settings (``seeds``, ``steps``, ``samples``, ``problems``) as options with the
    protocol's defaults."""
    for name in names:
        default = DEFAULTS[name]
        if isinstance(default, list):
            parser.add_argument(f"--{name}", type=int, nargs="+", default=list(default), help=HELP[name])
        else:
            parser.add_argument(f"--{name}", type=int, default=default, help=HELP[name])
