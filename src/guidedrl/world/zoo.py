"""The tiny model zoo: model sizes, and supervised fine-tuning of a causal LM on prompt/solution pairs.

Models are ordinary ``transformers`` Llama models built from a config, so they are saved and
loaded through ``save_pretrained``/``from_pretrained`` exactly like a user's model.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence

import torch
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerBase, get_scheduler

MODEL_SIZES: dict[str, dict[str, int]] = {
    "micro": {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 128},
    "tiny": {"hidden_size": 128, "num_hidden_layers": 4, "num_attention_heads": 4, "intermediate_size": 256},
}


def make_model(tokenizer: PreTrainedTokenizerBase, size: str, seed: int, max_positions: int = 256) -> LlamaForCausalLM:
    """A freshly initialised Llama of one of the zoo sizes, sharing the tokenizer's vocabulary."""
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer), max_position_embeddings=max_positions, tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, **MODEL_SIZES[size],
    )
    return LlamaForCausalLM(config)


def encode_pairs(tokenizer: PreTrainedTokenizerBase, prompts: Sequence[str], solutions: Sequence[str]
                 ) -> list[tuple[list[int], list[int]]]:
    """Token ids of each (prompt with BOS, solution with EOS) pair."""
    p_ids = tokenizer(list(prompts))["input_ids"]
    s_ids = tokenizer(list(solutions), add_special_tokens=False)["input_ids"]
    return [(p, s + [tokenizer.eos_token_id]) for p, s in zip(p_ids, s_ids)]


def collate_sft(pairs: Sequence[tuple[list[int], list[int]]], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded batch whose labels are -100 on prompt and padding, so only solutions are learned."""
    width = max(len(p) + len(s) for p, s in pairs)
    ids = torch.full((len(pairs), width), pad_id)
    labels = torch.full((len(pairs), width), -100)
    mask = torch.zeros((len(pairs), width), dtype=torch.long)
    for i, (p, s) in enumerate(pairs):
        n = len(p) + len(s)
        ids[i, :n] = torch.tensor(p + s)
        labels[i, len(p):n] = torch.tensor(s)
        mask[i, :n] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def sft(model: LlamaForCausalLM, pairs: Sequence[tuple[list[int], list[int]]], pad_id: int, steps: int,
        batch_size: int = 64, lr: float = 3e-3, seed: int = 0, warmup: int = 20,
        on_step: Callable[[int, float], None] | None = None) -> None:
    """Train with AdamW and a warm-up + cosine schedule on shuffled (prompt, solution) pairs."""
    rng = random.Random(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01, betas=(0.9, 0.98))
    sched = get_scheduler("cosine", opt, num_warmup_steps=warmup, num_training_steps=steps)
    order: list[int] = []
    model.train()
    for step in range(steps):
        if len(order) < batch_size:
            order += rng.sample(range(len(pairs)), len(pairs))
        batch = collate_sft([pairs[i] for i in order[:batch_size]], pad_id)
        del order[:batch_size]
        loss = model(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        if on_step is not None:
            on_step(step, loss.item())
    model.eval()
