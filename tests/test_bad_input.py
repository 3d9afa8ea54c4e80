"""The bad-input suite: every malformed input or fault a user can cause gets one line, ``error: ...``, that
names the key, file or row, and loses nothing already written. One row of ``CASES`` per case: a name, a
setup that returns the CLI arguments (it may also break files), and the message expected. A run that fails
once training has started may show its progress bar before that line, nothing else.

Faults that keep a run going (a torn metrics line, a truncated newest checkpoint, non-finite updates), the
ways work could be lost (an --overwrite of a live run or of an input, a world built over, a full disk while
writing the final model), damaged files `runs` reads past, and a bug's traceback are tested below the table.
"""

from __future__ import annotations

import importlib
import json
import os
import re
import sys
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
    model = student_without(world, tmp, *(() if truncate else ("model.safetensors",)))
    if truncate:
        weights = model / "model.safetensors"
        weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    return model


def held_lock(world: Path, out: Path, *flags: str) -> list[str]:
    held_lock.dir = RunDir(out)  # another run holds the folder (and has written its run.json) while this one starts
    held_lock.dir.commit()
    return train(world, out, flags=flags)


def student_without(world: Path, tmp: Path, *names: str) -> Path:
    """A copy of the world's student without the named files (its tokenizer, say)."""
    model = tmp / "model"
    model.mkdir()
    for f in (world / "models" / "student").iterdir():
        if f.name not in names:
            (model / f.name).write_bytes(f.read_bytes())
    return model


def raw(path: Path, data: bytes | str) -> Path:
    """``path`` holding exactly ``data`` (bytes for a file that is not UTF-8)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data if isinstance(data, bytes) else data.encode())
    return path


def module(tmp: Path, name: str, source: str) -> str:
    """``name``, a module of the user's (``source``) importable by that name (each row uses its own name)."""
    raw(tmp / "modules" / f"{name}.py", source)
    sys.path.insert(0, str(tmp / "modules"))
    importlib.invalidate_caches()
    return name


def reward(tmp: Path, name: str, body: str) -> str:
    """``--set rewards=...`` naming a user's reward function with ``body`` (``def reward(prompts, completions,
    **kwargs)`` unless the body defines it)."""
    source = body if body.startswith(("def ", "import ", "raise ", "x = ")) else \
        f"def reward(prompts, completions, **kwargs):\n    {body}\n"
    return f"rewards=[{{name: '{module(tmp, name, source)}:reward'}}]"


def fake_run(tmp: Path, **files: bytes | str) -> Path:
    """A run folder as a run leaves it (its config, one metrics record), with ``files`` (path in it -> content)."""
    run = tmp / "run"
    raw(run / "config.yaml", "algorithm: {advantage: grpo}\n")
    raw(run / "metrics.jsonl", '{"step": 1, "run_id": "r", "reward": 0.5}\n')
    for name, data in files.items():
        raw(run / name, data)
    return run


def fake_world(tmp: Path, manifest: bytes | str) -> Path:
    """A world folder as a build leaves it (models and data, here one file each) with ``manifest`` as world.json."""
    out = raw(tmp / "fw" / "world.json", manifest).parent
    raw(out / "models" / "student" / "model.safetensors", b"weights")
    raw(out / "data" / "train.jsonl", '{"prompt": "1+1", "answer": "2"}\n')
    return out


ENV: dict[str, str | None] = {}  # environment of the next invoke, set by a row's setup


def logged_out_of_wandb(world: Path, tmp: Path) -> list[str]:
    ENV.update(WANDB_API_KEY=None, WANDB_MODE=None, NETRC=str(tmp / "no-netrc"), WANDB_CONFIG_DIR=str(tmp))
    return train(world, tmp / "run", "report_to=[wandb]")


