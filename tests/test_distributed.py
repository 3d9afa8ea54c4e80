"""Several processes on the CPU over gloo (``accelerate launch --config_file configs/accelerate/{ddp_cpu,fsdp}.yaml
--num_processes 2``): two processes with half the prompts each end with the same parameters as one process with the
whole batch, under DDP and FSDP2, in mini-batches where one rank has no rows, for GRPO and for AMPO (guidance on
some ranks only); DAPO's refill fills each rank's share; a 2-process run killed with SIGKILL resumes exactly.
Without processes: every collective's tensors on the rank's device, and the launches guidedrl does not run refused
at start."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file

from guidedrl.distributed import Ranks, _shard
from guidedrl.errors import RunError

pytest.importorskip("accelerate")
ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"
TOLERANCE = 1e-4  # parameters after Adam at lr 1e-4: two ranks sum their gradients in another order than one
LAUNCH = {"ddp": "ddp_cpu.yaml", "fsdp": "fsdp.yaml"}  # fsdp.yaml: the GPU config, on 2 CPU processes
# one group per mini-batch (4 prompts, 4 mini-batches): in every mini-batch one of the two ranks has no rows
FORCED = ("steps=4", "save_every=2", "optim.mini_batches=4")


def launch(processes: int, config: str, out: Path, *sets: str, world: Path, sharding: str = "ddp", wait: bool = True,
           flags: tuple[str, ...] = ()) -> subprocess.Popen | subprocess.CompletedProcess:
    """``guidedrl train`` under ``accelerate launch`` with ``processes`` CPU processes (DDP or FSDP2), waited for
    unless ``wait`` is False; one that hangs (collectives that do not match) is killed with its workers."""
    accelerate = Path(sys.executable).with_name("accelerate")
    cmd = [str(accelerate), "launch", "--config_file", str(CONFIGS / "accelerate" / LAUNCH[sharding]),
           "--num_processes", str(processes), "-m", "guidedrl", "train", str(CONFIGS / config), *flags,
           *[x for kv in (f"world={world}", f"output_dir={out}", "rollout.prompts_per_step=4", "rollout.group_size=4",
                          "rollout.max_new_tokens=24", "optim.micro_batch_size=8", "eval.samples=2",
                          "eval.ks=[1,2]", "eval.max_problems=5", "eval.every=0", *sets) for x in ("--set", kv)]]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GUIDEDRL_TEST_THREADS": "1"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE if wait else subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    if not wait:
        return proc
    try:
        printed, err = proc.communicate(timeout=600)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        raise
    assert proc.returncode == 0, err[-3000:]
    return subprocess.CompletedProcess(cmd, proc.returncode, printed, err)


def weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(run / "final" / "model.safetensors")


def steps(run: Path) -> list[dict]:
    return [r for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if "reward" in r]


def assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], tolerance: float = TOLERANCE) -> None:
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], atol=tolerance, rtol=0, msg=key)


@pytest.fixture(scope="module")
def one_process(micro_world: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("one") / "run"
    launch(1, "grpo.yaml", out, *FORCED, world=micro_world)
    return out


@pytest.fixture(scope="module", params=["ddp", "fsdp"])
def two_processes(request: pytest.FixtureRequest, micro_world: Path, tmp_path_factory: pytest.TempPathFactory
                  ) -> tuple[str, Path, str]:
    """The 2-process run (DDP or FSDP2), its output folder and what it printed."""
    out = tmp_path_factory.mktemp(request.param) / "run"
    printed = launch(2, "grpo.yaml", out, *FORCED, world=micro_world, sharding=request.param).stdout
    return request.param, out, printed


def test_two_processes_equal_one_even_where_a_rank_has_no_rows(two_processes: tuple[str, Path, str],
                                                               one_process: Path) -> None:
    sharding, two, printed = two_processes
    assert_same(weights(one_process), weights(two))
    records = steps(two)
    assert [r["step"] for r in records] == [1, 2, 3, 4]  # rank 0 logged once per step
    assert [r["updates"] for r in records] == [r["updates"] for r in steps(one_process)] == [4.0] * 4
    shards = two / "checkpoints" / "step_4" / "optimizer_0"  # FSDP: each rank wrote its own, rank 0 the index
    assert sorted(p.name for p in shards.glob("*")) == ([".metadata", "__0_0.distcp", "__1_0.distcp"]
                                                        if sharding == "fsdp" else [])
    # evaluation split over the ranks, gathered on rank 0: the same problems, in order, as one process's
    report = json.loads((two / "eval" / "before_test_id.json").read_text())
    single = json.loads((one_process / "eval" / "before_test_id.json").read_text())
    assert [p["prompt"] for p in report["problems"]] == [p["prompt"] for p in single["problems"]]
    assert len(report["problems"]) == 5  # 3 problems on one rank, 2 on the other
    # the memory estimate follows the launch: grpo.yaml leaves memory.sharding at none, FSDP2 shards it all
    said = "memory.sharding: the config says none, the launch shards full; the memory estimate uses full"
    assert (said in printed) == (sharding == "fsdp")


def test_ampo_with_guidance_on_some_ranks_only(micro_world: Path, tmp_path: Path) -> None:
    one, two = tmp_path / "one", tmp_path / "two"
    launch(1, "ampo.yaml", one, "steps=3", "save_every=0", world=micro_world)
    launch(2, "ampo.yaml", two, "steps=3", "save_every=0", world=micro_world)
    assert_same(weights(one), weights(two))
    rates = [r["guidance/teacher/rate"] for r in steps(two)]
    assert rates == [r["guidance/teacher/rate"] for r in steps(one)]
    assert any(0 < rate < 1 for rate in rates)  # some groups guided, not all: some ranks only


def test_refill_with_two_processes(micro_world: Path, tmp_path: Path) -> None:
    """DAPO's refill on 2 ranks: every rank draws every round until each holds its share of kept groups (2 of the
    step's 4), so a step that stopped before its last round keeps exactly 4 groups, counted over both ranks."""
    launch(2, "grpo.yaml", tmp_path, "steps=3", "save_every=0", "algorithm.batch_filters=[flat_groups]",
           "algorithm.refill={max_generation_rounds: 3}", world=micro_world)
    records = steps(tmp_path)
    assert [r["step"] for r in records] == [1, 2, 3]
    assert any(r["refill/rounds"] > 1 for r in records)  # the refill ran: some step needed a second round
    for r in records:
        assert r["refill/rounds"] in (1.0, 2.0, 3.0) and r["refill/groups"] in (0.0, 1.0, 2.0, 3.0, 4.0)
        if r["refill/rounds"] < 3:  # stopped early: both ranks held their share
            assert r["refill/groups"] == 4.0


