"""LoRA through peft on the CPU: only adapters train, the KL reference is the policy with its adapters off
(no second copy), checkpoints hold the adapters and resume exactly, final/ is the merged model."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from rich.console import Console
from transformers import AutoModelForCausalLM

from guidedrl.config import TrainConfig
from guidedrl.rollout.forward import response_logprobs
from guidedrl.trainer.loop import Trainer
from guidedrl.yaml_config import load_config
from scripted import ScriptedEngine, build_tiny_world

pytest.importorskip("peft")
CONFIGS = Path(__file__).resolve().parents[1] / "configs"
ROWS = [{"prompt": f"{a}+{b}\n", "answer": str(a + b)} for a, b in [(1, 2), (3, 4), (5, 1), (2, 2)]]
SCRIPT = {r["prompt"]: [f"\\boxed{{{r['answer']}}}", "\\boxed{1}", "x", "\\boxed{0}"] for r in ROWS}


def _trainer(world: Path, out: Path, resume: bool = False) -> Trainer:
    cfg = load_config(CONFIGS / "grpo.yaml", TrainConfig, [
        f"world={world}", f"output_dir={out}", "steps=4", "save_every=2", "rollout.prompts_per_step=2",
        "rollout.group_size=4", "optim.lr=1e-2", "lora={r: 4, alpha: 8}", "algorithm.regularizers.kl.coef=0.5",
        "eval.samples=1", "eval.ks=[1]"])
    return Trainer(cfg, resume=resume, console=Console(quiet=True),
                   engine=lambda p, t, *_: ScriptedEngine(p, t, SCRIPT))


def test_lora_trains_adapters_only_against_the_adapter_free_reference(tmp_path: Path) -> None:
    world = build_tiny_world(tmp_path / "w", ROWS)
    trainer = _trainer(world, tmp_path / "run")
    trainable = {n for n, p in trainer.policy.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable) and trainer.signals.reference is None
    base = {n: p.detach().clone() for n, p in trainer.policy.named_parameters() if not p.requires_grad}
    trainer.train_step()
    trainer.train_step()
    assert all(torch.equal(p, base[n]) for n, p in trainer.policy.named_parameters() if not p.requires_grad)
    # the reference log-probs are those of the untouched base model, though the adapters moved
    batch = trainer.last_batch
    original = AutoModelForCausalLM.from_pretrained(world / "models" / "student").eval()
    r = batch.rollouts
    with torch.no_grad():
        base_logp = response_logprobs(original, r.input_ids, r.attention_mask, r.prompt_width).logp * r.response_mask
        now = response_logprobs(trainer.policy, r.input_ids, r.attention_mask, r.prompt_width).logp * r.response_mask
    torch.testing.assert_close(batch.ref_logp, base_logp, atol=1e-5, rtol=0)
    assert not torch.allclose(now, base_logp, atol=1e-3)
    trainer.run_dir.release()


def test_lora_resume_is_exact_and_final_is_the_merged_model(tmp_path: Path) -> None:
    world = build_tiny_world(tmp_path / "w", ROWS)
    whole = _trainer(world, tmp_path / "whole")
    for _ in range(4):
        whole.train_step()
    split = _trainer(world, tmp_path / "split")
    for _ in range(2):
        split.train_step()
    split.save()
    split.run_dir.release()
    resumed = _trainer(world, tmp_path / "split", resume=True)
    assert resumed.step == 2
    for _ in range(2):
        resumed.train_step()
    for a, b in zip(whole.policy.parameters(), resumed.policy.parameters()):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=0)
    whole.run_dir.release()
    summary = resumed.train()
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "split" / "final")
    assert not any("lora" in n for n, _ in merged.named_parameters()) and summary["after"]
    assert (tmp_path / "split" / "final_adapter" / "adapter_config.json").exists()
