"""The vLLM engine and served teachers, on vLLM's CPU build (``make test-vllm`` installs it in .venv-vllm).

Real parts only: a ``vllm.LLM`` of the shipped world's student in this process, training runs in subprocesses (one
process, and two over gloo, each with its own vLLM), a real ``vllm serve`` of a world teacher on 127.0.0.1 started
by the fixture, and a real HTTP server on loopback that answers garbage (vLLM's sleep mode, which needs CUDA, is
the one part recorded instead of run). Without vLLM the module is skipped, unless GUIDEDRL_REQUIRE_VLLM=1 (CI),
where a skip would hide a broken install.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import replace
from pathlib import Path

import pytest
import torch

if os.environ.get("GUIDEDRL_REQUIRE_VLLM") != "1":
    pytest.importorskip("vllm")
from safetensors.torch import load_file  # noqa: E402
from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: E402

from guidedrl.config import RolloutConfig, ServerSpec, TeacherSource, VLLMSection  # noqa: E402
from guidedrl.data import encode_prompts, load_rows  # noqa: E402
from guidedrl.errors import RunError  # noqa: E402
from guidedrl.eval.evaluate import evaluate  # noqa: E402
from guidedrl.precision import Precision  # noqa: E402
from guidedrl.rollout.engine import SamplingParams  # noqa: E402
from guidedrl.rollout.forward import response_logprobs  # noqa: E402
from guidedrl.teachers.model import FrozenTeacher  # noqa: E402
from guidedrl.teachers.server import HintWriter, ServedTeacher, ServerClient, server_client, server_pool  # noqa: E402
from loopback import free_port  # noqa: E402

ROOT = Path(__file__).parents[1]
WORLD = ROOT / "worlds" / "default"
STUDENT, TEACHER = WORLD / "models" / "student", WORLD / "models" / "teacher_steps"
TOLERANCE = 1e-4  # fp32: vLLM's CPU kernels and the training forward differ by rounding only (seen: ~7e-6)
VLLM = RolloutConfig(engine="vllm", max_prompt_length=100, vllm=VLLMSection(gpu_memory_utilization=0.1))


def copies() -> set[Path]:
    """The temporary folders the engine starts vLLM from."""
    return set(Path(tempfile.gettempdir()).glob("guidedrl-vllm-*"))


@pytest.fixture(scope="module")
def student() -> tuple:
    tokenizer = AutoTokenizer.from_pretrained(STUDENT)
    return AutoModelForCausalLM.from_pretrained(STUDENT).eval(), tokenizer


@pytest.fixture(scope="module")
def engine(student: tuple):
    from guidedrl.rollout.vllm_engine import VLLMEngine

    before = copies()
    engine = VLLMEngine.from_policy(*student, VLLM, Precision())
    engine.copies_left = copies() - before
    return engine


@pytest.fixture(scope="module")
def prompts(student: tuple) -> list[list[int]]:
    return encode_prompts(student[1], [r["prompt"] for r in load_rows(WORLD / "data" / "test_id.jsonl")[:4]])


def gap(model: torch.nn.Module, rollouts) -> float:
    """Largest |vLLM behaviour log-prob − training-forward log-prob| over the response tokens."""
    with torch.no_grad():
        logp = response_logprobs(model, rollouts.input_ids, rollouts.attention_mask, rollouts.prompt_width, 1.0).logp
    return float(((logp - rollouts.behaviour_logp) * rollouts.response_mask).abs().max())


def test_vllm_log_probs_are_the_training_forwards(student: tuple, engine, prompts: list[list[int]]) -> None:
    rollouts = engine.generate(prompts, 4, SamplingParams(1.0, 1.0, 48, seeds=(1, 2, 3, 4)))
    assert rollouts.prompt_index.tolist() == [0] * 4 + [1] * 4 + [2] * 4 + [3] * 4
    assert rollouts.finished.all() and (rollouts.response_mask.sum(1) > 1).all()
    assert gap(student[0], rollouts) < TOLERANCE


def test_vllm_leaves_no_model_on_disk_and_holds_the_runs_longest_sequence(engine) -> None:
    """Its start folder is gone (there was an fp32 copy of the model per run, never removed), and its KV cache is
    sized for max_prompt_length + max_new_tokens = 100 + 64, not the model's context (256)."""
    assert engine.copies_left == set()
    assert engine.llm.llm_engine.model_config.max_model_len == 164