def test_a_killed_two_process_run_resumes_exactly(two_processes: tuple[str, Path, str], micro_world: Path,
                                                  tmp_path: Path) -> None:
    sharding, whole, _ = two_processes
    killed = tmp_path / "killed"
    proc = launch(2, "grpo.yaml", killed, *FORCED, world=micro_world, sharding=sharding, wait=False)
    deadline = time.time() + 300
    while not (killed / "checkpoints" / "step_2" / "trainer_state.pt").exists():
        assert proc.poll() is None and time.time() < deadline, "the run ended before its first checkpoint"
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (killed / "summary.json").exists()
    launch(2, "grpo.yaml", killed, *FORCED, world=micro_world, sharding=sharding, flags=("--resume",))
    assert_same(weights(whole), weights(killed), tolerance=0.0)


class Recorded(Exception):
    """Raised by a stand-in collective once it has recorded the tensor it was given."""


def test_every_collective_tensor_is_on_the_ranks_device(monkeypatch: pytest.MonkeyPatch) -> None:
    """NCCL reduces accelerator tensors only: the rank's device here is ``meta``, which no CPU default can
    produce, so a tensor built without the device fails."""
    accelerator = SimpleNamespace(num_processes=2, process_index=0, device=torch.device("meta"),
                                  distributed_type="MULTI_GPU")
    ranks = Ranks(accelerator)
    devices: list[torch.device] = []

    def all_reduce(t: torch.Tensor, op: object = None) -> None:
        devices.append(t.device)
        raise Recorded

    monkeypatch.setattr("guidedrl.distributed.dist.all_reduce", all_reduce)
    for collective in (lambda: ranks.sum([1.0, 2.0]), lambda: ranks.max(3), lambda: ranks.any(True)):
        with pytest.raises(Recorded):
            collective()
    assert devices == [torch.device("meta")] * 3


def test_only_the_distributed_module_calls_collectives() -> None:
    """Every collective goes through :class:`Ranks` (which puts its tensors on the rank's device)."""
    calls = re.compile(r"torch\.distributed|from torch import distributed|\bdist\.\w+\(|accelerator\.(gather|reduce)")
    offenders = [str(p.relative_to(ROOT)) for p in (ROOT / "src" / "guidedrl").rglob("*.py")
                 if p.name != "distributed.py" and calls.search(p.read_text())]
    assert offenders == []


def test_deepspeed_is_refused_at_start(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("ACCELERATE_USE_DEEPSPEED", "true")
    with pytest.raises(RunError, match=r"^DeepSpeed is not supported: it needs CUDA, so guidedrl could not test it"):
        Ranks.detect("cpu")


@pytest.mark.parametrize("setting, value, line", [
    ("fsdp_version", 1, r"^fsdp_version: 1 is not supported \(set fsdp_version: 2\)"),
    ("state_dict_type", "FULL_STATE_DICT", r"^fsdp_state_dict_type: guidedrl writes the whole weights itself"),
    ("cpu_offload", True, r"^fsdp_offload_params: offloading to the CPU is not supported"),
    ("activation_checkpointing", True, r"^fsdp_activation_checkpointing: use guidedrl's gradient_checkpointing"),
    ("cpu_ram_efficient_loading", True, r"^fsdp_cpu_ram_efficient_loading: guidedrl loads the model on every rank"),
])
def test_fsdp_settings_guidedrl_does_not_run_are_refused(setting: str, value: object, line: str) -> None:
    from accelerate import FullyShardedDataParallelPlugin
    settings = {"fsdp_version": 2, "state_dict_type": "SHARDED_STATE_DICT", setting: value}
    plugin = FullyShardedDataParallelPlugin(**settings)
    accelerator = SimpleNamespace(state=SimpleNamespace(fsdp_plugin=plugin), distributed_type="FSDP")
    with pytest.raises(RunError, match=line):
        _shard(accelerator)
