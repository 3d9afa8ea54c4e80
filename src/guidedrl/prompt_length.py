"""Which prompts of a dataset fit in ``max_prompt_length`` tokens, found without tokenizing a prompt that
cannot fit (a 50 MB line would take minutes and tens of GB to tokenize only to be refused).

The cheap bound: if no token of a tokenizer stands for more than M characters of text, a text of c characters
needs at least c / M tokens, so a prompt of more than ``limit × M`` characters is too long untokenized. M is
the longest entry of the vocabulary: a byte-level BPE entry spells one character per byte (at least one
character of text), a SentencePiece, character-level or special-token entry spells its own characters, so the
bound holds for byte-level BPE (GPT-2, Llama 3, Qwen), SentencePiece with byte fallback (Llama 2, Mistral) and
character-level tokenizers. A conversation is counted by its messages' contents, which its rendered text holds.
A tokenizer that maps a run of unknown text to one token (WordPiece's ``[UNK]`` for a long word) breaks the
bound: a probe finds those, and then every prompt is tokenized.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from guidedrl.data import DatasetError, Prompt, encode_rows

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase


def max_token_chars(tokenizer: PreTrainedTokenizerBase) -> int | None:
    """M, the most characters of text one token stands for (the longest vocabulary entry); None when a probe
    of unknown characters is covered by fewer tokens than that allows (the bound would not hold)."""
    longest = max((len(entry) for entry in tokenizer.get_vocab()), default=0)
    if longest == 0:
        return None
    probe = "\u2603" * (4 * longest) + " " + "\u00e9\u4e00" * (2 * longest)
    tokens = len(tokenizer(probe, add_special_tokens=False)["input_ids"])
    return longest if tokens * longest >= len(probe) else None


def prompt_chars(prompt: Prompt) -> int:
    """Characters of a prompt's text (of a conversation: its messages' contents)."""
    return len(prompt) if isinstance(prompt, str) else sum(len(m["content"]) for m in prompt)


def fit_prompts(tokenizer: PreTrainedTokenizerBase, rows: list[dict], limit: int | None, long_prompts: str,
                source: str) -> tuple[list[dict], list[list[int]], int]:
    """The rows whose prompts fit in ``limit`` tokens and their token ids; a longer prompt is an error naming
    its row, or with ``long_prompts="drop"`` it is dropped. Returns the kept rows and ids and how many were
    dropped. Prompts over the cheap bound (see the module) are never tokenized."""
    per_token = max_token_chars(tokenizer) if limit is not None else None
    by_chars = set() if per_token is None else {i for i, row in enumerate(rows)
                                                if prompt_chars(row["prompt"]) > limit * per_token}
    rest = [i for i in range(len(rows)) if i not in by_chars]
    try:
        encoded = dict(zip(rest, encode_rows(tokenizer, [rows[i] for i in rest], source)))
    except DatasetError as err:  # its row is counted among the rows tokenized
        raise DatasetError(source, err.problem, row=rest[err.row], field=err.field) from None
    if limit is None:
        return rows, [encoded[i] for i in rest], 0
    too_long = sorted(by_chars | {i for i in rest if len(encoded[i]) > limit})
    if too_long and long_prompts == "error":
        i = too_long[0]
        chars = prompt_chars(rows[i]["prompt"])
        size = (f"{len(encoded[i])} tokens" if i in encoded else
                f"{chars} characters, so at least {math.ceil(chars / per_token)} tokens")
        raise DatasetError(source, f"{size}, more than max_prompt_length {limit} ({len(too_long)} such rows); "
                           "shorten them, raise rollout.max_prompt_length within the model's context, or set "
                           "rollout.long_prompts: drop", row=i, field="prompt")
    dropped = set(too_long)
    keep = [i for i in rest if i not in dropped]
    if not keep:
        raise DatasetError(source, f"every prompt is longer than max_prompt_length {limit}")
    return [rows[i] for i in keep], [encoded[i] for i in keep], len(too_long)
