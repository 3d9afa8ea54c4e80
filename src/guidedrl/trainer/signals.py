"""The per-token fields the configured pieces read, computed once on a step's final batch without gradients:
the teacher's predictions (TGPO, RKL, KDRL), the initial policy's log-probs (k3 KL), the critic's values (PPO).
Which of them a run computes follows from ``TrainConfig.needs()``: nothing is computed that no piece reads."""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import replace
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, PreTrainedModel, PreTrainedTokenizerBase

from guidedrl.batch import RolloutBatch
from guidedrl.config import TEACHER_FIELDS, TrainConfig
from guidedrl.rollout.budget import ForwardBudget
from guidedrl.memory.plan import longest_row, pretrained_kwargs
from guidedrl.precision import Precision
from guidedrl.rollout.engine import Rollouts
from guidedrl.rollout.forward import response_logprobs
from guidedrl.teachers.signal import TeacherSignal
from guidedrl.trainer.critic import Critic


class StepSignals:
    """Teacher signal, reference policy and critic of a run, each only if a configured piece needs it."""

    def __init__(self, cfg: TrainConfig, initial_model: Path, teacher: Path | None,
                 tokenizer: PreTrainedTokenizerBase, precision: Precision, adapted: PreTrainedModel | None = None,
                 cache_dir: Path | None = None) -> None:
        needs = cfg.needs()
        self.temperature, self.budget = cfg.rollout.temperature, ForwardBudget.of(cfg)
        self.precision = precision
        self.teacher = (TeacherSignal(None if teacher is None else str(teacher), tokenizer, cfg.teacher_signal, needs,
                                      cfg.rollout.temperature, cfg.seed, precision, self.budget, cache_dir,
                                      longest_row(cfg))
                        if needs & TEACHER_FIELDS else None)
        # the k3 KL's reference is the run's *initial* policy, also after a resume; with LoRA it is the policy
        # with its adapters switched off (``adapted``), not a second copy
        self.adapted = adapted
        self.reference = (AutoModelForCausalLM.from_pretrained(
            initial_model, dtype=precision.frozen_dtype, **pretrained_kwargs(initial_model, cfg.model_overrides))
                          .eval().to(precision.device)
                          if "ref_logp" in needs and adapted is None else None)
        self.needs_reference = "ref_logp" in needs
        self.critic = (Critic(str(initial_model), cfg.critic, precision, self.budget, cfg.model_overrides)
                       if "values" in needs else None)

    def __call__(self, batch: RolloutBatch, policy: PreTrainedModel, index: int) -> tuple[RolloutBatch, dict[str, float]]:
        metrics: dict[str, float] = {}
        if self.teacher is not None:
            batch, metrics = self.teacher(batch, policy, index)
        if self.needs_reference:
            batch = replace(batch, ref_logp=self.reference_logprobs(batch))
        if self.critic is not None:
            batch = replace(batch, values=self.critic.values(batch.rollouts))
        return batch, metrics

    @torch.no_grad()
    def reference_logprobs(self, batch: RolloutBatch) -> torch.Tensor:
        """log π_ref of every response token (B×R), forward by forward within the token budget."""
        model = self.reference if self.reference is not None else self.adapted
        off = self.adapted.disable_adapter() if self.reference is None else nullcontext()

        def score(part: Rollouts, rows: torch.Tensor) -> torch.Tensor:
            with self.precision.autocast():
                return response_logprobs(model, part.input_ids, part.attention_mask, part.prompt_width,
                                         self.temperature, logits_chunk=self.budget.logits_chunk).logp.float()

        with off:
            (logp,) = self.budget.per_token(batch.rollouts, score)
        return logp * batch.rollouts.response_mask