def test_a_prompts_samples_depend_on_its_seed_alone(engine, prompts: list[list[int]]) -> None:
    both = engine.generate(prompts[:2], 4, SamplingParams(1.0, 1.0, 48, seeds=(5, 6)))
    alone = engine.generate(prompts[1:2], 4, SamplingParams(1.0, 1.0, 48, seeds=(6,)))
    width = alone.response_ids.shape[1]
    assert torch.equal(both.response_ids[4:, :width], alone.response_ids)
    other = engine.generate(prompts[1:2], 4, SamplingParams(1.0, 1.0, 48, seeds=(7,)))
    assert not torch.equal(other.response_ids, alone.response_ids)  # another seed: other samples


def test_after_a_sync_vllm_samples_from_the_new_weights(student: tuple, engine, prompts: list[list[int]]) -> None:
    changed = copy.deepcopy(student[0])
    torch.manual_seed(0)
    with torch.no_grad():  # embeddings included: the CPU build's tied output head must follow them
        for p in changed.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    engine.sync_weights(changed)
    try:
        rollouts = engine.generate(prompts, 4, SamplingParams(1.0, 1.0, 48, seeds=(1, 2, 3, 4)))
        assert gap(changed, rollouts) < TOLERANCE
        assert gap(student[0], rollouts) > 0.05  # the old weights would give other log-probs
    finally:
        engine.sync_weights(student[0])


