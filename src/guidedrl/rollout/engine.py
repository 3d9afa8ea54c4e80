"""The rollout batch every method consumes, the sampling settings, and the engine protocol.

A ``Rollouts`` is one padded batch: prompts left-padded (so generation appends at a common column),
responses right-padded, plus the per-token log-probs of the policy that sampled them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Protocol

import torch
from torch import Tensor
from torch.nn import Module
from transformers import PreTrainedTokenizerBase

if TYPE_CHECKING:
    from guidedrl.config import RolloutConfig


@dataclass(frozen=True)
class SamplingParams:
    """How to sample: ``temperature`` 0 means greedy; ``seed`` makes a call reproducible; ``seeds`` (one per
    prompt) make each prompt's samples depend on its own seed alone, not on the other prompts of the call;
    ``behaviour_logp`` False says the caller never reads the rows' behaviour log-probs, so an engine may leave
    them 0 (vLLM then builds no per-token log-prob dicts)."""

    temperature: float = 1.0
    top_p: float = 1.0
    max_new_tokens: int = 64
    seed: int | None = None
    seeds: tuple[int, ...] | None = None

    @classmethod
    def of(cls, rollout: RolloutConfig, seeds: tuple[int, ...] | None = None) -> SamplingParams:
        """How a run samples its rollouts (``rollout`` section), with ``seeds`` per prompt."""
        return cls(rollout.temperature, rollout.top_p, rollout.max_new_tokens, seeds=seeds)
    behaviour_logp: bool = True


@dataclass
class Rollouts:
    """A padded batch of prompt/response pairs with the behaviour policy's token log-probs."""

    prompt_ids: Tensor  # B×P long, left-padded with pad_id
    prompt_mask: Tensor  # B×P long, 1 on real prompt tokens
    response_ids: Tensor  # B×R long, right-padded with pad_id
    response_mask: Tensor  # B×R float, 1 on real response tokens (the EOS included)
    behaviour_logp: Tensor  # B×R float, log-prob of each token under the sampling policy, 0 on padding
    prompt_index: Tensor  # B long, which input prompt each row answers
    finished: Tensor  # B bool, the response ended with EOS

    @property
    def input_ids(self) -> Tensor:
        """Prompt then response, B×(P+R)."""
        return torch.cat([self.prompt_ids, self.response_ids], dim=1)

    @property
    def attention_mask(self) -> Tensor:
        """1 on every real prompt and response token, B×(P+R) long."""
        return torch.cat([self.prompt_mask.long(), self.response_mask.long()], dim=1)

    @property
    def prompt_width(self) -> int:
        return self.prompt_ids.shape[1]

    @property
    def response_lengths(self) -> Tensor:
        """Real response tokens per row (EOS counted), B long."""
        return self.response_mask.sum(1).long()

    @property
    def size(self) -> int:
        return self.prompt_ids.shape[0]

    def to(self, device: torch.device | str) -> Rollouts:
        """The same batch on ``device``."""
        return Rollouts(*(getattr(self, f).to(device) for f in ("prompt_ids", "prompt_mask", "response_ids",
                                                                 "response_mask", "behaviour_logp", "prompt_index",
                                                                 "finished")))

    def select(self, rows: Tensor | list[int]) -> Rollouts:
        """The given rows, in the given order, at the same widths."""
        idx = torch.as_tensor(rows, dtype=torch.long, device=self.prompt_ids.device)
        return Rollouts(self.prompt_ids[idx], self.prompt_mask[idx], self.response_ids[idx],
                        self.response_mask[idx], self.behaviour_logp[idx], self.prompt_index[idx],
                        self.finished[idx])

    def trimmed(self) -> Rollouts:
        """Without the prompt columns that are padding in every row (left) and response columns likewise (right)."""
        p_keep = int(self.prompt_mask.sum(1).max()) if self.prompt_mask.numel() else 0
        r_keep = int(self.response_mask.sum(1).max()) if self.response_mask.numel() else 0
        return replace(self, prompt_ids=self.prompt_ids[:, self.prompt_ids.shape[1] - p_keep:],
                       prompt_mask=self.prompt_mask[:, self.prompt_mask.shape[1] - p_keep:],
                       response_ids=self.response_ids[:, :r_keep], response_mask=self.response_mask[:, :r_keep],
                       behaviour_logp=self.behaviour_logp[:, :r_keep])

    @classmethod
    def concat(cls, parts: list[Rollouts], pad_id: int) -> Rollouts:
        """Rows of several batches in order; prompts re-padded on the left, responses on the right."""
        p_width = max(p.prompt_width for p in parts)
        r_width = max(p.response_ids.shape[1] for p in parts)

        def left(t: Tensor, width: int, value: float) -> Tensor:
            return torch.nn.functional.pad(t, (width - t.shape[1], 0), value=value)

        def right(t: Tensor, width: int, value: float) -> Tensor:
            return torch.nn.functional.pad(t, (0, width - t.shape[1]), value=value)

        return cls(
            torch.cat([left(p.prompt_ids, p_width, pad_id) for p in parts]),
            torch.cat([left(p.prompt_mask, p_width, 0) for p in parts]),
            torch.cat([right(p.response_ids, r_width, pad_id) for p in parts]),
            torch.cat([right(p.response_mask, r_width, 0.0) for p in parts]),
            torch.cat([right(p.behaviour_logp, r_width, 0.0) for p in parts]),
            torch.cat([p.prompt_index for p in parts]),
            torch.cat([p.finished for p in parts]),
        )

    @classmethod
    def from_token_lists(cls, prompts: Sequence[Sequence[int]], responses: Sequence[Sequence[int]], pad_id: int,
                         eos_id: int, behaviour_logp: Sequence[Sequence[float]] | None = None,
                         prompt_index: Sequence[int] | None = None) -> Rollouts:
        """Pad token lists into a batch (teacher solutions, re-prompted rows); log-probs default to 0."""
        b = len(prompts)
        p_width = max((len(p) for p in prompts), default=0)
        r_width = max((len(r) for r in responses), default=0)
        prompt_ids = torch.full((b, p_width), pad_id, dtype=torch.long)
        prompt_mask = torch.zeros((b, p_width), dtype=torch.long)
        response_ids = torch.full((b, r_width), pad_id, dtype=torch.long)
        response_mask = torch.zeros((b, r_width))
        logp = torch.zeros((b, r_width))
        for i, (p, r) in enumerate(zip(prompts, responses, strict=True)):
            if p:
                prompt_ids[i, p_width - len(p):] = torch.tensor(p, dtype=torch.long)
                prompt_mask[i, p_width - len(p):] = 1
            if r:
                response_ids[i, :len(r)] = torch.tensor(r, dtype=torch.long)
                response_mask[i, :len(r)] = 1.0
                if behaviour_logp is not None:
                    logp[i, :len(r)] = torch.tensor(behaviour_logp[i], dtype=torch.float)
        index = torch.arange(b) if prompt_index is None else torch.tensor(list(prompt_index), dtype=torch.long)
        finished = torch.tensor([bool(r) and r[-1] == eos_id for r in responses], dtype=torch.bool)
        return cls(prompt_ids, prompt_mask, response_ids, response_mask, logp, index, finished)

    def response_texts(self, tokenizer: PreTrainedTokenizerBase) -> list[str]:
        """Each response decoded without special tokens (padding and EOS dropped)."""
        rows = [ids[:n] for ids, n in zip(self.response_ids.tolist(), self.response_lengths.tolist())]
        return tokenizer.batch_decode(rows, skip_special_tokens=True)


