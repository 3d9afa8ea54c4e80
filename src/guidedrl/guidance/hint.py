"""Guide's guidance: re-roll failed prompts with a hint in the sampling context, train without it.

The hinted responses keep the behaviour log-probs of the context that generated them (prompt + hint),
while their training input is the hint-free prompt + the same response tokens. The ratio
π_θ(o|q) / π_old(o|q,h) then falls out of the ordinary log-prob difference; the rows are flagged
``hinted`` so the mixed loss can shape that ratio as the Guide authors do.
"""

from __future__ import annotations

from dataclasses import replace

import torch

from guidedrl.batch import RolloutBatch
from guidedrl.config import GuidanceConfig
from guidedrl.data import as_messages, chat_frame, encode_prompts, with_hint
from guidedrl.guidance.base import GuidanceContext, prompt_tokens, rewards_of
from guidedrl.guidance.trigger import guidance_demand
from guidedrl.registry import GUIDANCE
from guidedrl.rollout.engine import Rollouts
from guidedrl.rows import Groups, RowKind, kinds_of
from guidedrl.seeding import derive_seed
from guidedrl.teachers.pool import TeacherPool
from guidedrl.teachers.server import HintWriter, server_client


@GUIDANCE.register("hint")
class HintGuidance:
    """Re-sample G responses with the hint for every triggered group; put them in as the method says."""

    def __init__(self, cfg: GuidanceConfig, ctx: GuidanceContext, pools: list[TeacherPool]) -> None:
        self.cfg, self.ctx, self.pools = cfg, ctx, pools
        self.frame = chat_frame(ctx.tokenizer)
        self.writer = None
        if cfg.hint_writer is not None:
            self.writer = HintWriter(server_client(cfg.hint_writer, ctx.cache_dir, "guidance.hint_writer"),
                                     cfg.hint_writer_template, cfg.hint_writer_max_tokens)

    def hint_for(self, row: dict) -> str | None:
        """The row's ``hint``, else one the hint writer writes, else the first lines of a verified teacher
        solution, else None."""
        if row.get("hint"):
            return row["hint"]
        if self.writer is not None:
            hint = self.writer.hint(row["prompt"])
            if hint:
                return hint
        for pool in self.pools:
            for sol in pool.solutions([dict(row, prompt=as_messages(row["prompt"], self.ctx.tokenizer))])[0]:
                if rewards_of(self.ctx, [row], [sol.text])[0] > self.ctx.correct_threshold:
                    return "\n".join(sol.text.splitlines()[:self.cfg.hint_steps_from_teacher])
        return None

    def __call__(self, batch: RolloutBatch, rows: list[dict], step: int, first_group: int = 0
                 ) -> tuple[RolloutBatch, dict[str, float]]:
        cfg, ctx, tok = self.cfg, self.ctx, self.ctx.tokenizer
        demand = guidance_demand(batch.correct, batch.group_index, "all_wrong" if cfg.trigger == "adaptive_k"
                                 else cfg.trigger, 1, 1)
        hints = {g: self.hint_for(rows[g]) for g in range(len(demand)) if demand[g] > 0}
        hinted_ids = {g: encode_prompts(tok, [with_hint(rows[g]["prompt"], h, cfg.hint_template, self.frame)])[0]
                      for g, h in hints.items() if h}
        limit = ctx.max_prompt_length
        groups = [g for g, ids in hinted_ids.items() if limit is None or len(ids) <= limit]
        n_groups = len(torch.unique(batch.group_index))
        metrics = {"guidance/hint/rate": len(groups) / n_groups,
                   "guidance/hint/unavailable": (len(hints) - len(groups)) / n_groups}  # no hint, or too long
        if self.writer is not None:
            metrics["guidance/hint/server_skips"] = float(self.writer.client.skipped)
        if not groups:
            return batch, metrics
        ids = [hinted_ids[g] for g in groups]
        sampling = replace(ctx.sampling, seeds=tuple(derive_seed(ctx.seed, "hint", step, first_group + g)
                                                     for g in groups))
        hinted = ctx.engine.generate(ids, ctx.group_size, sampling)
        n = hinted.size
        owner = [groups[int(i)] for i in hinted.prompt_index]
        rewards = rewards_of(ctx, [rows[g] for g in owner], hinted.response_texts(tok))
        mask = hinted.response_mask.bool()
        first_row = Groups.of(batch.group_index).first_rows().tolist()
        plain_prompt = {g: prompt_tokens(batch, first_row[g]) for g in groups}
        rebuilt = Rollouts.from_token_lists(
            [plain_prompt[g] for g in owner], [hinted.response_ids[i][mask[i]].tolist() for i in range(n)],
            tok.pad_token_id, tok.eos_token_id,
            behaviour_logp=[hinted.behaviour_logp[i][mask[i]].tolist() for i in range(n)], prompt_index=owner)
        correct = rewards > ctx.correct_threshold
        hinted_rows = RolloutBatch(rebuilt, rewards, correct, torch.tensor(owner), kinds_of(n, RowKind.HINTED),
                                   ["hint"] * n)
        solved = Groups.of(torch.tensor(owner)).count(correct)  # per hinted group, in the order of its id
        metrics.update({"guidance/hint/accuracy": correct.float().mean().item(),
                        "guidance/hint/rescued": float((solved > 0).float().mean())})
        parts = [hinted_rows]
        if cfg.hint_replace_group:
            keep = ~torch.isin(batch.group_index, torch.tensor(groups))
            if keep.any():
                parts.insert(0, batch.select(keep.nonzero().flatten()))
        else:
            parts.insert(0, batch)
        return RolloutBatch.concat(parts, tok.pad_token_id), metrics