def test_a_sleeping_engine_wakes_its_weights_syncs_then_wakes_its_kv_cache(student: tuple, engine,
                                                                             prompts: list[list[int]],
                                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """vLLM's sleep mode needs CUDA, so on the CPU build its sleep and wake-up calls are recorded; the sync between
    them is real. ``release`` sleeps at level 2, an asleep engine refuses to sample, and ``sync_weights`` wakes the
    weights, copies the new ones in, then wakes the KV cache."""
    calls: list[tuple] = []
    rpc = engine.llm.collective_rpc
    monkeypatch.setattr(engine, "sleep_mode", True)
    monkeypatch.setattr(engine.llm, "sleep", lambda level: calls.append(("sleep", level)))
    monkeypatch.setattr(engine.llm, "wake_up", lambda tags: calls.append(("wake_up", tags)))
    monkeypatch.setattr(engine.llm, "collective_rpc", lambda method, **kw: calls.append((method,)) or rpc(method, **kw))
    engine.release()
    with pytest.raises(RuntimeError, match="asleep"):
        engine.generate(prompts[:1], 1, SamplingParams(1.0, 1.0, 4, seed=0))
    engine.sync_weights(student[0])
    assert calls == [("sleep", 2), ("wake_up", ["weights"]), ("reload_weights",), ("wake_up", ["kv_cache"])]
    assert gap(student[0], engine.generate(prompts, 2, SamplingParams(1.0, 1.0, 48, seeds=(1, 2, 3, 4)))) < TOLERANCE


def test_evaluation_asks_vllm_for_no_log_probs(student: tuple, engine, prompts: list[list[int]],
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """Evaluation never reads behaviour log-probs, so its requests carry ``logprobs=None`` (no per-token log-prob
    dicts); rollouts and hinted re-rolls ask for the sampled token's (0). The samples are the same either way."""
    asked: list[int | None] = []
    generate = engine.llm.generate

    def spy(requests: list, params: list, **kwargs: object) -> list:
        asked.extend(p.logprobs for p in params)
        return generate(requests, params, **kwargs)

    monkeypatch.setattr(engine.llm, "generate", spy)
    evaluate(engine, student[1], load_rows(WORLD / "data" / "test_id.jsonl")[:2], split="test_id", ks=(1, 2),
             max_new_tokens=16)
    assert len(asked) == 2 * 2 and set(asked) == {None}  # greedy and sampled, 2 problems each
    sampling = SamplingParams(1.0, 1.0, 16, seeds=(1, 2))
    read, unread = engine.generate(prompts[:2], 2, sampling), engine.generate(prompts[:2], 2,
                                                                              replace(sampling, behaviour_logp=False))
    assert asked[4:] == [0, 0, None, None]
    assert torch.equal(read.response_ids, unread.response_ids) and not unread.behaviour_logp.any()


def train_args(out: Path, engine_name: str, *extra: str) -> list[str]:
    """``train`` of a 2-step GRPO run on the world at lr 5e-4: its weights move 10x the tolerance, and AdamW's
    normalization keeps two processes' summation order within it (seen: 3e-5)."""
    sets = [f"world={WORLD}", f"output_dir={out}", "steps=2", "save_every=0", "eval.every=0", "eval.samples=2",
            "eval.ks=[1,2]", "eval.max_problems=8", "rollout.prompts_per_step=8", "rollout.max_new_tokens=48",
            "optim.lr=5e-4", f"rollout.engine={engine_name}", "rollout.vllm.gpu_memory_utilization=0.1", *extra]
    return ["train", str(ROOT / "configs" / "grpo.yaml"), *[x for kv in sets for x in ("--set", kv)]]


def run_train(out: Path, engine_name: str, processes: int = 1, *extra: str) -> tuple[list[dict], str]:
    """A training run's metrics and output. Two processes: torchrun over gloo (``accelerate launch --cpu`` starts
    one process only, without mpirun), each rank with its own vLLM."""
    launcher = [] if processes == 1 else ["-m", "torch.distributed.run", "--nproc_per_node", str(processes),
                                          "--master_port", str(free_port())]
    env = {**os.environ, "ACCELERATE_USE_CPU": "true", "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, *launcher, "-m", "guidedrl", *train_args(out, engine_name, *extra)],
                          capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()], done.stdout + done.stderr


@pytest.fixture(scope="module")
def vllm_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict]]:
    """One process, engine vllm: the run the built-in engine's and the 2-process run are compared with."""
    out = tmp_path_factory.mktemp("vllm") / "run"
    return out, run_train(out, "vllm")[0]


