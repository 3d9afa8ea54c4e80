"""A user's own model, data and reward, the way a TRL user brings them: GPT-2- and Qwen2-style models with a
byte-level BPE tokenizer and a chat template (built here, random weights), chat-message JSONL data, TRL's own
reward functions, dropout, bf16, stop tokens, a missing pad token, and evaluation defaults."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from rich.console import Console

from guidedrl.config import TrainConfig
from guidedrl.data import as_messages, chat_frame, encode_prompts, with_hint
from guidedrl.guidance.selection import answer_slot_tokens
from guidedrl.rollout.engine import SamplingParams, stop_token_ids
from guidedrl.rollout.hf_engine import HFEngine
from guidedrl.rows import RowKind
from guidedrl.trainer.loop import Trainer
from guidedrl.yaml_config import ConfigError, load_config
from scripted import ScriptedEngine
from tiny_chat_model import build, chat_rows

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
ROWS = chat_rows()


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("user_models")
    out = {arch: build(root, arch) for arch in ("gpt2", "qwen2")}
    return {**out, "data": root / "train.jsonl"}


def _config(models_dir: dict[str, Path], arch: str, out: Path, *overrides: str,
            config: str = "grpo.yaml") -> TrainConfig:
    return load_config(CONFIGS / config, TrainConfig, [
        f"model={models_dir[arch]}", f"dataset={models_dir['data']}", f"output_dir={out}", "steps=2", "save_every=0",
        "rollout.prompts_per_step=2", "rollout.group_size=4", "rollout.max_new_tokens=12", "optim.micro_batch_size=4",
        "eval.samples=2", "eval.ks=[1,2]", *overrides])


def _half_right_script(model_dir: Path) -> dict[str, list[str]]:
    """Right, wrong, right, no answer, for every prompt a step may sample (keyed as the engine sees it)."""
    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained(model_dir)
    script = {}
    for row in ROWS:
        key = tok.decode(encode_prompts(tok, [row["prompt"]])[0], skip_special_tokens=True)
        script[key] = [f"\\boxed{{{row['answer']}}}", "\\boxed{0}", f"so \\boxed{{{row['answer']}}}", "none"]
    return script


@pytest.mark.parametrize("arch", ["gpt2", "qwen2"])
def test_trl_reward_functions_plug_in_by_import_path(arch: str, models_dir: dict, tmp_path: Path) -> None:
    """TRL's accuracy_reward reads completions as message lists and the `solution` column, by keyword."""
    script = _half_right_script(models_dir[arch])
    cfg = _config(models_dir, arch, tmp_path / "run", "rewards=[{name: 'trl.rewards:accuracy_reward'}]")
    trainer = Trainer(cfg, console=Console(quiet=True), engine=lambda p, t, *_: ScriptedEngine(p, t, script))
    m = trainer.train_step()
    assert trainer.last_batch.rewards.tolist() == [1.0, 0.0, 1.0, 0.0] * 2
    assert m["rewards/trl.rewards:accuracy_reward"] == 0.5
    trainer.run_dir.release()


@pytest.mark.parametrize("arch", ["gpt2", "qwen2"])
def test_every_method_runs_on_a_chat_model(arch: str, models_dir: dict, tmp_path: Path) -> None:
    for config in ("grpo.yaml", "guide_grpo.yaml", "ppo.yaml"):
        trainer = Trainer(_config(models_dir, arch, tmp_path / config, config=config), console=Console(quiet=True))
        m = trainer.train_step()  # Guide's preset filters flat groups: a step of all-wrong groups makes no update
        assert math.isfinite(m.get("loss", 0.0)) and math.isfinite(m.get("grad_norm", 0.0))
        trainer.run_dir.release()


def test_dropout_is_off_during_updates_so_the_first_ratio_is_one(models_dir: dict, tmp_path: Path) -> None:
    """GPT-2 has dropout 0.1: with it on, the first (supposedly on-policy) update sees ratios away from 1."""
    ratios = {}
    for disable in (True, False):
        cfg = _config(models_dir, "gpt2", tmp_path / f"run{disable}", f"disable_dropout={disable}",
                      "rollout.max_new_tokens=24")
        trainer = Trainer(cfg, console=Console(quiet=True))
        assert all(m.p == (0.0 if disable else 0.1)
                   for m in trainer.policy.modules() if isinstance(m, torch.nn.Dropout))
        ratios[disable] = trainer.train_step()["ratio_mean"]
        trainer.run_dir.release()
    assert ratios[True] == pytest.approx(1.0, abs=1e-5)
    assert abs(ratios[False] - 1.0) > 1e-3


