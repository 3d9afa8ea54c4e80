"""Build a small "user's own" setup to try guidedrl the way you would with a Qwen or GPT-2 checkpoint:
a byte-level BPE tokenizer with a ChatML chat template, a Qwen2- or GPT-2-architecture model with random
weights saved with ``save_pretrained``, and chat-message JSONL data with ``answer`` and ``solution`` columns.

    python examples/tiny_chat_model.py --out runs/own        # then: guidedrl train examples/own_model.yaml
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
          "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


def bpe_tokenizer(eos: str, pad: str | None) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer trained on arithmetic chat text, with a ChatML template."""
    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    corpus = [f"What is {a}+{b}? {a}+{b}={a + b} so \\boxed{{{a + b}}} add {a} and {b}" for a in range(10)
              for b in range(10)]
    core.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=300, special_tokens=SPECIALS,
                                                         initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok = PreTrainedTokenizerFast(tokenizer_object=core, eos_token=eos, pad_token=pad,
                                  clean_up_tokenization_spaces=False)
    tok.chat_template = CHATML
    return tok


def chat_rows(n: int = 24) -> list[dict]:
    """Chat-message prompts with the answer (for guidedrl's reward) and the solution (for TRL's)."""
    pairs = [(a, b) for a in range(1, 10) for b in range(1, 10)][:n]
    return [{"prompt": [{"role": "user", "content": f"What is {a}+{b}?"}], "answer": str(a + b),
             "solution": str(a + b), "hint": f"add {a} and {b}"} for a, b in pairs]


def build(out: Path, arch: str = "qwen2", seed: int = 0) -> Path:
    """A model folder at ``out/<arch>`` (random weights) and ``out/train.jsonl``; returns the model folder."""
    torch.manual_seed(seed)
    if arch == "gpt2":  # dropout 0.1 everywhere, learned positions, no pad token, EOS <|endoftext|>
        tok = bpe_tokenizer("<|endoftext|>", None)
        model = GPT2LMHeadModel(GPT2Config(vocab_size=len(tok), n_positions=128, n_embd=64, n_layer=2, n_head=2,
                                           resid_pdrop=0.1, embd_pdrop=0.1, attn_pdrop=0.1,
                                           eos_token_id=tok.eos_token_id, bos_token_id=tok.eos_token_id))
        model.generation_config.eos_token_id = [tok.eos_token_id, tok.convert_tokens_to_ids("<|im_end|>")]
    else:  # EOS <|im_end|>, pad <|endoftext|>, the generation config stopping at both
        tok = bpe_tokenizer("<|im_end|>", "<|endoftext|>")
        model = Qwen2ForCausalLM(Qwen2Config(
            vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=128, eos_token_id=tok.eos_token_id,
            pad_token_id=tok.pad_token_id))
        model.generation_config.eos_token_id = [tok.eos_token_id, tok.pad_token_id]
    for part in (model, tok):
        part.save_pretrained(out / arch)
    (out / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in chat_rows()))
    return out / arch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/own"))
    parser.add_argument("--arch", choices=["qwen2", "gpt2"], default="qwen2")
    args = parser.parse_args()
    print(f"model: {build(args.out, args.arch)}\ndata: {args.out / 'train.jsonl'}")


if __name__ == "__main__":
    main()