SOLUTIONS = [{"prompt": "1+2\n", "answer": "3", "teacher_solutions": [{"teacher": "t1", "text": "\\boxed{3}"}]}]
PROGRESS = re.compile(r"^step \d+/\d+ ")  # the trainer's progress bar, drawn before a failure mid-training


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
    ("prompt longer than the context", lambda w, t: train(
        w, t / "run", f"dataset={jsonl(t / 'd.jsonl', [ROWS[0], {'prompt': '1+' * 150 + '1', 'answer': '151'}])}"),
     r"d.jsonl: row 1 \(0-based\): field 'prompt': 302 tokens, more than max_prompt_length 250 \(1 such rows\)"),
    ("Guide without hints or teacher solutions", lambda w, t: train(
        w, t / "run", f"dataset={jsonl(t / 'd.jsonl', [{'prompt': '1+1', 'answer': '2'}])}", config="guide_grpo.yaml"),
     r"guidance.ladder: hint needs hints, but .*d.jsonl has no 'hint' column and no teacher_solutions"),
    ("AMPO without teacher solutions", lambda w, t: train(
        w, t / "run", f"dataset={jsonl(t / 'd.jsonl', [{'prompt': '1+1', 'answer': '2'}])}", config="ampo.yaml"),
     r"guidance.ladder: teacher needs solutions, but .*d.jsonl has no 'teacher_solutions' column"),
    ("chat prompt without a chat template", lambda w, t: train(
        w, t / "run",
        f"dataset={jsonl(t / 'd.jsonl', [ROWS[0], {'prompt': [{'role': 'user', 'content': '1+1'}], 'answer': '2'}])}"),
     r"d.jsonl: row 1 \(0-based\): field 'prompt': a conversational prompt .* "
     r"needs a tokenizer with a chat template"),
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
    # work that would be lost: nothing is moved, deleted or mixed (the tests below the table show it)
    ("--overwrite of a live run", lambda w, t: held_lock(w, t / "run", "--overwrite"),
     r"output_dir: .*/run is in use by another run"),
    ("--overwrite into the model folder", lambda w, t: train(w, w / "models" / "student", flags=("--overwrite",)),
     r"output_dir: \S+/models/student is what model names \(\S+\); a run's folder must be apart from what the run"),
    ("--overwrite into the world", lambda w, t: train(w, w, flags=("--overwrite",)),
     r"output_dir: \S+ holds what model names \(\S+/models/student\)"),
    ("--overwrite into the data folder", lambda w, t: train(w, w / "data", flags=("--overwrite",)),
     r"output_dir: \S+/data holds what dataset names \(\S+/data/train.jsonl\)"),
    ("output_dir inside the world", lambda w, t: train(w, w / "runs" / "grpo"),
     r"output_dir: \S+/runs/grpo is inside what world names"),
    ("output_dir holding the dataset", lambda w, t: train(w, t, f"dataset={jsonl(t / 'd.jsonl', ROWS)}"),
     r"output_dir: \S+ holds what dataset names \(\S+/d.jsonl\)"),
    ("world build over another world", lambda w, t: ["world", "build", "--out", str(fake_world(t, '{"hash": "x"}')),
                                                     "--size", "micro"],
     r"--out: \S+/fw holds a world built with other settings \(x, these are \w+\); "
     r"choose another --out, or pass --force"),
    ("demo over another world", lambda w, t: ["demo", "--world", str(fake_world(t, '{"hash": "x"}')), "--size", "micro",
                                              "--configs", str(CONFIGS), "--out", str(t / "demo")],
     r"--world: \S+/fw holds a world built with other settings .*; choose another --world, or pass --force"),
    ("world build into a folder of other files", lambda w, t: ["world", "build", "--out", str(
        raw(t / "notes" / "a.txt", "x").parent), "--size", "micro"],
     r"--out: \S+/notes holds files but no world.json, so it is not a world; choose another --out, or pass --force"),
    ("world build --out a file", lambda w, t: ["world", "build", "--out", str(raw(t / "f", "x")), "--size", "micro"],
     r"--out: \S+/f is a file, not a folder"),
    ("world build --out not writable", lambda w, t: ["world", "build", "--out", "/sys/guidedrl_world",
                                                    "--size", "micro"],
     r"--out: cannot write to /sys/guidedrl_world: permission denied"),
    ("world build on a damaged world.json", lambda w, t: ["world", "build", "--out", str(fake_world(t, '{"hash": ')),
                                                          "--size", "micro"],
     r"\S+/fw/world.json: not valid JSON \(line 1, column 10: Expecting value\); the file is damaged; choose another"),
    # tracebacks or raw library messages before
    ("world build --set an operand count of 1", lambda w, t: ["world", "build", "--out", str(t / "w"),
                                                              "--size", "micro", "--set", "id_operands=[1]"],
     r"--set id_operands=\[1\]: id_operands\[0\]: Input should be greater than or equal to 2"),
    ("an empty rewards list", lambda w, t: train(w, t / "run", "rewards=[]"),
     r"--set rewards=\[\]: rewards: List should have at least 1 item"),
    ("optim.betas out of range", lambda w, t: train(w, t / "run", "optim.betas=[0.9,1.5]"),
     r"optim.betas\[1\]: Input should be less than 1"),
    ("a huge seed", lambda w, t: train(w, t / "run", "seed=99999999999999999999"),
     r"seed: Input should be less than or equal to 4294967295"),
    ("an infinite learning rate", lambda w, t: train(w, t / "run", "optim.lr=.inf"),
     r"optim.lr: Input should be a finite number"),
    ("LoRA target_modules the model lacks", lambda w, t: train(w, t / "run", "lora.target_modules=[nope]"),
     r"lora.target_modules: Target modules \{'nope'\} not found in the base model"),
    ("report_to wandb without a login", logged_out_of_wandb,
     r"report_to: wandb: No API key configured.*WANDB_MODE=offline"),
    ("device mps without MPS", lambda w, t: train(w, t / "run", "device=mps"),
     r"device: device 'mps' asked for, but torch sees no MPS device"),
    ("an unknown device", lambda w, t: train(w, t / "run", "device=foo"),
     r"device: unknown device 'foo'; expected auto, cpu, mps, cuda or cuda:N"),
    ("a plugin with a syntax error", lambda w, t: train(w, t / "run", f"plugins=[{raw(t / 'p.py', 'def f(:')}]"),
     r"plugins: cannot import plugin '\S+/p.py': it raised SyntaxError: .* \(\S+/p.py, line 1\)"),
    ("a plugin that raises on import", lambda w, t: train(
        w, t / "run", f"plugins=[{raw(t / 'p.py', 'raise OSError(5)')}]"),
     r"plugins: cannot import plugin '\S+/p.py': it raised OSError: 5"),
    ("a reward module with a syntax error", lambda w, t: train(w, t / "run", reward(t, "gr_syntax", "def reward(:")),
     r"cannot import reward 'gr_syntax:reward': gr_syntax raised SyntaxError: .* \(\S+/gr_syntax.py, line 1\)"),
    ("a reward module that raises on import", lambda w, t: train(w, t / "run", reward(t, "gr_import", "x = 1 / 0")),
     r"cannot import reward 'gr_import:reward': gr_import raised ZeroDivisionError: division by zero"),
    ("a reward that raises", lambda w, t: train(w, t / "run", reward(t, "gr_raises", "return [1 / 0]")),
     r"^reward gr_raises:reward raised ZeroDivisionError: division by zero$"),
    ("a reward of the wrong length", lambda w, t: train(w, t / "run", reward(t, "gr_length", "return [1.0]")),
     r"^reward gr_length:reward returned 1 values for 4 completions$"),
    ("a reward of strings", lambda w, t: train(
        w, t / "run", reward(t, "gr_strings", "return ['1'] * len(completions)")),
     r"^reward gr_strings:reward returned str '1', not a number for completion 0 \(prompt '\d\+\d\\n'\)$"),
    ("a reward returning a generator", lambda w, t: train(
        w, t / "run", reward(t, "gr_gen", "return (1.0 for _ in [1])")),
     r"^reward gr_gen:reward returned generator <generator object .*, not a list of one number \(or None\) per"),
    ("a reward with a positional signature", lambda w, t: train(w, t / "run", reward(
        t, "gr_positional", "def reward(prompts, completions):\n    return [0.0] * len(completions)\n")),
     r"rewards\[0\].name: reward 'gr_positional:reward' has the signature \(prompts, completions\), which cannot be"),
    ("hint_template with an unknown field", lambda w, t: train(
        w, t / "run", "guidance.hint_template='{prompt}{question}'"),
     r"guidance.hint_template: unknown field \{question\}; the fields are \{hint\}, \{prompt\}"),
    ("a data row that is not UTF-8", lambda w, t: train(
        w, t / "run", f"dataset={raw(t / 'd.jsonl', b'{}' + bytes([10, 255]))}"),
     r"d.jsonl: row 1 \(0-based\): line 2: not UTF-8 text \(byte 0\)$"),
    ("a torn data row", lambda w, t: train(w, t / "run", f"dataset={raw(t / 'd.jsonl', '{}' + chr(10) + '{[')}"),
     r"d.jsonl: row 1 \(0-based\): line 2: not valid JSON at column 2 \(Expecting property name"),
    ("a data row that is not an object", lambda w, t: train(
        w, t / "run", f"dataset={raw(t / 'd.jsonl', '{}' + chr(10) + '[1]')}"),
     r"d.jsonl: row 1 \(0-based\): line 2: expected a JSON object, got list$"),
    ("a damaged parquet file", lambda w, t: train(w, t / "run", f"dataset={raw(t / 'd.parquet', 'PAR1 torn')}"),
     r"d.parquet: cannot read: .*[Pp]arquet"),
    ("a config file that is not UTF-8", lambda w, t: ["train", str(raw(t / "c.yaml", b"steps: 2\n\xff"))],
     r"c.yaml: not UTF-8 text \(byte 9\); the file is damaged$"),
    ("a config file that is not YAML", lambda w, t: ["train", str(raw(t / "c.yaml", "steps: [2"))],
     r"c.yaml: invalid YAML: while parsing a flow sequence .* expected ',' or ']'"),
    ("--resume with a damaged run.json", lambda w, t: (raw(finished_run(w, t / "run") / "run.json", "{"), train(
        w, t / "run", "steps=3", flags=("--resume",)))[1],
     r"--resume: \S+/run/run.json: not valid JSON .*; the file is damaged "
     r"\(restore it, or start anew with --overwrite\)"),
    ("report on a damaged summary.json", lambda w, t: ["report", str(fake_run(t, **{"summary.json": "{"})), "--out",
                                                       str(t / "r.html")],
     r"\S+/run/summary.json: not valid JSON \(line 1, column 2: .*\); the file is damaged$"),
    ("analyze a damaged evaluation report", lambda w, t: ["analyze", str(fake_run(
        t, **{"eval/before_id.json": "[", "eval/after_id.json": "{}"}))],
     r"\S+/run/eval/before_id.json: not valid JSON"),
    ("analyze a report of another shape", lambda w, t: ["analyze", str(fake_run(
        t, **{"eval/before_id.json": '{"problems": [{"n": 0}]}', "eval/after_id.json": "{}"}))],
     r"\S+/eval/before_id.json: not an evaluation report "
     r"\(each problem needs prompt, n >= 1 and correct in \[0, n\]\)"),
    ("eval --output a folder", lambda w, t: ["eval", "--model", str(w / "models" / "student"), "--output", str(t)],
     r"--output: \S+ is a folder; give a file path$"),
    ("eval --output not writable", lambda w, t: ["eval", "--model", str(w / "models" / "student"), "--output",
                                                 "/sys/guidedrl.json"],
     r"--output: cannot write /sys/guidedrl.json: permission denied$"),
    ("report --out a folder", lambda w, t: ["report", str(fake_run(t)), "--out", str(t)], r"--out: \S+ is a folder"),
    ("eval --model missing", lambda w, t: ["eval", "--model", str(t / "nowhere")],
     r"--model: path \S+/nowhere does not exist$"),
    ("eval --model without a tokenizer", lambda w, t: [
        "eval", "--model", str(student_without(w, t, "tokenizer.json", "tokenizer_config.json")),
        "--dataset", str(w / "data" / "test_id.jsonl")], r"--model: \S+/model holds no tokenizer \(tokenizer.json, "),
    ("eval --model a file", lambda w, t: ["eval", "--model", str(w / "models" / "student" / "config.json")],
     r"--model: \S+/config.json is a file; give the model's folder"),
    ("eval --device foo", lambda w, t: ["eval", "--model", str(w / "models" / "student"), "--device", "foo"],
     r"--device: unknown device 'foo'"),
    ("model a file", lambda w, t: train(w, t / "run", f"model={w / 'models' / 'student' / 'config.json'}"),
     r"model: \S+/config.json is a file"),
    ("sft.scheduler unknown", lambda w, t: ["sft", str(CONFIGS / "sft.yaml"), "--set", f"world={w}", "--set",
                                            f"output_dir={t / 'run'}", "--set", "sft.scheduler=warmup_stable_decay"],
     r"sft.scheduler: Input should be 'constant', 'constant_with_warmup', 'linear'"),
    # accepted silently before
    ("NaN rewards", lambda w, t: train(w, t / "run", reward(t, "gr_nan", "return [float('nan')] * len(completions)")),
     r"^reward gr_nan:reward returned nan, not a finite number for completion 0 \(prompt "),
    ("optim.mini_batches above the groups", lambda w, t: train(w, t / "run", "optim.mini_batches=3"),
     r"optim.mini_batches \(3\) is more than the groups of a step \(rollout.prompts_per_step 2\)"),
    ("a run that made no update", lambda w, t: train(w, t / "run", "algorithm.batch_filters=[flat_groups]"),
     r"^the run made no update in its 2 steps \(each was skipped as non-finite, or every group was filtered\)"),
    ("Rich markup in a message", lambda w, t: train(w, t / "run", f"model={t / '[x]' / 'nowhere'}"),
     r"model: path \S+/\[x\]/nowhere does not exist$"),
    ("an offline teacher the data lacks", lambda w, t: train(w, t / "run", f"dataset={jsonl(t / 'd.jsonl', SOLUTIONS)}",
                                                             "guidance.teachers=[{teachers: [nobody]}]",
                                                             config="ampo.yaml"),
     r"guidance.teachers\[0\].teachers: no teacher 'nobody' in \S+/d.jsonl's teacher_solutions; its teachers: t1$"),
    ("hint_template without {prompt}", lambda w, t: train(w, t / "run", "guidance.hint_template='hint: {hint}'"),
     r"guidance.hint_template: must contain \{prompt\}"),
    ("num_guidance above the group size", lambda w, t: train(w, t / "run", "guidance.num_guidance=3",
                                                             config="ampo.yaml"),
     r"guidance.num_guidance \(3\) is more than rollout.group_size \(2\)"),
    ("eval with a negative temperature", lambda w, t: ["eval", "--model", str(w / "models" / "student"),
                                                      "--temperature", "-1"],
     r"Invalid value for '--temperature': .*(greater than or equal to 0|x>=0)"),
    ("eval with no new tokens", lambda w, t: ["eval", "--model", str(w / "models" / "student"),
                                             "--max-new-tokens", "0"],
     r"Invalid value for '--max-new-tokens': .*(greater than or equal to 1|x>=1)"),
    ("analyze -k 0", lambda w, t: ["analyze", str(fake_run(t)), "-k", "0"],
     r"Invalid value for '-k': .*(greater than or equal to 1|x>=1)"),
    ("analyze --solved-at 2", lambda w, t: ["analyze", str(fake_run(t)), "--solved-at", "2"],
     r"Invalid value for '--solved-at': .*(less than or equal to 1|0<=x<=1)"),
    ("a prompt far over the length bound", lambda w, t: train(
        w, t / "run", f"dataset={jsonl(t / 'd.jsonl', [ROWS[0], {'prompt': '1' * 2000, 'answer': '1'}])}"),
     r"d.jsonl: row 1 \(0-based\): field 'prompt': 2000 characters, so at least 400 tokens, "
     r"more than max_prompt_length 250"),
]


