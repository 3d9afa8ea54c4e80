"""A character-level tokenizer for the embedded world, as a real ``PreTrainedTokenizerFast``.

Built with the ``tokenizers`` library and saved/loaded with ``save_pretrained``/``from_pretrained``,
so the code that handles it is the code that handles a user's Qwen or Llama tokenizer.
"""

from __future__ import annotations

import string

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast

PAD, BOS, EOS, UNK = "<pad>", "<s>", "</s>", "<unk>"
SPECIALS = [PAD, BOS, EOS, UNK]
ALPHABET = string.digits + string.ascii_lowercase + "+-*/=()[]{}\\^_.,:;?! \n"


def build_tokenizer() -> PreTrainedTokenizerFast:
    """One token per character of the world's alphabet; a BOS is prepended to every encoding."""
    vocab = {tok: i for i, tok in enumerate(SPECIALS + list(ALPHABET))}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    core.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    core.decoder = decoders.Fuse()
    core.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A $B", special_tokens=[(BOS, vocab[BOS])]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=core, bos_token=BOS, eos_token=EOS, pad_token=PAD, unk_token=UNK,
        padding_side="left", clean_up_tokenization_spaces=False,
    )
