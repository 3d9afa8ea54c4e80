"""Shared fixtures: the micro world (built once per test session, about a minute), and the knobs a
contributor turns to check that the suite passes on any machine:

    GUIDEDRL_TEST_THREADS=1            torch threads (default 2): another reduction order
    GUIDEDRL_TEST_WORLD_SEED=7         seed of the micro world's build (default 0): other trained models
    ATEN_CPU_CAPABILITY=default        (torch's own) other vector kernels: other float results

``make test-matrix`` runs the suite under each of them.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch
from rich.console import Console

from guidedrl.world.build import build_world
from guidedrl.world.settings import WorldConfig, world_preset
from guidedrl.world.tokenizer import build_tokenizer
from guidedrl.world.zoo import make_model

sys.path.insert(0, str(Path(__file__).parent))  # tests import their helpers (scripted.py) by name
sys.path.insert(0, str(Path(__file__).parents[1] / "examples"))  # and the examples they check
torch.set_num_threads(int(os.environ.get("GUIDEDRL_TEST_THREADS", "2")))


@pytest.fixture(scope="session")
def micro_settings() -> WorldConfig:
    return world_preset("micro", seed=int(os.environ.get("GUIDEDRL_TEST_WORLD_SEED", "0")))


@pytest.fixture(scope="session")
def micro_world(tmp_path_factory: pytest.TempPathFactory, micro_settings: WorldConfig) -> Path:
    out = tmp_path_factory.mktemp("worlds") / "micro"
    build_world(out, micro_settings, Console(quiet=True))
    return out


@pytest.fixture(scope="module")
def tokenizer():
    """The world's tokenizer (a module's own, for the tests of the engine and the forwards)."""
    return build_tokenizer()


@pytest.fixture(scope="module")
def model(tokenizer):
    """A micro-sized model of the world's architecture, initialized from seed 0, in eval mode."""
    return make_model(tokenizer, "micro", seed=0).eval()
