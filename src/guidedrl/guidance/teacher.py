"""AMPO's (and LUFFY's) guidance: replace failed rollouts with verified teacher solutions.

Only groups the trigger selects are touched; their candidates are verified with the task's reward
(a wrong solution is never inserted), ranked by the student's comprehension (forwards cut by the token budget),
and the top k replace k wrong rows. Inserted rows are flagged off-policy with behaviour log-prob 0,
so the mixed loss shapes them with f(π_θ) = π_θ/(π_θ+γ).
"""

from __future__ import annotations

import logging
from collections import Counter

import torch

from guidedrl.batch import RolloutBatch
from guidedrl.config import GuidanceConfig
from guidedrl.data import as_messages
from guidedrl.guidance.base import GuidanceContext, prompt_tokens, rewards_of
from guidedrl.guidance.selection import answer_slot_tokens, comprehension_scores, rank_candidates
from guidedrl.guidance.trigger import guidance_demand
from guidedrl.registry import GUIDANCE
from guidedrl.rewards import count_boxed
from guidedrl.rollout.engine import Rollouts
from guidedrl.rollout.forward import response_logprobs
from guidedrl.rows import Groups, RowKind, kinds_of
from guidedrl.seeding import derive_seed
from guidedrl.teachers.pool import TeacherPool, TeacherSolution

log = logging.getLogger(__name__)


