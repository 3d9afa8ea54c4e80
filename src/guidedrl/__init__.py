"""guidedrl: RL with verifiable rewards, guided by teachers and hints when the student fails.

The Python API, in a few lines::

    from guidedrl import TrainConfig, Trainer, load_config

    cfg = load_config("configs/grpo.yaml", TrainConfig, ["steps=2", "output_dir=runs/quickstart"])
    summary = Trainer(cfg).train()

``TrainConfig`` is the validated run config (every key: the docs' config reference), ``load_config`` reads a
YAML file with ``key=value`` overrides into it, ``Trainer`` runs it; the registries (``ADVANTAGES``,
``SURROGATES``, ...) are where a plugin adds its own pieces by name. Each name is imported on first use, so
``import guidedrl`` (and so the CLI's start) does not pay for torch and transformers.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

__version__ = "0.1.0"

REGISTRIES = ("ADVANTAGES", "ADVANTAGE_ADDONS", "SURROGATES", "REGULARIZERS", "BATCH_FILTERS", "GUIDANCE",
              "TEACHER_POOLS", "ENGINES", "REWARDS")
# public name -> the module that defines it
_EXPORTS: dict[str, str] = {"TrainConfig": "guidedrl.config", "Trainer": "guidedrl.trainer.loop",
                            "load_config": "guidedrl.yaml_config", **dict.fromkeys(REGISTRIES, "guidedrl.registry")}
__all__ = ["__version__", *_EXPORTS]

if TYPE_CHECKING:  # what type checkers and editors see; "X as X" marks a re-export
    from guidedrl.config import TrainConfig as TrainConfig
    from guidedrl.registry import ADVANTAGE_ADDONS as ADVANTAGE_ADDONS
    from guidedrl.registry import ADVANTAGES as ADVANTAGES
    from guidedrl.registry import BATCH_FILTERS as BATCH_FILTERS
    from guidedrl.registry import ENGINES as ENGINES
    from guidedrl.registry import GUIDANCE as GUIDANCE
    from guidedrl.registry import REGULARIZERS as REGULARIZERS
    from guidedrl.registry import REWARDS as REWARDS
    from guidedrl.registry import SURROGATES as SURROGATES
    from guidedrl.registry import TEACHER_POOLS as TEACHER_POOLS
    from guidedrl.trainer.loop import Trainer as Trainer
    from guidedrl.yaml_config import load_config as load_config

def __getattr__(name: str) -> object:
    """Import an exported name from its module the first time it is asked for (PEP 562)."""
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'guidedrl' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})
