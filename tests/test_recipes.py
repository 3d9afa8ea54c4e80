"""The recipes for Qwen2.5-Math-1.5B / 7B validate: ``guidedrl train RECIPE --dry-run`` builds every piece on
a Qwen2-architecture model this test builds with random weights (no download), and says what a step does."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import Qwen2Config, Qwen2ForCausalLM
from typer.testing import CliRunner

from guidedrl.cli import app
from tiny_chat_model import bpe_tokenizer, chat_rows

RECIPES = sorted((Path(__file__).resolve().parents[1] / "configs" / "recipes").glob("*.yaml"))


@pytest.fixture(scope="module")
def qwen(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A Qwen2-architecture model long enough for the recipes' 8192-token responses, and matching data."""
    root = tmp_path_factory.mktemp("recipes")
    tok = bpe_tokenizer("<|im_end|>", "<|endoftext|>")
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(Qwen2Config(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=10240))
    for part in (model, tok):
        part.save_pretrained(root / "model")
    rows = [dict(r, teacher_solutions=[{"teacher": t, "text": f"\\boxed{{{r['answer']}}}"}
                                       for t in ("deepseek_r1", "openr1_qwen_7b")]) for r in chat_rows()]
    (root / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root / "model", root / "train.jsonl"


@pytest.mark.parametrize("recipe", RECIPES, ids=[r.stem for r in RECIPES])
def test_a_recipe_builds_on_a_same_architecture_model(recipe: Path, qwen: tuple[Path, Path], tmp_path: Path) -> None:
    model, data = qwen
    assert "engine: vllm" in recipe.read_text()  # as the authors sampled; this venv has no vLLM, so hf below
    sets = [f"model={model}", f"dataset={data}", f"eval_datasets.math500={data}", "device=cpu",
            f"output_dir={tmp_path / 'never'}", "rollout.engine=hf"]
    if recipe.name.startswith("tgpo"):
        sets.append(f"teacher_signal.path={model}")
    result = CliRunner().invoke(app, ["train", str(recipe), "--dry-run", *[x for s in sets for x in ("--set", s)]],
                                env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    out = " ".join(result.output.split())
    samples = 7 if recipe.name.startswith("luffy") else 8
    updates = 1 if recipe.name.startswith("luffy") else 2
    assert f"128 prompts × {samples} samples" in out and f"{updates} optimizer update(s)" in out
    assert "Qwen2ForCausalLM" in out and "dry run: the config is valid" in out
    assert not (tmp_path / "never").exists()  # a dry run writes nothing where the run would go
