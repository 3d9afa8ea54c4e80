"""The run around the step: exact resume, checkpoints, the online teacher pool, config errors, and the CLI
commands (train, eval, world build, demo) at small settings. Models are untrained; what is asserted is
that the machinery reproduces itself exactly, never what a run learned."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from rich.console import Console
from transformers import AutoModelForCausalLM, AutoTokenizer
from typer.testing import CliRunner

from guidedrl.cli import app
from guidedrl.config import TeacherSource, TrainConfig
from guidedrl.rollout.engine import stop_token_ids
from guidedrl.rollout.hf_engine import HFEngine
from guidedrl.teachers.pool import OnlinePool
from guidedrl.trainer.checkpoint import checkpoints
from guidedrl.trainer.loop import Trainer
from guidedrl.yaml_config import ConfigError, load_config
from scripted import build_tiny_world

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
ROWS = [{"prompt": f"{a}+{b}\n", "answer": str(a + b), "hint": f"first {a}+{b}={a + b}",
         "teacher_solutions": [{"teacher": "t", "text": f"{a}+{b}={a + b}\n\\boxed{{{a + b}}}"}]}
        for a, b in [(1, 2), (3, 4), (5, 1), (2, 2), (7, 1), (4, 4), (6, 2), (3, 3)]]
TINY_WORLD = ["student_operands=[2]", "n_train=16", "n_test_id=6", "n_test_ood=6", "n_sft=64", "teacher_steps=2",
              "student_steps=2", "pool_samples=1", "eval_samples=2", "batch_size=8"]
SMALL_EVAL = ["eval.samples=2", "eval.ks=[1,2]", "eval.max_problems=4"]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_world(tmp_path_factory.mktemp("tiny"), ROWS)


def _config(world: Path, out: Path, config: str = "grpo.yaml", *overrides: str) -> TrainConfig:
    teacher = ([f"teacher_signal.path={world / 'models' / 'teacher'}"]
               if config in ("tgpo.yaml", "rkl_distill.yaml") else [])
    return load_config(CONFIGS / config, TrainConfig, [
        f"world={world}", f"output_dir={out}", "seed=0", "steps=4", "save_every=2", "rollout.prompts_per_step=4",
        "rollout.group_size=4", "rollout.max_new_tokens=12", "optim.micro_batch_size=8", "optim.lr=3e-3",
        *SMALL_EVAL, *teacher, *overrides])


RESUMABLE = [
    # the KL's reference stays the initial policy: an entropy bonus moves the policy off it, the KL pulls it back
    ("grpo.yaml", ("algorithm.regularizers.kl.coef=5.0", "algorithm.regularizers.entropy.coef=0.5",
                   "optim.lr=3e-2")),
    ("ppo.yaml", ()),  # the critic and its optimizer
    ("tgpo.yaml", ("teacher_signal.label=sample",)),  # sampled labels are seeded per step
    ("ampo.yaml", ("optim.mini_batches=2",)),  # teacher insertion; the mini-batch order is seeded per step
    ("guide_grpo.yaml", ("algorithm.batch_filters=[]",)),  # hinted re-rolls (unfiltered: the tiny student fails all)
]


@pytest.mark.parametrize(("config", "extra"), RESUMABLE)
def test_a_resumed_run_equals_an_uninterrupted_one(config: str, extra: tuple, world: Path, tmp_path: Path) -> None:
    whole = Trainer(_config(world, tmp_path / "whole", config, *extra), console=Console(quiet=True))
    expected = [whole.train_step() for _ in range(4)]

    stopped = Trainer(_config(world, tmp_path / "split", config, *extra), console=Console(quiet=True))
    for _ in range(2):
        stopped.train_step()
    stopped.save()
    stopped.train_step()  # work after the checkpoint that a kill -9 loses
    stopped.run_dir.release()  # as the kill does: the process and its lock are gone
    del stopped

    resumed = Trainer(_config(world, tmp_path / "split", config, *extra), resume=True, console=Console(quiet=True))
    assert resumed.step == 2 and resumed.sampler.state_dict() == {"epoch": 1, "position": 0}
    got = [resumed.train_step() for _ in range(2)]
    for a, b in zip(whole.policy.parameters(), resumed.policy.parameters()):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=0)
    for e, g in zip(expected[2:], got):
        assert g["loss"] == pytest.approx(e["loss"], abs=1e-6) and g["reward"] == e["reward"]


def test_checkpoints_rotate_and_the_final_model_is_the_last_checkpoint(world: Path, tmp_path: Path) -> None:
    cfg = _config(world, tmp_path / "run", "grpo.yaml", "save_every=1", "keep_checkpoints=2")
    Trainer(cfg, console=Console(quiet=True)).train()
    kept = checkpoints(tmp_path / "run" / "checkpoints")
    assert [p.name for p in kept] == ["step_3", "step_4"]
    assert not list((tmp_path / "run" / "checkpoints").glob(".*"))  # no temporary directory left
    final = AutoModelForCausalLM.from_pretrained(tmp_path / "run" / "final")
    last = AutoModelForCausalLM.from_pretrained(kept[-1])
    for a, b in zip(final.parameters(), last.parameters()):
        assert torch.equal(a, b)


def test_online_pool_samples_each_problem_once_and_independently_of_history(world: Path) -> None:
    source = TeacherSource(kind="online", path=str(world / "models" / "teacher"), samples=3)
    first, second = (OnlinePool(source.path, None, source.samples, 1.0, 16, seed=0) for _ in range(2))
    calls = []
    generate = first.engine.generate
    first.engine.generate = lambda *a, **k: calls.append(1) or generate(*a, **k)
    a = first.solutions([ROWS[0]])[0] + first.solutions([ROWS[1], ROWS[0]])[1]
    assert len(calls) == 2  # the second ask of ROWS[0] is served from the cache
    b = second.solutions([ROWS[1], ROWS[0]])[1] * 2  # asked in another order, after another problem
    assert a == b and all(s.teacher == "teacher" for s in a)
    assert len(set(s.text for s in a[:len(a) // 2])) == len(a) // 2  # deduplicated


class ReleasingEngine(HFEngine):
    """The built-in engine with a ``release`` hook (as vLLM's sleep mode), recording the trainer's calls in order."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)
        self.calls: list[str] = []

    def generate(self, *args: object, **kwargs: object) -> object:
        self.calls.append("generate")
        return super().generate(*args, **kwargs)

    def release(self) -> None:
        self.calls.append("release")

    def sync_weights(self, model: torch.nn.Module) -> None:
        self.calls.append("sync")
        super().sync_weights(model)


def test_an_engine_releases_its_memory_after_sampling_and_is_synced_after_the_update(world: Path,
                                                                                        tmp_path: Path) -> None:
    engines: list[ReleasingEngine] = []

    def build(policy: torch.nn.Module, tokenizer: object, rollout: object, precision: object) -> ReleasingEngine:
        engines.append(ReleasingEngine(policy, tokenizer.pad_token_id, stop_token_ids(policy, tokenizer),
                                       precision=precision))
        return engines[-1]

    cfg = _config(world, tmp_path / "run", "grpo.yaml", "algorithm.batch_filters=[]")  # every step updates
    trainer = Trainer(cfg, console=Console(quiet=True), engine=build)
    trainer.train_step()
    trainer.train_step()
    assert engines[0].calls == ["generate", "release", "sync"] * 2


def test_bad_configs_are_clear_errors(world: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("rollout:\n  grup_size: 8\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: rollout.grup_size: unknown key \(did you mean 'group_size'\?\)"):
        load_config(bad, TrainConfig)
    bad.write_text("rollout:\n  group_size: 1\n")
    with pytest.raises(ConfigError, match=r"rollout.group_size: .*greater than or equal to 2"):
        load_config(bad, TrainConfig)
    bad.write_text("algorithm:\n  regularizers:\n    entropyy: {coef: 0.1}\n")
    with pytest.raises(ConfigError, match=r"unknown regularizer 'entropyy' \(did you mean 'entropy'\?\); known: "):
        load_config(bad, TrainConfig)
    with pytest.raises(ConfigError, match=r"eval: .*samples \(2\) must be at least the largest k of ks \(8\)"):
        load_config(None, TrainConfig, ["eval.samples=2", "eval.ks=[1,8]"])
    with pytest.raises(ConfigError, match=r"unknown guidance strategy 'hints'"):
        load_config(None, TrainConfig, ["guidance.ladder=[hints]"])
    cfg = _config(world, tmp_path / "run", "grpo.yaml", f"model={tmp_path / 'nowhere'}")
    with pytest.raises(ConfigError, match=r"model: path .*nowhere does not exist"):
        Trainer(cfg, console=Console(quiet=True))


def test_cli_train_then_eval(world: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    result = CliRunner().invoke(app, ["train", str(CONFIGS / "grpo.yaml"), "--set", f"world={world}",
                                      "--set", f"output_dir={run}", "--set", "steps=2", "--set", "save_every=1",
                                      "--set", "rollout.prompts_per_step=2", "--set", "rollout.max_new_tokens=8",
                                      *[x for kv in SMALL_EVAL for x in ("--set", kv)]])
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "reward" in r] == [1, 2]
    summary = json.loads((run / "summary.json").read_text())
    after = json.loads((run / "eval" / "after_test_id.json").read_text())
    assert summary["after"]["eval/test_id/pass@2"] == after["pass_at_k"]["2"]
    assert load_config(run / "config.yaml", TrainConfig).steps == 2

    report = tmp_path / "report.json"
    result = CliRunner().invoke(app, ["eval", "--model", str(run / "final"), "--dataset",
                                      str(world / "data" / "test_id.jsonl"), "-k", "1,2", "--max-new-tokens", "8",
                                      "--output", str(report)])
    assert result.exit_code == 0, result.output
    problems = json.loads(report.read_text())["problems"]
    assert len(problems) == len(ROWS) and all(p["n"] == 2 for p in problems)


def test_cli_world_build_and_demo_at_small_settings(tmp_path: Path) -> None:
    world = tmp_path / "w"
    sets = [x for kv in TINY_WORLD for x in ("--set", kv)]
    result = CliRunner().invoke(app, ["world", "build", "--out", str(world), "--size", "micro", *sets])
    assert result.exit_code == 0, result.output
    manifest = json.loads((world / "world.json").read_text())
    assert manifest["complete"] and set(manifest["pool"]) == {"teacher_steps", "teacher_rewrite"}
    tok = AutoTokenizer.from_pretrained(world / "models" / "student")
    assert tok.decode(tok("7+4*8\n")["input_ids"], skip_special_tokens=True) == "7+4*8\n"
    again = CliRunner().invoke(app, ["world", "build", "--out", str(world), "--size", "micro", *sets])
    assert "is up to date" in " ".join(again.output.split())

    out = tmp_path / "demo"
    world_sets = [x for kv in TINY_WORLD for x in ("--world-set", kv)]
    result = CliRunner().invoke(app, ["demo", "--world", str(world), "--size", "micro", *world_sets, "--steps", "2",
                                      "--out", str(out), "--set", "rollout.prompts_per_step=2",
                                      "--set", "rollout.max_new_tokens=8",
                                      *[x for kv in SMALL_EVAL for x in ("--set", kv)]])
    assert result.exit_code == 0, result.output
    comparison = json.loads((out / "comparison.json").read_text())
    assert set(comparison) == {"grpo", "ampo"}
    assert all(comparison[m]["before"] == comparison["grpo"]["before"] for m in comparison)  # same student, same eval
    target = [json.loads(line) for line in (out / "target.jsonl").read_text().splitlines()]
    assert len(target) == 200 and {r["n_operands"] for r in target} == {3}  # the class the student never saw
    runs = {m: json.loads((out / m / "eval" / "after_target.json").read_text()) for m in comparison}
    assert all(len(r["problems"]) == 4 and r["problems"][0]["prompt"] == target[0]["prompt"] for r in runs.values())
    after = {m: comparison[m]["after"] for m in comparison}
    diff = 100 * (after["ampo"]["eval/target/pass@1"] - after["grpo"]["eval/target/pass@1"])
    sentence = " ".join(result.output.split())
    assert "The target class is 200 held-out problems with 3 operands" in sentence
    assert f"ampo − grpo is {diff:+.1f} points of pass@1 there" in sentence


def test_a_teachers_own_generation_limit_reaches_its_pool(world: Path) -> None:
    """guidance.teachers[*].max_new_tokens is the teacher's budget; without it the student's rollout budget."""
    from guidedrl.config import GuidanceConfig, RewardSpec
    from guidedrl.guidance.base import GuidanceContext
    from guidedrl.guidance.build import build_guidance
    from guidedrl.rewards import Reward
    from guidedrl.rollout.engine import SamplingParams

    for limit, expected in ((7, 7), (None, 12)):
        cfg = GuidanceConfig(ladder=["teacher"], teachers=[TeacherSource(
            kind="online", path=str(world / "models" / "teacher"), max_new_tokens=limit)])
        ctx = GuidanceContext(policy=None, tokenizer=None, engine=None, reward=Reward([RewardSpec(name="math_answer")]),
                              correct_threshold=0.6, group_size=4, sampling=SamplingParams(1.0, 1.0, 12), seed=0)
        (pool,) = build_guidance(cfg, ctx).pools
        assert pool.max_new_tokens == expected
