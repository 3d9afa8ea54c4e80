"""Run listing, the HTML report (rendered by headless Chromium: the screenshot is not blank and every figure
holds data), and SFT on verified teacher solutions through TRL's SFTTrainer."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import CliRunner

from browser import painted, screenshot
from guidedrl.cli import app
from guidedrl.config import RewardSpec
from guidedrl.report.runs import read_run
from guidedrl.rewards import Reward
from guidedrl.sft import SFTSection, verified_pairs
from guidedrl.trainer.run_dir import RunDir
from scripted import ScriptedEngine, build_tiny_world

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
ROWS = [{"prompt": f"{a}+{b}\n", "answer": str(a + b), "hint": f"first {a}+{b}={a + b}", "teacher_solutions": [
    {"teacher": "t1", "text": f"{a}+{b}={a + b}\n\\boxed{{{a + b}}}"}, {"teacher": "t2", "text": "\\boxed{0}"},
    {"teacher": "t2", "text": f"so \\boxed{{{a + b}}}"}]} for a, b in [(1, 2), (3, 4), (5, 1), (2, 2)]]
SMALL = ["steps=3", "save_every=1", "rollout.prompts_per_step=2", "rollout.group_size=4", "rollout.max_new_tokens=8",
         "eval.samples=4", "eval.ks=[1,4]", "eval.every=2"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Two finished runs (GRPO and AMPO on scripted rollouts, so groups are mixed and guided) and a crashed one."""
    from guidedrl.config import TrainConfig
    from guidedrl.trainer.loop import Trainer
    from guidedrl.yaml_config import load_config
    root = tmp_path_factory.mktemp("report")
    world = build_tiny_world(root / "world", ROWS)
    script = {r["prompt"]: [f"\\boxed{{{r['answer']}}}", "\\boxed{1}", "x", "\\boxed{1}"] for r in ROWS}
    for name, config in (("grpo", "grpo.yaml"), ("ampo", "ampo.yaml")):
        cfg = load_config(CONFIGS / config, TrainConfig,
                          [f"world={world}", f"output_dir={root / 'runs' / name}", *SMALL])
        ask = {p: ["\\boxed{1}"] * 4 for p in script} if name == "ampo" else script  # AMPO: all wrong, so guided
        Trainer(cfg, console=Console(quiet=True), engine=lambda p, t, *_, s=ask: ScriptedEngine(p, t, s)).train()
    crashed = root / "runs" / "crashed"
    shutil.copytree(root / "runs" / "grpo", crashed)
    (crashed / "summary.json").unlink()
    return root / "runs", world


def test_runs_lists_status_method_and_figures(runs: tuple[Path, Path]) -> None:
    root, _ = runs
    held = RunDir(root / "held")  # a run whose process is alive (its lock is held), with nothing logged yet
    held.commit()
    (root / "held" / "config.yaml").write_text("steps: 1\n")
    result = CliRunner().invoke(app, ["runs", str(root)], env={"COLUMNS": "200"})
    held.release()
    assert result.exit_code == 0, result.output
    lines = {line.split("│")[1].strip(): line for line in result.output.splitlines() if line.startswith("│")}
    assert "finished" in lines["grpo"] and "dr_grpo + teacher guidance" in lines["ampo"]
    assert "crashed at step 3" in lines["crashed"] and "running" in lines["held"]
    grpo = read_run(root / "grpo")
    assert f"{grpo.steps[-1]['reward']:.3f}" in lines["grpo"]
    assert f"{100 * grpo.summary['after']['eval/test_id/pass@1']:.1f}" in lines["grpo"]


def test_runs_and_report_refuse_what_is_not_a_run(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    result = CliRunner().invoke(app, ["runs", str(tmp_path / "empty")])
    assert result.exit_code == 2 and "no run folders" in result.output
    result = CliRunner().invoke(app, ["report", str(tmp_path / "empty"), "--out", str(tmp_path / "r.html")])
    assert result.exit_code == 2 and "not a run folder (no metrics.jsonl or config.yaml)" in result.output
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "config.yaml").write_text("steps: 1\n")
    result = CliRunner().invoke(app, ["report", str(tmp_path / "half"), "--out", str(tmp_path / "r.html")])
    assert result.exit_code == 2 and "no metrics logged yet" in result.output


def test_the_report_renders_in_headless_chromium_with_data_in_every_figure(runs: tuple[Path, Path],
                                                                            tmp_path: Path) -> None:
    root, _ = runs
    out = tmp_path / "report.html"
    result = CliRunner().invoke(app, ["report", str(root / "grpo"), str(root / "ampo"), "--out", str(out)])
    assert result.exit_code == 0, result.output
    page = out.read_text()
    figures = re.findall(r'<figure data-plot="([^"]+)" data-series="(\d+)">', page)
    titles = {t for t, _ in figures}
    assert {"training reward", "groups with no signal", "guidance and hint rates", "selections per teacher",
            "comprehension scores", "entropy", "step time split", "pass@k test_id", "pass@k test_ood",
            "capability test_id"} <= titles
    assert all(int(n) >= 1 for _, n in figures) and "http" not in page.replace("http-equiv", "")  # offline
    assert "<td>algorithm.advantage</td><td>&quot;grpo&quot;</td><td>&quot;dr_grpo&quot;</td>" in page
    assert painted(screenshot(out.as_uri(), tmp_path / "shot.png"))  # text and figures were drawn


def test_sft_pairs_are_the_verified_teacher_solutions_only() -> None:
    reward = Reward([RewardSpec(name="math_answer")])
    pairs = verified_pairs(ROWS, reward, 0.6, SFTSection())
    assert len(pairs) == 2 * len(ROWS) and all("\\boxed{0}" not in p["completion"] for p in pairs)
    assert len(verified_pairs(ROWS, reward, 0.6, SFTSection(teachers=["t2"]))) == len(ROWS)
    assert len(verified_pairs(ROWS, reward, 0.6, SFTSection(per_problem=1))) == len(ROWS)
    chat = [dict(ROWS[0], prompt=[{"role": "user", "content": "1+2"}])]
    assert verified_pairs(chat, reward, 0.6, SFTSection())[0]["completion"][0]["role"] == "assistant"


def test_sft_trains_through_trl_and_writes_a_run_the_tools_read(runs: tuple[Path, Path], tmp_path: Path) -> None:
    _, world = runs
    out = tmp_path / "sft"
    result = CliRunner().invoke(app, ["sft", str(CONFIGS / "sft.yaml"), "--set", f"world={world}", "--set",
                                      f"output_dir={out}", "--set", "steps=3", "--set", "optim.micro_batch_size=4",
                                      "--set", "optim.lr=1e-2", "--set", "eval.samples=2", "--set", "eval.ks=[1,2]"])
    assert result.exit_code == 0, result.output
    assert "SFT on 8 verified teacher solutions of 4 problems" in " ".join(result.output.split())
    run = read_run(out)
    assert run.status == "finished" and run.method == "sft"
    assert [r["step"] for r in run.steps if "loss" in r] == [1, 2, 3]
    assert (out / "final" / "model.safetensors").exists() and (out / "checkpoints" / "step_3").exists()
    from transformers import AutoModelForCausalLM
    before = AutoModelForCausalLM.from_pretrained(world / "models" / "student")
    after = AutoModelForCausalLM.from_pretrained(out / "final")
    assert any((a != b).any() for a, b in zip(before.parameters(), after.parameters()))  # it trained
    assert json.loads((out / "summary.json").read_text())["before"].keys() == run.summary["after"].keys()
