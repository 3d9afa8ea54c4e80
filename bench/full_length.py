"""Pieces the speed benches share: a random ~50M Llama, and engines that always generate the full length.

A random model samples the end-of-sequence token early and at random; a speed bench wants every row to do the
same, known amount of work, so these engines never stop before ``max_new_tokens`` (as TRL's generation does
with ``min_new_tokens``).
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedModel, PreTrainedTokenizerBase

from guidedrl.config import RolloutConfig
from guidedrl.precision import Precision
from guidedrl.rollout.engine import SamplingParams
from guidedrl.rollout.hf_engine import HFEngine
from guidedrl.rollout.vllm_engine import VLLMEngine
from guidedrl.trainer.loop import EngineFactory

FIFTY_M = {"hidden_size": 768, "num_hidden_layers": 8, "num_attention_heads": 12, "intermediate_size": 2048}


def random_llama(tokenizer: PreTrainedTokenizerBase, folder: Path) -> Path:
    """A ~50M-parameter Llama with random weights on the world's tokenizer, saved to ``folder``."""
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), max_position_embeddings=1024, pad_token_id=tokenizer.pad_token_id,
                         eos_token_id=tokenizer.eos_token_id, bos_token_id=tokenizer.bos_token_id,
                         tie_word_embeddings=True, **FIFTY_M)
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def never_stopping_hf(policy: PreTrainedModel, tokenizer: PreTrainedTokenizerBase,
                      precision: Precision | None = None, preallocated_cache: bool = True) -> HFEngine:
    """The built-in engine with a stop id no token has (``preallocated_cache`` off: transformers' growing cache)."""
    return HFEngine(policy, tokenizer.pad_token_id, [len(tokenizer) + 7], precision=precision or Precision(),
                    preallocated_cache=preallocated_cache)


class FullLengthVLLM(VLLMEngine):
    """vLLM told to ignore the end-of-sequence token."""

    def request_params(self, sampling: SamplingParams, n: int, i: int) -> object:
        return self.vllm.SamplingParams(n=n, temperature=sampling.temperature, max_tokens=sampling.max_new_tokens,
                                        logprobs=self.logprobs(sampling), ignore_eos=True,
                                        seed=self.request_seed(sampling, n, i))


def full_length_engine(name: str) -> EngineFactory:
    """The Trainer's engine factory (its ``engine=``) for ``hf`` or ``vllm``, never stopping early."""
    def build(policy: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, cfg: RolloutConfig,
              precision: Precision) -> HFEngine | VLLMEngine:
        if name == "vllm":
            return FullLengthVLLM.from_policy(policy, tokenizer, cfg, precision)
        return never_stopping_hf(policy, tokenizer, precision=precision)
    return build
