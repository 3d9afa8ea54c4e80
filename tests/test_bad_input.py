"""The bad-input suite: every malformed input or fault a user can cause gets one line, ``error: ...``, that
names the key, file or row, and loses nothing already written. One row of ``CASES`` per case: a name, a
setup that returns the CLI arguments (it may also break files), and the message expected.

Faults that keep a run going (a torn metrics line, a truncated newest checkpoint, non-finite updates)
are tested below the table.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from rich.console import Console
from typer.testing import CliRunner

from guidedrl.cli import app
from guidedrl.config import TrainConfig
from guidedrl.errors import RunError
from guidedrl.trainer.checkpoint import checkpoints, is_complete
from guidedrl.trainer.loop import Trainer
from guidedrl.trainer.run_dir import RunDir
from guidedrl.yaml_config import load_config
from scripted import build_tiny_world

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
ROWS = [{"prompt": f"{a}+{b}\n", "answer": str(a + b), "hint": "add"} for a, b in [(1, 2), (3, 4), (5, 1), (2, 2)]]
SMALL = ["steps=2", "save_every=1", "rollout.prompts_per_step=2", "rollout.group_size=2", "rollout.max_new_tokens=6",
         "eval.samples=2", "eval.ks=[1,2]", "eval.max_problems=2"]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_world(tmp_path_factory.mktemp("tiny"), ROWS)


def train(world: Path, out: Path, *sets: str, config: str = "grpo.yaml", flags: tuple[str, ...] = ()) -> list[str]:
    """``guidedrl train`` arguments on the tiny world at small settings."""
    return ["train", str(CONFIGS / config), *flags,
            *[x for kv in (f"world={world}", f"output_dir={out}", *SMALL, *sets) for x in ("--set", kv)]]


def jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def finished_run(world: Path, out: Path, *sets: str) -> Path:
    """A completed small run in ``out``."""
    assert CliRunner().invoke(app, train(world, out, *sets)).exit_code == 0
    return out


def broken_model(world: Path, tmp: Path, truncate: bool) -> Path:
    """A copy of the student whose weights file is cut in half, or missing."""
    model = tmp / "model"
    model.mkdir()
    for f in (world / "models" / "student").iterdir():
        (model / f.name).write_bytes(f.read_bytes())
    weights = model / "model.safetensors"
    if truncate:
        weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    else:
        weights.unlink()
    return model


def held_lock(world: Path, out: Path) -> list[str]:
    held_lock.dir = RunDir(out)  # another run holds the folder while this one starts
    return train(world, out)


Setup = Callable[[Path, Path], list[str]]
CASES: list[tuple[str, Setup, str]] = [
    ("output folder of another run", lambda w, t: (finished_run(w, t / "run"), train(w, t / "run"))[1],
     r"output_dir: .*/run already holds a run; pass --resume to continue it or --overwrite"),
    ("two runs in one folder", lambda w, t: held_lock(w, t / "run"), r"output_dir: .*/run is in use by another run"),
    ("output_dir is a file", lambda w, t: ((t / "f").write_text("x"), train(w, t / "f"))[1],
     r"output_dir: .*/f is a file, not a folder"),
    ("output folder not writable", lambda w, t: train(w, Path("/sys/guidedrl_run")),
     r"output_dir: cannot write to /sys/guidedrl_run: "),
    ("--resume without a checkpoint", lambda w, t: train(w, t / "new", flags=("--resume",)),
     r"--resume: .*/new/checkpoints holds no complete checkpoint; start the run without --resume"),
    ("--resume with another lr", lambda w, t: (finished_run(w, t / "run"), train(
        w, t / "run", "steps=3", "optim.lr=0.5", flags=("--resume",)))[1],
     r"--resume: the config differs from the run's .* in optim.lr \(0.0001 -> 0.5\); only steps, eval"),
    ("--resume a GRPO run with the PPO config", lambda w, t: (finished_run(w, t / "run"), train(
        w, t / "run", config="ppo.yaml", flags=("--resume",)))[1],
     r"--resume: the config differs .* algorithm.advantage \('grpo' -> 'gae'\)"),
    ("prompt longer than the context", lambda w, t: train(w, t / "run", f"dataset={jsonl(t / 'd.jsonl', [ROWS[0], {'prompt': '1+' * 150 + '1', 'answer': '151'}])}"),
     r"d.jsonl: row 1 \(0-based\): field 'prompt': 302 tokens, more than max_prompt_length 250 \(1 such rows\)"),
    ("Guide without hints or teacher solutions", lambda w, t: train(
        w, t / "run", f"dataset={jsonl(t / 'd.jsonl', [{'prompt': '1+1', 'answer': '2'}])}", config="guide_grpo.yaml"),
     r"guidance.ladder: hint needs hints, but .*d.jsonl has no 'hint' column and no teacher_solutions"),
    ("AMPO without teacher solutions", lambda w, t: train(
        w, t / "run", f"dataset={jsonl(t / 'd.jsonl', [{'prompt': '1+1', 'answer': '2'}])}", config="ampo.yaml"),
     r"guidance.ladder: teacher needs solutions, but .*d.jsonl has no 'teacher_solutions' column"),
    ("chat prompt without a chat template", lambda w, t: train(
        w, t / "run", f"dataset={jsonl(t / 'd.jsonl', [ROWS[0], {'prompt': [{'role': 'user', 'content': '1+1'}], 'answer': '2'}])}"),
     r"d.jsonl: row 1 \(0-based\): field 'prompt': a conversational prompt .* needs a tokenizer with a chat template"),
    ("missing answer", lambda w, t: train(w, t / "run", f"dataset={jsonl(t / 'd.jsonl', [{'prompt': 'x'}])}"),
     r"d.jsonl: row 0 \(0-based\): field 'answer': missing"),
    ("truncated model weights", lambda w, t: train(w, t / "run", f"model={broken_model(w, t, truncate=True)}"),
     r"model: .*/model/model.safetensors is truncated or damaged"),
    ("model folder without weights", lambda w, t: train(w, t / "run", f"model={broken_model(w, t, truncate=False)}"),
     r"model: .*/model holds no model weights \(model.safetensors\)"),
    ("user's model path missing", lambda w, t: train(w, t / "run", f"model={t / 'nowhere'}"),
     r"model: path .*/nowhere does not exist$"),  # no "build the world" advice for the user's own path
    ("world's data missing", lambda w, t: train(t, t / "run"),
     r"model: path .*/models/student does not exist \(build the world with `guidedrl world build --out "),
    ("online teacher path missing", lambda w, t: train(
        w, t / "run", f"guidance.teachers=[{{kind: online, path: {t / 'nope'}}}]", config="ampo.yaml"),
     r"guidance.teachers: online teacher path .*/nope does not exist"),
    ("eval.samples below max ks", lambda w, t: train(w, t / "run", "eval.ks=[1,8]"),
     r"--set eval.samples=2, --set eval.ks=\[1,8\].*: eval: samples \(2\) must be at least the largest k of ks \(8\)"),
    ("eval.ks with 0", lambda w, t: train(w, t / "run", "eval.ks=[0]"), r"every k of pass@k must be >= 1, got \[0\]"),
    ("--set typo", lambda w, t: train(w, t / "run", "optim.lrr=1"),
     r"--set optim.lrr=1: optim.lrr: unknown key \(did you mean 'lr'\?\)"),
    ("unknown advantage estimator", lambda w, t: train(w, t / "run", "algorithm.advantage=grpoo"),
     r"algorithm.advantage: unknown advantage estimator 'grpoo' \(did you mean 'grpo'\?\); known: dr_grpo"),
    ("eval -k 0", lambda w, t: ["eval", "--model", str(w / "models" / "student"), "-k", "0"],
     r"-k: expected comma-separated integers >= 1, got '0'"),
    ("eval -k 1,x", lambda w, t: ["eval", "--model", str(w / "models" / "student"), "-k", "1,x"],
     r"-k: expected comma-separated integers >= 1, got '1,x'"),
    ("eval of a model folder without weights", lambda w, t: [
        "eval", "--model", str(broken_model(w, t, truncate=False)), "--dataset", str(w / "data" / "test_id.jsonl")],
     r"--model: .*/model holds no model weights"),
    ("world build --set typo", lambda w, t: ["world", "build", "--out", str(t / "w"), "--size", "micro",
                                             "--set", "teacher_step=3"],
     r"--set teacher_step=3: teacher_step: unknown key \(did you mean 'teacher_steps'\?\)"),
    ("world build unknown size", lambda w, t: ["world", "build", "--out", str(t / "w"), "--size", "huge"],
     r"--size: unknown world size 'huge'; known: default, micro"),
]


@pytest.mark.parametrize(("name", "setup", "expected"), CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_a_one_line_error(name: str, setup: Setup, expected: str, world: Path, tmp_path: Path) -> None:
    before = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*") if p.is_file()}
    result = CliRunner().invoke(app, setup(world, tmp_path))
    getattr(held_lock, "dir", None) and held_lock.dir.release()
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    assert re.search(expected, lines[0].removeprefix("error: ")), lines[0]
    changed = [p for p, t in before.items() if p.exists() and p.stat().st_mtime_ns != t and p.name != ".lock"]
    assert not changed or name.startswith("--resume"), changed  # nothing already written is touched


def test_a_torn_metrics_line_and_a_truncated_newest_checkpoint_do_not_stop_a_resume(world: Path, tmp_path: Path) -> None:
    run = finished_run(world, tmp_path / "run", "steps=3", "keep_checkpoints=3")
    with (run / "metrics.jsonl").open("a") as f:
        f.write('{"step": 4, "rew')  # a kill in the middle of a line
    newest = checkpoints(run / "checkpoints")[-1]
    weights = newest / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])  # a kill in the middle of the last checkpoint
    assert not is_complete(newest) and is_complete(checkpoints(run / "checkpoints")[-2])
    result = CliRunner().invoke(app, train(world, run, "steps=4", "keep_checkpoints=3", flags=("--resume",)))
    assert result.exit_code == 0, result.output
    assert "checkpoints/step_2 at step 2" in result.output.replace("\n", "")  # step_3 was torn
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    steps = [r["step"] for r in records if "reward" in r]
    assert steps == [1, 2, 3, 4] and len({r["run_id"] for r in records}) == 1
    assert sum(1 for r in records if r.get("final")) == 1  # the final evaluation of the first run is redone once


def test_overwrite_moves_the_old_run_aside(world: Path, tmp_path: Path) -> None:
    run = finished_run(world, tmp_path / "run")
    old = json.loads((run / "run.json").read_text())["run_id"]
    result = CliRunner().invoke(app, train(world, run, flags=("--overwrite",)))
    assert result.exit_code == 0, result.output
    moved = [p for p in tmp_path.iterdir() if p.name.startswith("run.old-")]
    assert len(moved) == 1 and json.loads((moved[0] / "run.json").read_text())["run_id"] == old
    assert json.loads((run / "run.json").read_text())["run_id"] != old


def test_a_checkpoint_with_a_non_finite_parameter_is_never_written(world: Path, tmp_path: Path) -> None:
    cfg = load_config(CONFIGS / "grpo.yaml", TrainConfig, [f"world={world}", f"output_dir={tmp_path / 'run'}", *SMALL])
    trainer = Trainer(cfg, console=Console(quiet=True))
    first = trainer.save()
    with torch.no_grad():
        next(trainer.policy.parameters())[0, 0] = float("nan")
    with pytest.raises(RunError, match=r"refusing to write checkpoint step_0: parameter .* is not finite \(1 such\)"):
        trainer.save()
    assert checkpoints(tmp_path / "run" / "checkpoints") == [first] and is_complete(first)
    trainer.run_dir.release()


def test_a_non_finite_loss_skips_the_update(world: Path, tmp_path: Path) -> None:
    cfg = load_config(CONFIGS / "grpo.yaml", TrainConfig, [f"world={world}", f"output_dir={tmp_path / 'run'}",
                                                           *SMALL, "max_nonfinite_steps=2"])
    trainer = Trainer(cfg, console=Console(quiet=True))
    before = [p.detach().clone() for p in trainer.policy.parameters()]
    trainer.update.forward = lambda mb, grad=True: (torch.full_like(mb.rollouts.behaviour_logp, float("nan"),
                                                                    requires_grad=True), None, None, None)
    m = trainer.train_step()
    assert m["updates_skipped"] == 1.0 and all(torch.equal(a, p) for a, p in zip(before, trainer.policy.parameters()))
    with pytest.raises(RunError, match=r"step 2: the loss or gradient was not finite in 2 steps in a row"):
        trainer.train_step()
    trainer.run_dir.release()


def test_a_full_disk_while_checkpointing_keeps_the_previous_checkpoints(world: Path, tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = load_config(CONFIGS / "grpo.yaml", TrainConfig, [f"world={world}", f"output_dir={tmp_path / 'run'}", *SMALL])
    trainer = Trainer(cfg, console=Console(quiet=True))
    trainer.train_step()
    first = trainer.save()

    def full(*args: object, **kwargs: object) -> None:
        raise OSError(28, os.strerror(28))

    monkeypatch.setattr(torch, "save", full)
    trainer.train_step()
    with pytest.raises(RunError, match=r"no space left on device while writing checkpoint .*step_2; the previous"):
        trainer.save()
    assert checkpoints(tmp_path / "run" / "checkpoints") == [first] and is_complete(first)
    assert not list((tmp_path / "run" / "checkpoints").glob(".*"))
    trainer.run_dir.release()