def test_bf16_keeps_fp32_master_weights_and_recomputes_behaviour_logprobs(models_dir: dict, tmp_path: Path) -> None:
    changed, first_ratio = {}, {}
    for precision, recompute in (("fp32", None), ("bf16", None), ("bf16-pure", None), ("bf16", False)):
        cfg = _config(models_dir, "qwen2", tmp_path / f"{precision}{recompute}", f"precision={precision}", "steps=3",
                      "optim.lr=1e-3", f"rollout.recompute_behaviour_logp={'null' if recompute is None else recompute}")
        script = _half_right_script(models_dir["qwen2"])  # rewards that differ within each group: a real gradient
        trainer = Trainer(cfg, console=Console(quiet=True), engine=lambda p, t, *_: ScriptedEngine(p, t, script))
        dtypes = {p.dtype for p in trainer.policy.parameters()}
        assert dtypes == {torch.bfloat16 if precision == "bf16-pure" else torch.float32}
        auto = precision != "fp32" if recompute is None else recompute
        assert trainer.update.recompute_behaviour == auto  # the scripted engine counts as hf
        before = [p.detach().clone() for p in trainer.policy.parameters()]
        metrics = [trainer.train_step() for _ in range(3)]
        first_ratio[precision, recompute] = metrics[0]["ratio_mean"]
        moved = [float((a != p).float().mean()) for a, p in zip(before, trainer.policy.parameters())]
        changed[precision, recompute] = sum(moved) / len(moved)
        trainer.run_dir.release()
    # fp32 master weights take every small update; pure bf16 weights round many of them away
    assert changed["bf16", None] > 0.9 and changed["bf16", None] > changed["bf16-pure", None]
    assert first_ratio["fp32", None] == pytest.approx(1.0, abs=1e-6)  # fp32 sampler = fp32 training forward


def test_recomputed_behaviour_logprobs_are_the_bf16_training_forwards(models_dir: dict, tmp_path: Path) -> None:
    """Under bf16 the sampler's log-probs are not the training forward's; the recompute replaces the student's
    own rows' with a no-grad forward in the training precision, and leaves teacher rows at 0."""
    from guidedrl.batch import RolloutBatch
    cfg = _config(models_dir, "qwen2", tmp_path / "run", "precision=bf16")
    script = _half_right_script(models_dir["qwen2"])
    trainer = Trainer(cfg, console=Console(quiet=True), engine=lambda p, t, *_: ScriptedEngine(p, t, script))
    prompts = [trainer.prompt_ids[0], trainer.prompt_ids[1]]
    rollouts = trainer.engine.generate(prompts, 2, SamplingParams(max_new_tokens=12))  # fp32 behaviour log-probs
    batch = RolloutBatch.on_policy(rollouts, torch.zeros(4), torch.zeros(4, dtype=torch.bool))
    batch.kind[3] = RowKind.TEACHER
    batch.rollouts.behaviour_logp[3] = 0.0
    recomputed = trainer.update.recomputed_behaviour(batch)[0].rollouts.behaviour_logp
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        from guidedrl.rollout.forward import response_logprobs
        r = batch.rollouts
        direct = response_logprobs(trainer.policy, r.input_ids, r.attention_mask, r.prompt_width).logp.float()
    mask = r.response_mask.bool()
    own = mask.clone()
    own[3] = False
    torch.testing.assert_close(recomputed[own], direct[own], atol=2e-2, rtol=0)  # bf16 padding differs a little
    assert not torch.equal(recomputed[own], rollouts.behaviour_logp[own]) and recomputed[3].abs().sum() == 0
    trainer.run_dir.release()


