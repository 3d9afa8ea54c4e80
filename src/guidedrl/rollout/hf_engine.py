"""``HFEngine``: batched sampling from a transformers causal LM with a KV cache.

A hand-written decode loop rather than ``model.generate``: for the small models this library trains,
per-token framework overhead dominates, so the loop does only a forward, a sample and a few writes
into preallocated tensors per step, the KV cache included (:mod:`guidedrl.rollout.kv_cache`). It also
prefills each distinct prompt once (the ``n`` samples of a prompt share its KV cache) and drops finished rows
from the batch as they accumulate.

``behaviour_logp`` is ``log_softmax(logits / temperature)`` of the sampled token *before* top-p
truncation, i.e. exactly what ``response_logprobs`` recomputes at the same temperature, so the
importance ratio of an unchanged policy is 1 (greedy decoding reports temperature-1 log-probs).
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

import torch
from torch import Tensor
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from guidedrl.errors import RunError
from guidedrl.precision import Precision
from guidedrl.registry import ENGINES
from guidedrl.rollout.budget import budget_cuts
from guidedrl.rollout.engine import Rollouts, SamplingParams, stop_token_ids
from guidedrl.rollout.forward import position_ids_from_mask
from guidedrl.rollout.kv_cache import decode_cache
from guidedrl.seeding import derive_seed

if TYPE_CHECKING:
    from guidedrl.config import RolloutConfig


class HFEngine:
    """The transformers rollout backend; it samples from the policy module itself, so weights are always current.

    A row stops at any of ``eos_ids`` (the tokenizer's EOS and the generation config's, e.g. a chat model's
    end-of-turn token); ``precision`` gives the forwards their autocast.
    """

    def __init__(self, model: PreTrainedModel, pad_id: int, eos_ids: int | list[int], check_every: int = 4,
                 compact_below: float = 0.75, precision: Precision | None = None,
                 max_tokens: int | None = None, preallocated_cache: bool = True) -> None:
        self.model = model
        self.pad_id = pad_id
        self.eos_ids = [eos_ids] if isinstance(eos_ids, int) else list(eos_ids)
        self.eos_id = self.eos_ids[0]
        self.precision = precision or Precision()
        self.check_every = check_every  # steps between looks at how many rows are still running (each syncs)
        self.compact_below = compact_below  # drop finished rows once the running share falls below this
        self.max_tokens = max_tokens  # rows × (prompt + max_new_tokens) decoded at once: the KV cache's bound
        self.preallocated_cache = preallocated_cache  # False: transformers' growing cache (the bench compares)

    def sync_weights(self, model: PreTrainedModel) -> None:
        """Nothing to copy: the engine holds the policy module; a new module simply replaces it."""
        self.model = model

    def generate(self, prompts: list[list[int]], n: int, sampling: SamplingParams) -> Rollouts:
        """``n`` samples per prompt (consecutive rows), stopping each row at EOS or ``max_new_tokens``; prompts
        are decoded in consecutive chunks whose rows × (prompt + max_new_tokens) fit ``max_tokens`` (with
        per-prompt seeds a prompt's samples do not depend on the chunking)."""
        if sampling.seeds is not None and len(sampling.seeds) != len(prompts):
            raise ValueError(f"{len(sampling.seeds)} seeds for {len(prompts)} prompts")
        budget = None if self.max_tokens is None else max(self.max_tokens // max(n, 1), 1)
        cuts = budget_cuts([len(p) for p in prompts], [sampling.max_new_tokens] * len(prompts), budget,
                           max(len(prompts), 1))
        if len(cuts) <= 1:
            return self._generate(prompts, n, sampling)
        parts = []
        for k, cut in enumerate(cuts):
            part_sampling = replace(sampling, seeds=None if sampling.seeds is None else
                                    tuple(sampling.seeds[i] for i in cut),
                                    seed=None if sampling.seed is None else derive_seed(sampling.seed, "chunk", k))
            part = self._generate([prompts[i] for i in cut], n, part_sampling)
            part.prompt_index = part.prompt_index + cut[0]
            parts.append(part)
        return Rollouts.concat(parts, self.pad_id)

    def _generate(self, prompts: list[list[int]], n: int, sampling: SamplingParams) -> Rollouts:
        """One chunk of :meth:`generate`, decoded together."""
        device = next(self.model.parameters()).device
        unique = Rollouts.from_token_lists(prompts, [[] for _ in prompts], self.pad_id, self.eos_id)
        prompt_ids = unique.prompt_ids.to(device)
        prompt_mask = unique.prompt_mask.to(device)
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.inference_mode(), self.precision.autocast():
                ids, mask, logp = self._decode(prompt_ids, prompt_mask, n, sampling)
        finally:
            self.model.train(was_training)
        finished = torch.isin(ids, torch.tensor(self.eos_ids, device=device)).any(1)
        return Rollouts(prompt_ids.repeat_interleave(n, 0), prompt_mask.repeat_interleave(n, 0), ids, mask, logp,
                        torch.arange(len(prompts), device=device).repeat_interleave(n), finished).to("cpu")

    def _decode(self, prompt_ids: Tensor, prompt_mask: Tensor, n: int, sampling: SamplingParams
                ) -> tuple[Tensor, Tensor, Tensor]:
        """Response ids, mask and behaviour log-probs (B×R, R trimmed to the longest response) for U×n rows."""
        u, p = prompt_ids.shape
        b, steps, device = u * n, sampling.max_new_tokens, prompt_ids.device
        out_ids = torch.full((b, steps), self.pad_id, dtype=torch.long, device=device)
        out_logp = torch.zeros((b, steps), device=device)
        out_mask = torch.zeros((b, steps), device=device)
        if b == 0 or steps == 0:
            return out_ids[:, :0], out_mask[:, :0], out_logp[:, :0]
        noise = (PromptNoise(sampling.seeds, n, device) if sampling.seeds is not None and sampling.temperature > 0
                 else None)
        gen = None if sampling.seed is None else torch.Generator(device=device).manual_seed(sampling.seed)
        positions = position_ids_from_mask(prompt_mask)
        cache = decode_cache(self.model.config, p + steps, self.preallocated_cache)
        logits = self.model(input_ids=prompt_ids, attention_mask=prompt_mask, position_ids=positions,
                            past_key_values=cache, use_cache=True, logits_to_keep=1).logits[:, -1]
        logits = logits.repeat_interleave(n, 0)
        cache.batch_repeat_interleave(n)
        attention = torch.ones((b, p + steps), dtype=torch.long, device=device)
        attention[:, :p] = prompt_mask.repeat_interleave(n, 0)
        next_pos = (positions[:, -1:] + 1).repeat_interleave(n, 0)
        rows = torch.arange(b, device=device)  # output row of each row still in the batch
        alive = torch.ones(b, dtype=torch.bool, device=device)
        stops = torch.tensor(self.eos_ids, device=device)
        for t in range(steps):
            gumbel = None if noise is None else noise.draw(rows, alive, logits.shape[-1])
            tok, tok_logp = _sample(logits, sampling, gen, gumbel)
            tok.masked_fill_(~alive, self.pad_id)
            out_ids[rows, t] = tok
            out_logp[rows, t] = tok_logp.masked_fill_(~alive, 0.0)
            out_mask[rows, t] = alive.float()
            alive &= ~torch.isin(tok, stops)
            if t + 1 == steps:
                break
            if (t + 1) % self.check_every == 0:
                running = int(alive.sum())
                if running == 0:
                    break
                if running < self.compact_below * len(alive):
                    keep = alive.nonzero().squeeze(1)
                    cache.batch_select_indices(keep)
                    rows, alive, tok = rows[keep], alive[keep], tok[keep]
                    attention, next_pos = attention[keep], next_pos[keep]
            logits = self.model(input_ids=tok[:, None], attention_mask=attention[:, :p + t + 1],
                                position_ids=next_pos + t, past_key_values=cache, use_cache=True).logits[:, -1]
        width = int(out_mask.sum(1).max())
        return out_ids[:, :width], out_mask[:, :width], out_logp[:, :width]


class PromptNoise:
    """Gumbel noise for each row from its prompt's own generator, drawn for the prompt's live rows only, so a
    prompt's samples are the same whatever else the batch holds (other prompts, another rank's share)."""

    def __init__(self, seeds: tuple[int, ...], n: int, device: torch.device) -> None:
        self.gens = [torch.Generator(device=device).manual_seed(s) for s in seeds]
        self.owner = torch.arange(len(seeds), device=device).repeat_interleave(n)  # prompt of each output row
        self.device = device

    def draw(self, rows: Tensor, alive: Tensor, vocab: int) -> Tensor:
        """Gumbel(0, 1) noise (len(rows)×V) for the rows still in the batch; zero for finished ones."""
        out = torch.zeros((len(rows), vocab), device=self.device)
        owners = self.owner[rows]
        for p in torch.unique(owners[alive]).tolist():
            where = ((owners == p) & alive).nonzero().squeeze(1)
            u = torch.rand((len(where), vocab), generator=self.gens[p], device=self.device)
            exponential = -torch.log(u.clamp_min(1e-20))  # Exp(1) > 0
            out[where] = -torch.log(exponential.clamp_min(1e-20))
        return out


def _sample(logits: Tensor, sampling: SamplingParams, gen: torch.Generator | None,
            gumbel: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Next tokens (greedy, or nucleus sampling at the temperature; by Gumbel-max over per-prompt noise when
    it is given) and their untruncated log-probs."""
    logits = logits.float()
    if sampling.temperature == 0:
        tok = logits.argmax(-1)
        return tok, torch.log_softmax(logits, dim=-1).gather(-1, tok[:, None]).squeeze(1)
    logp = torch.log_softmax(logits / sampling.temperature, dim=-1)
    if gumbel is not None:
        if not torch.isfinite(logp).all():
            raise RunError("the policy's next-token distribution is not finite (NaN or inf logits): its weights "
                           "diverged; lower optim.lr and --resume from an earlier checkpoint")
        scores = logp
        if sampling.top_p < 1.0:  # keep the nucleus: tokens whose higher-probability mass is below top_p
            sorted_p, order = logp.exp().sort(-1, descending=True)
            outside = (sorted_p.cumsum(-1) - sorted_p) > sampling.top_p
            scores = logp.masked_fill(torch.zeros_like(outside).scatter(-1, order, outside), float("-inf"))
        tok = (scores + gumbel).argmax(-1)
        return tok, logp.gather(-1, tok[:, None]).squeeze(1)
    probs = logp.exp()
    try:
        if sampling.top_p < 1.0:
            sorted_p, order = probs.sort(-1, descending=True)
            sorted_p.masked_fill_(sorted_p.cumsum(-1) - sorted_p > sampling.top_p, 0.0)
            tok = order.gather(-1, torch.multinomial(sorted_p, 1, generator=gen)).squeeze(1)
        else:
            tok = torch.multinomial(probs, 1, generator=gen).squeeze(1)
    except RuntimeError as err:
        if torch.isfinite(probs).all():
            raise
        raise RunError("the policy's next-token distribution is not finite (NaN or inf logits): its weights "
                       "diverged; lower optim.lr and --resume from an earlier checkpoint") from err
    return tok, logp.gather(-1, tok[:, None]).squeeze(1)


@ENGINES.register("hf")
def hf_engine(policy: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, cfg: RolloutConfig,
              precision: Precision) -> HFEngine:
    """The built-in engine: samples from the policy module itself."""
    return HFEngine(policy, tokenizer.pad_token_id, stop_token_ids(policy, tokenizer), precision=precision,
                    max_tokens=cfg.kv_cache_tokens)
