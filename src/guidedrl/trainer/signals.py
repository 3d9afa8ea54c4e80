"""The per-token fields the configured pieces read, computed once on a step's final batch without gradients:
the teacher's predictions (TGPO, RKL, KDRL), the initial policy's log-probs (k3 KL), the critic's values and
returns (PPO; the critic also updates itself after the policy and keeps its own checkpoint state). Which of them
a run computes follows from ``TrainConfig.needs()``: nothing is computed that no piece reads."""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, PreTrainedModel, PreTrainedTokenizerBase

from guidedrl.batch import RolloutBatch
from guidedrl.config import TEACHER_FIELDS, TrainConfig
from guidedrl.memory.plan import longest_row, pretrained_kwargs
from guidedrl.precision import Precision
from guidedrl.rollout.budget import ForwardBudget
from guidedrl.rollout.engine import Rollouts
from guidedrl.rollout.forward import response_logprobs
from guidedrl.teachers.signal import TeacherSignal
from guidedrl.trainer.critic import Critic
from guidedrl.yaml_config import ConfigError


class StepSignals:
    """Teacher signal, reference policy and critic of a run, each only if a configured piece needs it."""

    def __init__(self, cfg: TrainConfig, initial_model: Path, teachers: dict[str, Path],
                 tokenizer: PreTrainedTokenizerBase, precision: Precision, policy: PreTrainedModel | None = None,
                 cache_dir: Path | None = None, processes: int = 1) -> None:
        needs, t = cfg.needs(), cfg.teacher_signal
        self.temperature, self.budget = cfg.rollout.temperature, ForwardBudget.of(cfg)
        self.precision = precision
        # the run's *initial* policy (the k3 KL's reference, a self-teacher's by default), also after a resume:
        # with LoRA the policy with its adapters switched off (``adapted``), else one frozen copy
        self.adapted = policy if cfg.lora is not None else None
        self_initial = needs & TEACHER_FIELDS and t.source != "model" and t.self_policy == "initial"
        self.reference = (AutoModelForCausalLM.from_pretrained(
            initial_model, dtype=precision.frozen_dtype, **pretrained_kwargs(initial_model, cfg.model_overrides))
                          .eval().to(precision.device)
                          if ("ref_logp" in needs or self_initial) and self.adapted is None else None)
        self_model = (policy if t.self_policy == "current" else self.reference or self.adapted)
        self.teacher = (TeacherSignal({k: Path(v) for k, v in teachers.items()}, tokenizer, t, needs,
                                      cfg.rollout.temperature, cfg.seed, precision, self.budget, cache_dir,
                                      longest_row(cfg), self_model,
                                      self_adapters_off=t.self_policy == "initial" and self.adapted is not None)
                        if needs & TEACHER_FIELDS else None)
        self.needs_reference = "ref_logp" in needs
        if "values" in needs and processes > 1:
            raise ConfigError("algorithm.advantage: gae (PPO's critic) runs in one process only for now")
        self.critic = (Critic(str(initial_model), cfg.critic, precision, self.budget, cfg.model_overrides)
                       if "values" in needs else None)

    def __call__(self, batch: RolloutBatch, policy: PreTrainedModel, index: int, rows: list[dict]
                 ) -> tuple[RolloutBatch, dict[str, float]]:
        """The batch with every field the pieces read; ``rows`` are the data rows of its groups."""
        metrics: dict[str, float] = {}
        if self.teacher is not None:
            batch, metrics = self.teacher(batch, policy, index, rows)
        if self.needs_reference:
            batch = replace(batch, ref_logp=self.reference_logprobs(batch))
        if self.critic is not None:
            batch = self.critic.score(batch)
        return batch, metrics

    def update(self, batch: RolloutBatch) -> dict[str, float]:
        """After the policy's update: the signals that learn (the critic) fit themselves to ``batch``."""
        return self.critic.update(batch) if self.critic is not None else {}

    def checkpoint_state(self) -> dict[str, Any]:
        """What a checkpoint keeps of the signals that learn."""
        return self.critic.checkpoint_state() if self.critic is not None else {}

    def load_checkpoint_state(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`checkpoint_state` kept."""
        if self.critic is not None:
            self.critic.load_checkpoint_state(state)

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
