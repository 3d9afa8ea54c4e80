"""bench/gpu_smoke.py, the run prepared for a GPU, goes through its whole path on the CPU at a toy size
(``--dry-run``), so it cannot rot while no GPU is lent."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_gpu_smoke_run_goes_through_on_the_cpu_at_a_toy_size(tmp_path: Path) -> None:
    out = tmp_path / "smoke.json"
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'src'}:{ROOT / 'bench'}"}
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "gpu_smoke.py"), "--dry-run", "--out", str(out)],
                          capture_output=True, text=True, env=env, cwd=tmp_path, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    record = json.loads(out.read_text())
    grpo, ampo = record["runs"]
    assert [r["run"] for r in record["runs"]] == ["grpo, full fine-tuning", "ampo, LoRA r=16"]
    for run in record["runs"]:
        assert len(run["steps"]) == 1 and 0 < run["steps"][0]["response_length"] <= record["new_tokens"]
        assert run["estimate_bytes"] > 0 and any("peak per process" in line for line in run["estimate"])
        assert run["peak_allocated_bytes"] is None  # a CPU has no allocator peak to read
    assert ampo["steps"][0]["inserted"] > 0 and ampo["steps"][0]["grad_norm"] > 0  # LoRA adapters get a gradient
    assert "steps" in done.stdout and "estimate" in done.stdout