def test_a_preempted_seeded_request_on_the_cpu_build_is_a_clear_error(engine, prompts: list[list[int]],
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """The CPU build's failure on resuming a preempted seeded request (a KV cache too small for the step) is
    reported as what to change; other engine errors pass through as they are."""
    def preempted(*args: object, **kwargs: object) -> None:
        raise RuntimeError("CPU Generator does not use offset")
    monkeypatch.setattr(engine.llm, "generate", preempted)
    with pytest.raises(RunError, match="rollout.vllm.gpu_memory_utilization"):
        engine.generate(prompts[:1], 2, SamplingParams(1.0, 1.0, 4, seed=0))

    def other(*args: object, **kwargs: object) -> None:
        raise RuntimeError("something else")
    monkeypatch.setattr(engine.llm, "generate", other)
    with pytest.raises(RuntimeError, match="something else"):
        engine.generate(prompts[:1], 2, SamplingParams(1.0, 1.0, 4, seed=0))


def test_a_grpo_run_with_vllm_matches_one_with_the_built_in_engine(vllm_run: tuple, tmp_path: Path) -> None:
    hf = [r for r in run_train(tmp_path / "hf", "hf")[0] if "reward" in r]
    vl = [r for r in vllm_run[1] if "reward" in r]
    assert [r["step"] for r in vl] == [1, 2]
    # step 1 samples 64 rows from the same initial policy on the same prompts: the mean reward of a 0/1 reward
    # has a standard error of at most 0.5/√64 = 0.0625 per run, so two engines agree within 4·√2 of it
    assert abs(hf[0]["reward"] - vl[0]["reward"]) < 0.36
    assert abs(hf[0]["response_length"] - vl[0]["response_length"]) < 6
    assert all(r["behaviour_logp_gap"] < TOLERANCE for r in vl)  # engine vs training forward, recomputed


def test_rollout_correction_on_vllm_weighs_the_engines_own_log_probs(tmp_path: Path) -> None:
    """No recompute, one update per step: π_old is the training forward's own log-prob and the sampler's are
    vLLM's, so each token's weight is exp of the engine's gap, within the engine tolerance of 1."""
    metrics, _ = run_train(tmp_path / "corrected", "vllm", 1, "rollout.recompute_behaviour_logp=false",
                           "algorithm.rollout_correction={level: token, mode: truncate, threshold: 2.0}")
    steps = [r for r in metrics if "reward" in r]
    assert [r["step"] for r in steps] == [1, 2] and all("behaviour_logp_gap" not in r for r in steps)
    assert all(abs(r["rollout_correction/weight_mean"] - 1.0) < TOLERANCE for r in steps)
    assert all(r["rollout_correction/masked_frac"] == 0.0 for r in steps)


def test_two_processes_each_with_its_own_vllm_equal_one(vllm_run: tuple, tmp_path: Path) -> None:
    """Each rank samples its half of the prompts with its own vLLM (external launcher), trains, and syncs its own
    engine: the run ends where the 1-process run does, within the engine tolerance, sample for sample."""
    one, one_metrics = vllm_run
    two = tmp_path / "two"
    metrics, output = run_train(two, "vllm", processes=2)
    assert output.count("Using external launcher for distributed inference") == 2  # two engines really ran
    steps = [[r for r in m if "reward" in r] for m in (one_metrics, metrics)]
    assert [r["step"] for r in steps[1]] == [r["step"] for r in steps[0]] == [1, 2]
    for key in ("reward", "response_length"):  # the same samples: means of the same rows
        assert [r[key] for r in steps[1]] == pytest.approx([r[key] for r in steps[0]], abs=1e-9)
    assert [r["grad_norm"] for r in steps[1]] == pytest.approx([r["grad_norm"] for r in steps[0]], rel=1e-4)
    initial = load_file(STUDENT / "model.safetensors")
    a, b = load_file(one / "final" / "model.safetensors"), load_file(two / "final" / "model.safetensors")
    assert max(float((a[k] - b[k]).abs().max()) for k in a) < TOLERANCE
    assert max(float((a[k] - initial[k]).abs().max()) for k in initial) > 5 * TOLERANCE  # the updates moved them

# ---- served teachers -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def served() -> tuple[ServerSpec, subprocess.Popen]:
    port = free_port()
    cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(TEACHER),
           "--served-model-name", "teacher_steps", "--dtype", "float32", "--max-model-len", "256",
           "--enforce-eager", "--gpu-memory-utilization", "0.1", "--host", "127.0.0.1", "--port", str(port)]
    env = dict(os.environ, VLLM_CPU_OMP_THREADS_BIND="nobind", VLLM_CPU_KVCACHE_SPACE="1")
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    spec = ServerSpec(base_url=f"http://127.0.0.1:{port}/v1", model="teacher_steps", timeout_s=60, retries=1,
                      backoff_s=0.1, concurrency=4)
    deadline = time.time() + 300
    while time.time() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=2)
            break
        except OSError:
            assert proc.poll() is None, "vllm serve exited"
            time.sleep(2)
    else:
        proc.kill()
        pytest.fail("vllm serve did not come up in 300 s")
    yield spec, proc
    proc.kill()
    proc.wait()


@pytest.fixture(scope="module")
def server(served: tuple[ServerSpec, subprocess.Popen]) -> ServerSpec:
    return served[0]


