"""Data parallelism on the CPU over gloo (``accelerate launch --cpu --num_processes 2``): two processes with half
the prompts each end with the same parameters as one process with the whole batch, for GRPO and for AMPO
(guidance on some ranks only); a 2-process run killed with SIGKILL resumes exactly."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

pytest.importorskip("accelerate")
CONFIGS = Path(__file__).resolve().parents[1] / "configs"
TOLERANCE = 5e-5  # parameters after Adam at lr 1e-4: two ranks sum their gradients in another order than one


def launch(processes: int, config: str, out: Path, *sets: str, world: Path, wait: bool = True,
           flags: tuple[str, ...] = ()) -> subprocess.Popen | subprocess.CompletedProcess:
    """``guidedrl train`` under ``accelerate launch`` with ``processes`` CPU processes."""
    accelerate = Path(sys.executable).with_name("accelerate")
    cmd = [str(accelerate), "launch", "--cpu", "--num_processes", str(processes), "--num_machines", "1",
           "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "guidedrl", "train", str(CONFIGS / config), *flags,
           *[x for kv in (f"world={world}", f"output_dir={out}", "rollout.prompts_per_step=4", "rollout.group_size=4",
                          "rollout.max_new_tokens=24", "optim.micro_batch_size=8", "eval.samples=2",
                          "eval.ks=[1,2]", "eval.max_problems=4", "eval.every=0", *sets) for x in ("--set", kv)]]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GUIDEDRL_TEST_THREADS": "1"}
    if not wait:
        return subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(run / "final" / "model.safetensors")


def assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], atol=TOLERANCE, rtol=0, msg=key)


@pytest.mark.parametrize("config", ["grpo.yaml", "ampo.yaml"])
def test_two_processes_with_half_the_prompts_equal_one_with_all(config: str, micro_world: Path, tmp_path: Path) -> None:
    one, two = tmp_path / "one", tmp_path / "two"
    launch(1, config, one, "steps=3", "save_every=0", world=micro_world)
    launch(2, config, two, "steps=3", "save_every=0", world=micro_world)
    assert_same(weights(one), weights(two))
    import json
    records = [json.loads(line) for line in (two / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in records if "reward" in r]
    assert [r["step"] for r in steps] == [1, 2, 3]  # rank 0 logged once per step
    if config == "ampo.yaml":
        single = [json.loads(line) for line in (one / "metrics.jsonl").read_text().splitlines() if "reward" in line]
        assert [r["guidance/teacher/rate"] for r in steps] == [r["guidance/teacher/rate"] for r in single]
        assert any(0 < r["guidance/teacher/rate"] < 1 for r in steps)  # some groups guided, not all: some ranks only


def test_a_killed_two_process_run_resumes_exactly(micro_world: Path, tmp_path: Path) -> None:
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    launch(2, "grpo.yaml", whole, "steps=6", "save_every=2", world=micro_world)
    proc = launch(2, "grpo.yaml", killed, "steps=6", "save_every=2", world=micro_world, wait=False)
    deadline = time.time() + 300
    while not (killed / "checkpoints" / "step_2" / "trainer_state.pt").exists():
        assert proc.poll() is None and time.time() < deadline, "the run ended before its first checkpoint"
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (killed / "summary.json").exists()
    launch(2, "grpo.yaml", killed, "steps=6", "save_every=2", world=micro_world, flags=("--resume",))
    assert_same(weights(whole), weights(killed))
    shutil.rmtree(tmp_path)
