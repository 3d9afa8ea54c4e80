"""A saved model ready to sample from: its tokenizer, the model in eval mode on a device, and an engine over it
(what ``guidedrl eval`` and the benches that re-evaluate a model load)."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from guidedrl.config import RolloutConfig
from guidedrl.precision import Precision
from guidedrl.registry import ENGINES
from guidedrl.rollout.engine import RolloutEngine, with_pad_token
from guidedrl.trainer.paths import load_pretrained


def load_for_sampling(model: Path, engine: str = "hf", device: torch.device | str = "cpu",
                      max_new_tokens: int = 128, what: str = "model"
                      ) -> tuple[PreTrainedTokenizerBase, PreTrainedModel, RolloutEngine]:
    """The tokenizer (with a pad token), the model on ``device`` and the registered ``engine`` sampling from it
    with the rollout defaults (the built-in engine decodes in chunks of rollout.kv_cache_tokens); ``what``
    names the folder in errors."""
    ENGINES.check(engine)
    tokenizer = with_pad_token(load_pretrained(AutoTokenizer, model, what))
    policy = load_pretrained(AutoModelForCausalLM, model, what).eval().to(device)
    rollout = RolloutConfig(engine=engine, max_new_tokens=max_new_tokens)
    return tokenizer, policy, ENGINES.get(engine)(policy, tokenizer, rollout, Precision(device=torch.device(device)))
