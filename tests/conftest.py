"""Shared fixtures: one micro world per test session (about a minute to build)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from rich.console import Console

from guidedrl.config import world_preset
from guidedrl.world.build import build_world

torch.set_num_threads(2)


@pytest.fixture(scope="session")
def micro_world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("worlds") / "micro"
    build_world(out, world_preset("micro"), Console(quiet=True))
    return out