@GUIDANCE.register("teacher")
class TeacherGuidance:
    """Insert up to k verified teacher solutions into each triggered group."""

    def __init__(self, cfg: GuidanceConfig, ctx: GuidanceContext, pools: list[TeacherPool]) -> None:
        self.cfg, self.pools, self.ctx = cfg, pools, ctx
        self.verified: dict[str, list[tuple[TeacherSolution, float]]] = {}
        self.warned = False

    def candidates(self, rows: list[dict]) -> list[list[tuple[TeacherSolution, float]]]:
        """Verified (solution, reward) pairs per row, each problem verified once and cached."""
        keys = [repr(row["prompt"]) for row in rows]
        todo = [i for i, k in enumerate(keys) if k not in self.verified]
        if todo:
            found = [[] for _ in todo]
            asked = [dict(rows[i], prompt=as_messages(rows[i]["prompt"], self.ctx.tokenizer)) for i in todo]
            for pool in self.pools:  # a pre-rendered prompt reaches a teacher as messages, for its own template
                for slot, sols in zip(found, pool.solutions(asked)):
                    slot.extend(sols)
            flat = [(i, s) for i, sols in zip(todo, found) for s in sols]
            rewards = rewards_of(self.ctx, [rows[i] for i, _ in flat], [s.text for _, s in flat])
            for i in todo:
                self.verified[keys[i]] = []
            for (i, sol), reward in zip(flat, rewards):
                if reward > self.ctx.correct_threshold:
                    self.verified[keys[i]].append((sol, float(reward)))
        return [self.verified[k] for k in keys]

    def fits(self, prompt_length: int, text: str) -> bool:
        """Whether prompt + solution + EOS fit in the student's context (a longer solution is unusable)."""
        limit = self.ctx.context_length
        return limit is None or (
            prompt_length + len(self.ctx.tokenizer(text, add_special_tokens=False)["input_ids"]) < limit)

    def comprehension(self, prompts: list[list[int]], texts: list[str], answers: list[str]) -> list[float]:
        """AMPO's score of each candidate from no-grad forwards of the current student, cut by the token budget;
        a solution is scored up to its answer's last token (what follows cannot change the score)."""
        ctx, tok = self.ctx, self.ctx.tokenizer
        slots = [answer_slot_tokens(tok, t, a) for t, a in zip(texts, answers)]
        usable = [i for i, s in enumerate(slots) if s is not None and s[1]]
        scores = [0.0] * len(texts)
        if not usable:
            return scores
        batch = Rollouts.from_token_lists([prompts[i] for i in usable], [slots[i][0][:slots[i][1][-1] + 1]
                                                                         for i in usable],
                                          tok.pad_token_id, tok.eos_token_id)
        answer = torch.zeros_like(batch.response_mask)
        for row, i in enumerate(usable):
            answer[row, slots[i][1]] = 1

        @torch.no_grad()
        def score(part: Rollouts, rows: torch.Tensor) -> torch.Tensor:
            with ctx.precision.autocast():
                return response_logprobs(ctx.policy, part.input_ids, part.attention_mask, part.prompt_width,
                                         logits_chunk=ctx.budget.logits_chunk).logp.float()

        (logp,) = ctx.budget.per_token(batch, score)
        for row, value in zip(usable, comprehension_scores(logp, answer).tolist()):
            scores[row] = value
        return scores

    def __call__(self, batch: RolloutBatch, rows: list[dict], step: int, first_group: int = 0
                 ) -> tuple[RolloutBatch, dict[str, float]]:
        cfg, tok = self.cfg, self.ctx.tokenizer
        demand = guidance_demand(batch.correct, batch.group_index, cfg.trigger, cfg.num_guidance, cfg.max_guidance)
        groups = [g for g in range(len(demand)) if demand[g] > 0]
        n_groups = len(torch.unique(batch.group_index))
        metrics: dict[str, float] = {"guidance/teacher/rate": len(groups) / n_groups}
        skips = [p.skipped for p in self.pools if hasattr(p, "skipped")]  # served teachers: failed requests so far
        if skips:
            metrics["guidance/teacher/server_skips"] = float(sum(skips))
        if not groups:
            return batch, metrics
        cands = self.candidates([rows[g] for g in groups])
        first_row = Groups.of(batch.group_index).first_rows().tolist()
        flat = [(g, sol, reward) for g, cs in zip(groups, cands) for sol, reward in cs
                if self.fits(len(prompt_tokens(batch, first_row[g])), sol.text)]
        if cfg.selection == "comprehension":
            scores = self.comprehension([prompt_tokens(batch, first_row[g]) for g, _, _ in flat],
                                        [s.text for _, s, _ in flat], [str(rows[g]["answer"]) for g, _, _ in flat])
        elif cfg.selection == "random":  # each group's candidates drawn with the group's own seed
            scores = [0.0] * len(flat)
            for g in groups:
                idx = [i for i, (h, _, _) in enumerate(flat) if h == g]
                gen = torch.Generator().manual_seed(derive_seed(self.ctx.seed, "selection", step, first_group + g))
                for i, value in zip(idx, torch.rand(len(idx), generator=gen).tolist()):
                    scores[i] = value
        else:
            scores = [0.0] * len(flat)
        fmt = [float(count_boxed(s.text) == 1) for _, s, _ in flat]
        drop: list[int] = []
        new_prompts, new_texts, new_groups, new_rewards, new_sources = [], [], [], [], []
        selected_scores, rejected_scores, empty = [], [], 0
        for g in groups:
            idx = [i for i, (h, _, _) in enumerate(flat) if h == g]
            if not idx:
                empty += 1
                continue
            wrong = ((batch.group_index == g) & ~batch.correct).nonzero().flatten()
            add = cfg.composition == "add"
            k = min(int(demand[g]), len(idx)) if add else min(int(demand[g]), len(idx), len(wrong))
            picked = [idx[j] for j in rank_candidates([scores[i] for i in idx], [fmt[i] for i in idx],
                                                      cfg.format_weight, k,
                                                      [flat[i][1].teacher for i in idx], cfg.per_teacher)]
            selected_scores += [scores[i] for i in picked]
            rejected_scores += [scores[i] for i in idx if i not in picked]
            if not add:  # which wrong rows the solutions replace: the group's own seed
                gen = torch.Generator().manual_seed(derive_seed(self.ctx.seed, "replace", step, first_group + g))
                drop += wrong[torch.randperm(len(wrong), generator=gen)[:len(picked)]].tolist()
            for i in picked:
                _, sol, reward = flat[i]
                new_prompts.append(prompt_tokens(batch, first_row[g]))
                new_texts.append(sol.text)
                new_groups.append(g)
                new_rewards.append(reward)
                new_sources.append(sol.teacher)
        if empty and not self.warned:
            log.warning("step %d: %d guided group(s) had no verified teacher solution and stay on-policy; later "
                        "occurrences are counted in the metric guidance/teacher/empty_pool", step, empty)
            self.warned = True
        metrics.update({"guidance/teacher/empty_pool": empty / len(groups),
                        "guidance/teacher/rescued": (len(groups) - empty) / len(groups),
                        "guidance/teacher/inserted": float(len(new_texts))})
        if selected_scores:
            metrics["guidance/teacher/score_selected"] = sum(selected_scores) / len(selected_scores)
        if rejected_scores:
            metrics["guidance/teacher/score_rejected"] = sum(rejected_scores) / len(rejected_scores)
        for teacher, count in Counter(new_sources).items():
            metrics[f"guidance/teacher/selected/{teacher}"] = float(count)
        if not new_texts:
            return batch, metrics
        responses = [ids + [tok.eos_token_id] for ids in tok(new_texts, add_special_tokens=False)["input_ids"]]
        inserted = Rollouts.from_token_lists(new_prompts, responses, tok.pad_token_id, tok.eos_token_id,
                                             prompt_index=new_groups)
        n = len(new_texts)
        teacher_rows = RolloutBatch(inserted, torch.tensor(new_rewards), torch.ones(n, dtype=torch.bool),
                                    torch.tensor(new_groups), kinds_of(n, RowKind.TEACHER), new_sources)
        keep = torch.tensor([i for i in range(batch.size) if i not in set(drop)])
        return RolloutBatch.concat([batch.select(keep), teacher_rows], tok.pad_token_id), metrics