def stop_token_ids(model: Module, tokenizer: PreTrainedTokenizerBase) -> list[int]:
    """Every token that ends a response: the tokenizer's EOS and each EOS of the model's generation config
    (a chat model lists its end-of-turn token there, e.g. ``<|im_end|>``)."""
    ids = [tokenizer.eos_token_id]
    config = getattr(model, "generation_config", None)
    extra = getattr(config, "eos_token_id", None)
    ids += extra if isinstance(extra, list) else [extra]
    return list(dict.fromkeys(i for i in ids if i is not None))


def with_pad_token(tokenizer: PreTrainedTokenizerBase) -> PreTrainedTokenizerBase:
    """The tokenizer, with its EOS as the pad token when it has none (as TRL does)."""
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


class RolloutEngine(Protocol):
    """Anything that samples ``Rollouts`` from a policy.

    ``HFEngine`` implements it with transformers and a KV cache; ``VLLMEngine`` copies the trained weights
    into its own in ``sync_weights``. Returned tensors are on the CPU (the batch lives on the host; each forward
    moves its inputs to its model's device). An engine holding accelerator memory of its own may also define
    ``release()`` (see :func:`release`).
    """

    def generate(self, prompts: list[list[int]], n: int, sampling: SamplingParams) -> Rollouts:
        """``n`` responses per prompt, rows of one prompt consecutive; ``prompt_index`` is its list position."""
        ...

    def sync_weights(self, model: Module) -> None:
        """Make the engine sample from ``model``'s current weights."""
        ...


def release(engine: RolloutEngine) -> None:
    """Let ``engine`` free the accelerator memory it holds of its own while the policy trains, where it defines
    ``release()`` (vLLM's sleep mode); the trainer calls it before the step's signals and update, and the
    ``sync_weights`` after them brings the engine back."""
    hook = getattr(engine, "release", None)
    if hook is not None:
        hook()
