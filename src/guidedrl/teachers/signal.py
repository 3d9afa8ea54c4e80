"""The teacher-signal stage of a step (TGPO, reverse-KL distillation, KDRL): the frozen teacher's predictions
on the final batch, what the configured pieces derive from them, and the student–teacher gap, logged."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from guidedrl.algorithms.advantages import POLICY
from guidedrl.algorithms.distill import mean_reverse_kl, mismatch_ratio, teacher_token_mask
from guidedrl.batch import RolloutBatch
from guidedrl.config import TeacherSignalConfig
from guidedrl.rollout.budget import ForwardBudget
from guidedrl.precision import Precision
from guidedrl.rollout.engine import Rollouts
from guidedrl.rollout.forward import response_logprobs
from guidedrl.seeding import derive_seed
from guidedrl.teachers.model import FrozenTeacher
from guidedrl.teachers.server import ServedTeacher, server_client

ENTROPY_SETS = ("high_entropy", "low_entropy")


class TeacherSignal:
    """Fills ``teacher_logp``, ``teacher_label`` (and the top-k, π_old of the label, the label-term token set
    when the configured pieces read them) on a batch, with one teacher forward and at most one student one."""

    def __init__(self, path: str | None, tokenizer: PreTrainedTokenizerBase, cfg: TeacherSignalConfig,
                 needs: frozenset[str], temperature: float, seed: int, precision: Precision,
                 budget: ForwardBudget | None = None, cache_dir: Path | None = None,
                 longest: int | None = None) -> None:
        self.cfg, self.needs, self.temperature, self.seed, self.precision = cfg, needs, temperature, seed, precision
        self.budget = budget or ForwardBudget()
        if cfg.server is not None:  # a served teacher: its prompt log-probs of each rollout
            client = server_client(cfg.server, cache_dir, "teacher_signal.server")
            if longest is not None and client.context is not None and longest > client.context:
                raise ValueError(f"rollout.max_prompt_length + rollout.max_new_tokens = {longest} tokens exceed the "
                                 f"served teacher's max_model_len ({client.context}); serve it with a longer "
                                 "--max-model-len or shorten them")
            self.teacher = ServedTeacher(client)
        else:
            self.teacher = FrozenTeacher(path, tokenizer, cfg.label, cfg.temperature,
                                         cfg.top_k if "teacher_topk" in needs else 0, precision, self.budget,
                                         cfg.model_overrides)

    def __call__(self, batch: RolloutBatch, policy: PreTrainedModel, step: int) -> tuple[RolloutBatch, dict[str, float]]:
        cfg, r = self.cfg, batch.rollouts
        generator = (torch.Generator(self.precision.device).manual_seed(derive_seed(self.seed, "teacher_label", step))
                     if cfg.label == "sample" else None)
        pred = self.teacher.predict(r, generator)
        old_label_logp = entropy = None
        if "old_label_logp" in self.needs or cfg.tokens in ENTROPY_SETS:  # the student before its update
            old_label_logp, entropy = self.student_view(batch, policy, pred.label)
        tokens = None if cfg.tokens == "all" else teacher_token_mask(
            cfg.tokens, r.response_mask, r.response_ids, pred.label, entropy, cfg.entropy_share)
        own = batch.token_mask(batch.kind == POLICY)
        metrics = {"teacher_signal/mismatch_ratio": mismatch_ratio(pred.label, r.response_ids, own),
                   "teacher_signal/reverse_kl": mean_reverse_kl(r.behaviour_logp, pred.logp, own)}
        return replace(batch, teacher_logp=pred.logp, teacher_label=pred.label, teacher_topk_ids=pred.topk_ids,
                       teacher_topk_logp=pred.topk_logp, old_label_logp=old_label_logp, teacher_tokens=tokens), metrics

    @torch.no_grad()
    def student_view(self, batch: RolloutBatch, policy: PreTrainedModel, label: torch.Tensor
                     ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """π_old's log-prob of the teacher's label at each position and, for the entropy token sets, π_old's
        entropy (B×R each, on the CPU), forward by forward within the token budget."""
        with_entropy = self.cfg.tokens in ENTROPY_SETS

        def score(part: Rollouts, rows: torch.Tensor) -> tuple[torch.Tensor, ...]:
            with self.precision.autocast():
                out = response_logprobs(policy, part.input_ids, part.attention_mask, part.prompt_width,
                                        self.temperature, labels=label[rows, :part.response_ids.shape[1]],
                                        with_entropy=with_entropy, logits_chunk=self.budget.logits_chunk)
            return (out.label_logp.float(),) + ((out.entropy.float(),) if with_entropy else ())

        label_logp, *entropy = self.budget.per_token(batch.rollouts, score)
        return label_logp, entropy[0] if entropy else None