def test_a_missing_pad_token_falls_back_to_eos_and_every_stop_token_ends_a_row(models_dir: dict) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from guidedrl.rollout.engine import with_pad_token
    tok = AutoTokenizer.from_pretrained(models_dir["gpt2"])
    assert tok.pad_token_id is None and with_pad_token(tok).pad_token_id == tok.eos_token_id
    model = AutoModelForCausalLM.from_pretrained(models_dir["gpt2"]).eval()
    im_end = tok.convert_tokens_to_ids("<|im_end|>")
    assert stop_token_ids(model, tok) == [tok.eos_token_id, im_end]
    handle = model.lm_head.register_forward_hook(lambda m, i, out: out.index_add_(
        -1, torch.tensor([im_end]), torch.full_like(out[..., :1], 1e4)))
    try:
        r = HFEngine(model, tok.pad_token_id, stop_token_ids(model, tok)).generate(
            encode_prompts(tok, [ROWS[0]["prompt"]]), 2, SamplingParams(max_new_tokens=10, seed=0))
    finally:
        handle.remove()
    assert r.response_ids.tolist() == [[im_end]] * 2 and r.finished.all()  # stopped at the chat end-of-turn


def test_without_eval_datasets_a_users_run_never_evaluates_on_the_world(models_dir: dict, tmp_path: Path) -> None:
    cfg = _config(models_dir, "qwen2", tmp_path / "run", "world=worlds/default")
    trainer = Trainer(cfg, console=Console(quiet=True))
    assert trainer.eval_sets == {} and trainer.evaluate() == {}
    trainer.run_dir.release()
    cfg = _config(models_dir, "qwen2", tmp_path / "held", "eval.holdout=0.25")
    trainer = Trainer(cfg, console=Console(quiet=True))
    held = trainer.eval_sets["holdout"]
    assert len(held) == 6 and len(trainer.rows) == 18
    assert not {json.dumps(r["prompt"]) for r in held} & {json.dumps(r["prompt"]) for r in trainer.rows}
    assert set(trainer.evaluate()) >= {"eval/holdout/pass@1", "eval/holdout/greedy"}
    trainer.run_dir.release()


def test_hints_go_into_the_users_turn_for_messages_and_pre_rendered_prompts(models_dir: dict) -> None:
    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained(models_dir["qwen2"])
    messages = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "What is 2+3?"}]
    hinted = with_hint(messages, "add them", "{prompt}\nHint: {hint}")
    assert hinted[1]["content"] == "What is 2+3?\nHint: add them" and messages[1]["content"] == "What is 2+3?"
    rendered = tok.apply_chat_template(messages[1:], add_generation_prompt=True, tokenize=False)
    frame = chat_frame(tok)
    assert frame == ("<|im_start|>user\n", "<|im_end|>\n<|im_start|>assistant\n")
    assert with_hint(rendered, "add them", "{prompt}\nHint: {hint}", frame) == tok.apply_chat_template(
        [{"role": "user", "content": "What is 2+3?\nHint: add them"}], add_generation_prompt=True, tokenize=False)
    # an online teacher with another template gets the user's words back as messages
    assert as_messages(rendered, tok) == [{"role": "user", "content": "What is 2+3?"}]
    assert as_messages("plain text", tok) == "plain text"


def test_the_comprehension_score_reads_exactly_the_answer_tokens(models_dir: dict) -> None:
    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained(models_dir["qwen2"])
    text = "2+3=5\nso \\boxed{4}"
    assert len(tok("\\boxed{5}", add_special_tokens=False)["input_ids"]) < len("\\boxed{5}")  # BPE merges here
    ids, positions = answer_slot_tokens(tok, text, "5")
    assert tok.decode([ids[p] for p in positions]) == "5" and tok.decode(ids) == "2+3=5\nso \\boxed{5}"


def test_a_cuda_device_without_cuda_is_a_config_error(models_dir: dict, tmp_path: Path) -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(ConfigError, match=r"device: device 'cuda' asked for, but torch sees no CUDA device"):
        Trainer(_config(models_dir, "qwen2", tmp_path / "run", "device=cuda"), console=Console(quiet=True))


def test_wandb_offline_receives_the_run(models_dir: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    cfg = _config(models_dir, "qwen2", tmp_path / "run", "report_to=[wandb]", "eval.holdout=0.25", "steps=1")
    trainer = Trainer(cfg, console=Console(quiet=True))
    trainer.train()
    runs = list((tmp_path / "run" / "wandb").glob(f"offline-run-*-{trainer.run_dir.run_id}"))
    assert len(runs) == 1 and any(runs[0].glob("*.wandb"))
    assert not (tmp_path / "run" / "tensorboard").exists()