@pytest.mark.parametrize(("name", "setup", "expected"), CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_a_one_line_error(name: str, setup: Setup, expected: str, world: Path, tmp_path: Path) -> None:
    before = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*") if p.is_file()}
    result = CliRunner().invoke(app, setup(world, tmp_path), env=dict(ENV))
    ENV.clear()
    getattr(held_lock, "dir", None) and held_lock.dir.release()
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.strip().splitlines() if not PROGRESS.match(line)]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    assert re.search(expected, lines[0].removeprefix("error: ")), lines[0]
    changed = [p for p, t in before.items() if p.exists() and p.stat().st_mtime_ns != t and p.name != ".lock"]
    assert not changed or name.startswith("--resume"), changed  # nothing already written is touched


def test_a_torn_metrics_line_and_a_truncated_newest_checkpoint_do_not_stop_a_resume(
        world: Path, tmp_path: Path) -> None:
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


@pytest.mark.parametrize("groups, mini_batches", [(2, 1), (4, 3)])  # torch.chunk cuts 4 groups in 2 parts, not 3
def test_a_non_finite_loss_skips_the_update(groups: int, mini_batches: int, world: Path, tmp_path: Path) -> None:
    cfg = load_config(CONFIGS / "grpo.yaml", TrainConfig, [f"world={world}", f"output_dir={tmp_path / 'run'}",
                                                           *SMALL, "max_nonfinite_steps=2",
                                                           f"rollout.prompts_per_step={groups}",
                                                           f"optim.mini_batches={mini_batches}"])
    trainer = Trainer(cfg, console=Console(quiet=True))
    before = [p.detach().clone() for p in trainer.policy.parameters()]
    trainer.update.forward = lambda mb, grad=True: (torch.full_like(mb.rollouts.behaviour_logp, float("nan"),
                                                                    requires_grad=True), None, {})
    m = trainer.train_step()
    assert m["updates_skipped"] == mini_batches and "updates" not in m
    assert all(torch.equal(a, p) for a, p in zip(before, trainer.policy.parameters()))
    with pytest.raises(RunError, match=r"step 2: the loss or gradient was not finite in 2 steps in a row"):
        trainer.train_step()
    trainer.run_dir.release()