def test_served_teacher_log_probs_and_labels_are_the_local_teachers(server: ServerSpec, student: tuple,
                                                                     engine, prompts: list[list[int]]) -> None:
    rollouts = engine.generate(prompts, 2, SamplingParams(1.0, 1.0, 48, seeds=(1, 2, 3, 4)))
    local = FrozenTeacher.load(str(TEACHER), student[1]).predict(rollouts)
    served = ServedTeacher(server_client(server, None, "teacher_signal.server")).predict(rollouts)
    mask = rollouts.response_mask.bool()
    assert float((local.logp - served.logp)[mask].abs().max()) < TOLERANCE
    assert torch.equal(local.label[mask], served.label[mask])


def test_a_served_pool_samples_once_per_problem_and_its_cache_survives(server: ServerSpec, tmp_path: Path) -> None:
    rows = load_rows(WORLD / "data" / "train.jsonl")[:3]
    pool = server_pool(TeacherSource(kind="server", server=server, samples=2), 48, 0, Precision(), tmp_path)
    first = pool.solutions(rows)
    assert all(1 <= len(s) <= 2 and all(x.teacher == "teacher_steps" and x.text for x in s) for s in first)
    # a resumed run: a new client on the same cache, the server unreachable: the same answers, no request
    down = server.model_copy(update={"base_url": f"http://127.0.0.1:{free_port()}/v1", "retries": 0})
    cache = next(tmp_path.glob("*.jsonl"))
    again = type(pool)(ServerClient(down, cache), "teacher_steps", 2, 1.0, 48, 0).solutions(rows)
    assert again == first


def test_a_hint_writer_writes_the_servers_greedy_completion(server: ServerSpec, tmp_path: Path) -> None:
    writer = HintWriter(server_client(server, tmp_path, "guidance.hint_writer"), "Problem: {prompt}\nHint:", 16)
    prompt = load_rows(WORLD / "data" / "train.jsonl")[0]["prompt"]
    body = json.dumps({"model": server.model, "prompt": f"Problem: {prompt}\nHint:", "max_tokens": 16,
                       "temperature": 0.0}).encode()
    request = urllib.request.Request(f"{server.base_url}/completions", body, {"Content-Type": "application/json"})
    expected = json.loads(urllib.request.urlopen(request).read())["choices"][0]["text"].strip()
    assert writer.hint(prompt) == (expected or None)


def test_an_ampo_run_survives_its_teacher_server_being_killed(served: tuple, tmp_path: Path) -> None:
    """Last in the module: it kills the shared server while a run uses it. The run goes on, its guidance
    requests counted as skips (problems asked before come from the cache), and completes every step."""
    spec, proc = served
    teachers = json.dumps([{"kind": "server", "samples": 2, "server": spec.model_dump()}])
    out = tmp_path / "ampo"
    sets = [f"world={WORLD}", f"output_dir={out}", "steps=6", "save_every=0", "eval.every=0", "eval.max_problems=4",
            "eval.samples=2", "eval.ks=[1,2]", "rollout.prompts_per_step=4", "rollout.max_new_tokens=48",
            f"guidance.teachers={teachers}", "guidance.trigger=always"]
    cmd = [sys.executable, "-m", "guidedrl", "train", str(ROOT / "configs" / "ampo.yaml")]
    for kv in sets:
        cmd += ["--set", kv]
    run = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    metrics = out / "metrics.jsonl"
    deadline = time.time() + 300
    while time.time() < deadline and run.poll() is None:
        if metrics.exists() and '"step": 2' in metrics.read_text():
            break
        time.sleep(0.5)
    proc.kill()  # the teacher server dies mid-run
    output = run.communicate(timeout=600)[0]
    assert run.returncode == 0, output[-3000:]
    records = [json.loads(line) for line in metrics.read_text().splitlines() if '"reward"' in line]
    assert [r["step"] for r in records] == [1, 2, 3, 4, 5, 6]
    assert records[0]["guidance/teacher/server_skips"] == 0
    assert records[-1]["guidance/teacher/server_skips"] > 0
