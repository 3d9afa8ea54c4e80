"""The recipes for Qwen2.5-Math-1.5B / 7B validate: ``guidedrl train RECIPE --dry-run`` builds every piece on
a Qwen2-architecture model this test builds with random weights (no download), and says what a step does."""

from __future__ import annotations

import json
import sys
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


# ---- the memory estimate on the recipes' real shapes (configs/models: Qwen2.5-Math's published config.json) ----
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
from guidedrl.config import TrainConfig  # noqa: E402
from guidedrl.memory.estimate import GIB, ModelShape, activation_bytes_per_token, estimate_memory  # noqa: E402
from guidedrl.memory.plan import check_context, context_of, model_config  # noqa: E402
from guidedrl.yaml_config import ConfigError  # noqa: E402
from recipe_memory import SHAPES, recipe_estimate, summary  # noqa: E402


@pytest.mark.parametrize("recipe", RECIPES, ids=[r.stem for r in RECIPES])
def test_every_recipe_fits_its_stated_hardware_and_says_so(recipe: Path) -> None:
    cfg, estimate = recipe_estimate(recipe)
    assert cfg.memory.gpu_memory_gib is not None and estimate.fits, "\n".join(estimate.lines())
    assert summary(cfg, estimate) in recipe.read_text()  # the header line is today's estimate


def test_unit_values_of_the_estimate_for_the_1_5b_and_7b_shapes() -> None:
    small, big = (ModelShape.of(model_config(SHAPES / n)) for n in ("qwen2.5-math-1.5b", "qwen2.5-math-7b"))
    assert (small.params, big.params) == (1_543_714_304, 7_615_616_512)  # the published parameter counts
    cfg = TrainConfig(precision="bf16", gradient_checkpointing=True, rollout={"max_new_tokens": 8192,
                      "max_prompt_length": 1024, "engine": "vllm", "vllm": {"gpu_memory_utilization": 0.4}},
                      memory={"gpu_memory_gib": 80, "tokens_per_forward": 16384, "logits_chunk": 1024})
    e = estimate_memory(cfg, small)
    assert e.part("policy weights") == small.params * 4  # fp32 master weights under bf16 autocast
    assert e.part("AdamW state (2 moments, fp32)") == small.params * 8
    assert e.part("gradients") == small.params * 4
    assert e.part("vLLM (weights + KV cache)") == 0.4 * 80 * GIB
    assert e.part("logits of one chunk") == 1024 * 151_936 * 4 * 6
    # per token with checkpointing: each of 28 layers keeps its 1536-wide input, one layer is recomputed (and
    # its gradients held): 13·1536 + 4·8960 + 3·256 elements, 2 bytes each
    assert activation_bytes_per_token(small, 2, True) == 28 * 1536 * 2 + 2 * (13 * 1536 + 4 * 8960 + 3 * 256) * 2
    assert e.part("activations at the token budget") == 16384 * activation_bytes_per_token(small, 2, True)
    sharded = estimate_memory(cfg.model_copy(update={"memory": cfg.memory.model_copy(
        update={"processes": 8, "sharding": "optimizer"})}), big)
    assert sharded.part("AdamW state (2 moments, fp32)") == big.params * 8 / 8
    assert sharded.part("policy weights") == big.params * 4  # ZeRO-2 keeps every weight on every process
    # vLLM sleeps during the update (the default on a GPU): it counts only against the update's own parts
    assert [p.phase for p in sharded.parts if p.name.startswith("vLLM")] == ["generation"]
    assert sharded.total == sharded.phase("static") + max(sharded.phase("update"), sharded.phase("generation"))
    awake = estimate_memory(cfg.model_copy(update={"rollout": cfg.rollout.model_copy(update={
        "vllm": cfg.rollout.vllm.model_copy(update={"sleep_mode": False})})}), small)
    assert awake.total == awake.phase("static") + awake.phase("update") and awake.total > e.total


def test_lengths_beyond_the_context_are_refused_unless_it_is_extended() -> None:
    shape_dir = SHAPES / "qwen2.5-math-1.5b"
    cfg = TrainConfig(rollout={"max_new_tokens": 8192, "max_prompt_length": 1024})
    with pytest.raises(ConfigError, match=r"rollout.max_prompt_length \(1024\) \+ rollout.max_new_tokens \(8192\) = "
                                          r"9216 tokens exceed the 4096-position context of model"):
        check_context(cfg, "model", model_config(shape_dir))
    extended = model_config(shape_dir, {"rope_theta": 40000, "max_position_embeddings": 16384})
    check_context(cfg, "model", extended)
    yarn = model_config(shape_dir, {"rope_scaling": {"rope_type": "yarn", "factor": 4.0,
                                                     "original_max_position_embeddings": 4096}})
    assert context_of(yarn) == 16384


def test_dry_run_prints_the_estimate_of_a_config_only_model_and_refuses_what_cannot_fit(qwen: tuple[Path, Path],
                                                                                        tmp_path: Path) -> None:
    _, data = qwen
    recipe = RECIPES[0]  # AMPO, Qwen2.5-Math-1.5B on one 80 GB GPU
    sets = [f"model={SHAPES / 'qwen2.5-math-1.5b'}", f"dataset={data}", f"eval_datasets.math500={data}",
            f"output_dir={tmp_path / 'never'}"]
    args = ["train", str(recipe), "--dry-run", *[x for s in sets for x in ("--set", s)]]
    fits = CliRunner().invoke(app, args, env={"COLUMNS": "200"})
    assert fits.exit_code == 0, fits.output
    assert "peak per process" in fits.output and "of 79 GiB" in fits.output and "no piece built" in fits.output
    refused = CliRunner().invoke(app, [*args, "--gpu-memory", "30"], env={"COLUMNS": "200"})
    assert refused.exit_code == 2, refused.output
    first, *table = refused.output.strip().splitlines()  # vLLM's share, 0.4 of 30 GiB, is freed for the update
    assert first == ("error: memory: the run needs about 32.2 GiB per process, more than the 30 GiB it has; the "
                     "largest part is AdamW state (2 moments, fp32) (11.5 GiB): change memory.sharding, lora")
    assert "peak per process" in refused.output and "no piece built" not in refused.output
    assert not (tmp_path / "never").exists()