def errno_28(*args: object, **kwargs: object) -> None:
    """A write on a full disk, as an ``OSError`` with its errno."""
    raise OSError(28, os.strerror(28))


def torch_on_a_full_disk(*args: object, **kwargs: object) -> None:
    """A write on a full disk, as torch's writer reports it: a RuntimeError whose text has no errno and no
    "No space left" (``/dev/full`` answers every write with ENOSPC)."""
    REAL_SAVE({"weights": torch.zeros(100_000)}, "/dev/full")


REAL_SAVE = torch.save


@pytest.mark.parametrize("fault", [errno_28, torch_on_a_full_disk])
def test_a_full_disk_while_checkpointing_keeps_the_previous_checkpoints(fault: Callable, world: Path, tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = load_config(CONFIGS / "grpo.yaml", TrainConfig, [f"world={world}", f"output_dir={tmp_path / 'run'}", *SMALL])
    trainer = Trainer(cfg, console=Console(quiet=True))
    trainer.train_step()
    first = trainer.save()
    monkeypatch.setattr(torch, "save", fault)
    trainer.train_step()
    with pytest.raises(RunError, match=r"no space left on device while writing checkpoint .*step_2; the previous"):
        trainer.save()
    assert checkpoints(tmp_path / "run" / "checkpoints") == [first] and is_complete(first)
    assert not list((tmp_path / "run" / "checkpoints").glob(".*"))
    trainer.run_dir.release()


def test_a_read_only_checkpoints_folder_is_one_line(world: Path, tmp_path: Path) -> None:
    """The checkpoints folder is a link into /sys, which no one may write (not even root, as chmod would be)."""
    cfg = load_config(CONFIGS / "grpo.yaml", TrainConfig, [f"world={world}", f"output_dir={tmp_path / 'run'}", *SMALL])
    trainer = Trainer(cfg, console=Console(quiet=True))
    (tmp_path / "run" / "checkpoints").symlink_to("/sys")
    trainer.train_step()
    with pytest.raises(RunError,
                       match=r"^permission denied while writing checkpoint .*/step_1; the previous checkpoints"):
        trainer.save()
    trainer.run_dir.release()


def test_a_full_disk_while_writing_the_final_model_leaves_no_half_model(world: Path, tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """Loss 4: the final model is written into a temporary folder and renamed; a full disk leaves no final/, the
    checkpoints whole, and says so in one line."""
    cfg = load_config(CONFIGS / "grpo.yaml", TrainConfig, [f"world={world}", f"output_dir={tmp_path / 'run'}", *SMALL])
    trainer = Trainer(cfg, console=Console(quiet=True))
    save = type(trainer.policy).save_pretrained

    def full_at_the_end(model: object, path: Path, *args: object, **kwargs: object) -> None:
        if Path(path).name in ("final", ".final.tmp"):  # the final model, written in place or to be renamed
            torch_on_a_full_disk()
        save(model, path, *args, **kwargs)

    monkeypatch.setattr(type(trainer.policy), "save_pretrained", full_at_the_end)
    with pytest.raises(RunError, match=r"^no space left on device while writing the final model .*/run/final; the "
                                       r"checkpoints are kept \(free space or make the folder writable, "
                                       r"then --resume\)"):
        trainer.train()
    run = tmp_path / "run"
    assert not (run / "final").exists() and not list(run.glob(".final*")) and not (run / "summary.json").exists()
    assert [p.name for p in checkpoints(run / "checkpoints")] == ["step_1", "step_2"]
    assert all(is_complete(p) for p in checkpoints(run / "checkpoints"))


def test_an_overwrite_never_moves_or_mixes_a_live_run(world: Path, tmp_path: Path) -> None:
    """Loss 1: the folder's lock is taken before anything is moved, so the live run keeps its folder and its
    metrics hold its own run id only."""
    cfg = load_config(CONFIGS / "grpo.yaml", TrainConfig, [f"world={world}", f"output_dir={tmp_path / 'run'}", *SMALL])
    live = Trainer(cfg, console=Console(quiet=True))
    result = CliRunner().invoke(app, train(world, tmp_path / "run", flags=("--overwrite",)))
    assert result.exit_code == 2 and "is in use by another run" in result.output
    assert [p.name for p in tmp_path.iterdir()] == ["run"]
    live.train()
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert {r["run_id"] for r in records} == {live.run_dir.run_id}
    assert json.loads((tmp_path / "run" / "run.json").read_text())["run_id"] == live.run_dir.run_id
    assert (tmp_path / "run" / "final" / "model.safetensors").exists()


def snapshot(root: Path) -> dict[Path, int]:
    """Every file under ``root`` and its modification time."""
    return {p: p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file() and p.name != ".lock"}


@pytest.mark.parametrize("inside", ["models/student", ".", "data", "models"])
def test_an_overwrite_never_moves_an_input(inside: str, tmp_path: Path) -> None:
    """Loss 2: output_dir on the model, the world or its data is refused before anything is moved."""
    world = build_tiny_world(tmp_path / "w", ROWS)
    before = snapshot(tmp_path)
    result = CliRunner().invoke(app, train(world, world / inside, flags=("--overwrite",)))
    assert result.exit_code == 2 and "a run's folder must be apart from what the run reads" in result.output
    assert snapshot(tmp_path) == before and not list(tmp_path.rglob("*.old-*"))


@pytest.mark.parametrize("command", [["world", "build", "--out"], ["demo", "--configs", str(CONFIGS), "--world"]])
def test_a_build_never_deletes_a_built_world(command: list[str], tmp_path: Path) -> None:
    """Loss 3: other settings into a built world are refused, whatever the command; --force moves it aside whole."""
    from guidedrl.world.build import claim_world

    world = fake_world(tmp_path, '{"hash": "x", "complete": true}')
    before = snapshot(tmp_path)
    result = CliRunner().invoke(app, [*command, str(world), "--size", "micro"])
    assert result.exit_code == 2 and "pass --force to move it aside" in result.output, result.output
    assert snapshot(tmp_path) == before
    assert claim_world(world, "y", force=True, console=Console(quiet=True)) is None
    moved = [p for p in tmp_path.iterdir() if p.name.startswith("fw.old-")]
    assert len(moved) == 1 and not world.exists()
    assert {p.relative_to(moved[0]): p.read_bytes() for p in moved[0].rglob("*") if p.is_file()} == {
        p.relative_to(world): (moved[0] / p.relative_to(world)).read_bytes() for p in before}


def test_overwrites_in_the_same_second_keep_every_old_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("guidedrl.files.time.strftime", lambda fmt: "20260101-000000")  # one second, three runs
    run, moved = tmp_path / "run", []
    for i in range(3):
        raw(run / "metrics.jsonl", str(i))
        claimed = RunDir(run, overwrite=True)
        claimed.commit()
        moved.append(claimed.moved_to)
        claimed.release()
    assert [p.name for p in moved] == ["run.old-20260101-000000", "run.old-20260101-000000-2",
                                       "run.old-20260101-000000-3"]
    assert [(p / "metrics.jsonl").read_text() for p in moved] == ["0", "1", "2"]


def test_a_failed_start_leaves_the_folder_as_it_was(world: Path, tmp_path: Path) -> None:
    """Nothing is written before every start-up check passed: the corrected run starts, and a failed --overwrite
    moves nothing."""
    bad = "lora.target_modules=[nope]"  # found once the model is loaded, after the folder is locked
    result = CliRunner().invoke(app, train(world, tmp_path / "run", bad))
    assert result.exit_code == 2 and [p.name for p in (tmp_path / "run").iterdir()] == [".lock"]
    finished_run(world, tmp_path / "run")
    before = snapshot(tmp_path)
    assert CliRunner().invoke(app, train(world, tmp_path / "run", bad, flags=("--overwrite",))).exit_code == 2
    assert snapshot(tmp_path) == before and sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_runs_lists_every_run_past_damaged_files(tmp_path: Path) -> None:
    fake_run(tmp_path / "good")
    fake_run(tmp_path / "bad", **{"summary.json": "{", "config.yaml": b"\xff", "eval/before_id.json": "[1"})
    with (tmp_path / "bad" / "run" / "metrics.jsonl").open("ab") as f:
        f.write(b'\xff\n[1]\n{"step": "x"}\n')
    result = CliRunner().invoke(app, ["runs", str(tmp_path)])
    assert result.exit_code == 0, result.output
    out = result.output
    assert "good/run" in out and "bad/run" in out and out.count("\ndamaged: ") == 3
    assert re.search(r"damaged: \S+/bad/run/config.yaml: not UTF-8 text", out)
    assert re.search(r"damaged: \S+/bad/run/summary.json: not valid JSON", out)
    assert re.search(r"damaged: \S+/bad/run/eval/before_id.json: not valid JSON", out)


def test_a_bug_shows_its_traceback_and_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def bug(root: Path) -> list:
        return {}["missing"]

    monkeypatch.setattr("guidedrl.report.runs.find_runs", bug)
    result = CliRunner().invoke(app, ["runs", str(tmp_path)])
    assert result.exit_code == 1 and "Traceback" in result.output
    assert result.output.strip().splitlines()[-1] == ("error: this is a bug in guidedrl (KeyError: 'missing'); please "
                                                      "report it with the traceback above")


def test_the_length_bound_holds_for_the_world_and_is_not_used_where_it_would_not() -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from guidedrl.prompt_length import max_token_chars
    from guidedrl.world.tokenizer import build_tokenizer

    tok = build_tokenizer()
    assert max_token_chars(tok) == 5  # "<pad>": every token stands for one character, so 5 is an upper bound
    for text in ("1+2*3\n", "\u2603 unknown \u00e9", "x" * 1000):
        assert len(tok(text, add_special_tokens=False)["input_ids"]) * 5 >= len(text)
    words = Tokenizer(models.WordLevel(vocab={"[UNK]": 0, "a": 1}, unk_token="[UNK]"))
    words.pre_tokenizer = pre_tokenizers.WhitespaceSplit()  # an unknown word of any length is one [UNK]
    assert max_token_chars(PreTrainedTokenizerFast(tokenizer_object=words, unk_token="[UNK]")) is None
