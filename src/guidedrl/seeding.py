"""Every seed a run derives from its one ``seed``: one named stream per random choice, so that each is
reproducible on its own and a resumed run draws exactly what the uninterrupted run would have."""

from __future__ import annotations

import hashlib

# one multiplier per stream: seed·m + index keeps the streams of one run apart
STREAMS = {"data": 1_000_003, "rollout": 1_000_003, "hint": 1_000_033, "minibatch": 7919, "selection": 31,
           "replace": 17, "teacher_label": 1_000_037, "online_teacher": 1_000_039, "holdout": 1_000_081,
           "world_sft": 1_000_099, "world_model": 1_000_117, "world_pool": 1_000_121, "eval": 1_000_133,
           "choices": 1_000_151, "chunk": 1_000_159}


def derive_seed(seed: int, stream: str, *index: int) -> int:
    """The seed of draw ``index`` of ``stream`` (a step; a step and a prompt's position in the step's global
    batch; a problem), in torch's seed range. The same on every rank, whatever the batch around it."""
    if len(index) == 1:
        return (seed * STREAMS[stream] + index[0]) % (1 << 63)
    digest = hashlib.sha256(repr((seed, stream, index)).encode()).digest()
    return int.from_bytes(digest[:8], "big") % (1 << 63)


def text_index(text: str) -> int:
    """A stable integer for a text (a problem's prompt), the same in every process and Python version."""
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:7], "big")
