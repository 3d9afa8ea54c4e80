"""Test doubles that are real parts: a rollout engine that answers from a script, and a tiny world of
untrained models, so a test can drive one real training step and compute every number by hand.

``ScriptedEngine`` implements the ``RolloutEngine`` protocol: each prompt (decoded to text) maps to the
completions it returns, in order; behaviour log-probs are the given model's own log-probs of those
tokens in the prompt that produced them (so the first update's ratio is 1), plus ``logp_offset``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from guidedrl.rollout.engine import Rollouts, SamplingParams
from guidedrl.rollout.forward import response_logprobs
from guidedrl.world.tokenizer import build_tokenizer
from guidedrl.world.zoo import make_model


class ScriptedEngine:
    """Returns ``script[prompt_text][:n]`` for each prompt, with the model's log-probs as behaviour log-probs."""

    def __init__(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, script: dict[str, Sequence[str]],
                 logp_offset: float = 0.0) -> None:
        self.model, self.tokenizer, self.script, self.logp_offset = model, tokenizer, dict(script), logp_offset
        self.calls: list[list[str]] = []  # prompt texts of every generate call, for assertions

    def sync_weights(self, model: PreTrainedModel) -> None:
        self.model = model

    def generate(self, prompts: list[list[int]], n: int, sampling: SamplingParams) -> Rollouts:
        tok = self.tokenizer
        texts = tok.batch_decode(prompts, skip_special_tokens=True)
        self.calls.append(texts)
        responses: list[list[int]] = []
        for text in texts:
            completions = list(self.script[text])
            if len(completions) < n:
                raise ValueError(f"script for {text!r} has {len(completions)} completions, {n} requested")
            responses += [tok(c, add_special_tokens=False)["input_ids"] + [tok.eos_token_id] for c in completions[:n]]
        owners = [i for i in range(len(prompts)) for _ in range(n)]
        rollouts = Rollouts.from_token_lists([prompts[i] for i in owners], responses, tok.pad_token_id,
                                             tok.eos_token_id, prompt_index=owners)
        logp = model_logprobs(self.model, rollouts) + self.logp_offset
        rollouts.behaviour_logp = logp * rollouts.response_mask
        return rollouts


def model_logprobs(model: PreTrainedModel, rollouts: Rollouts, temperature: float = 1.0) -> Tensor:
    """log π(response token | prompt, prefix) of every response position (B×R), one no-grad forward."""
    with torch.no_grad():
        out = response_logprobs(model, rollouts.input_ids, rollouts.attention_mask, rollouts.prompt_width, temperature)
    return out.logp * rollouts.response_mask


def row_logits(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, prompt: str, response: str) -> Tensor:
    """Logits (R×V) predicting each token of ``response`` + EOS after ``prompt`` (BOS added), one unpadded row."""
    p = tokenizer(prompt)["input_ids"]
    r = tokenizer(response, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    with torch.no_grad():
        logits = model(torch.tensor([p + r])).logits[0]
    return logits[len(p) - 1:len(p) - 1 + len(r)].float()


def response_ids(tokenizer: PreTrainedTokenizerBase, response: str) -> Tensor:
    """The response's token ids with the EOS the engine appends."""
    return torch.tensor(tokenizer(response, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id])


def build_tiny_world(root: Path, rows: list[dict], teacher_seed: int = 1) -> Path:
    """A world directory with the world's tokenizer, an untrained micro student and teacher, and ``rows``
    as its training data (and held-out sets); nothing is trained, so it takes a second."""
    tok = build_tokenizer()
    tok.save_pretrained(root / "tokenizer")
    for name, seed in (("student", 0), ("teacher", teacher_seed)):
        model = make_model(tok, "micro", seed)
        model.save_pretrained(root / "models" / name)
        tok.save_pretrained(root / "models" / name)
    (root / "data").mkdir(parents=True, exist_ok=True)
    for split in ("train", "test_id", "test_ood"):
        (root / "data" / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root
