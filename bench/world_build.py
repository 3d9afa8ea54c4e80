"""Time a world build from scratch (default: the micro preset the tests use) and print each stage.

    python bench/world_build.py                # micro world, into a temporary directory
    python bench/world_build.py --size default
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch
from rich.console import Console

from guidedrl.world.build import build_world
from guidedrl.world.settings import world_preset


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="micro")
    args = parser.parse_args()
    torch.set_num_threads(2)
    with tempfile.TemporaryDirectory() as tmp:
        start = time.time()
        manifest = build_world(Path(tmp) / args.size, world_preset(args.size), Console(quiet=True))
        total = time.time() - start
    print(json.dumps(manifest["seconds"], indent=1))
    print(f"{args.size} world built from scratch in {total:.1f} s (torch threads: {torch.get_num_threads()})")


if __name__ == "__main__":
    main()
