"""A frozen teacher model that predicts on the student's own rollouts (TGPO, reverse-KL distillation).

A no-grad forward of the teacher over prompt + student response gives, at every response
position, the teacher's log-prob of the token the student sampled and the teacher's own label
(its argmax, or a sample) conditioned on the student's prefix.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from guidedrl.memory.plan import pretrained_kwargs
from guidedrl.precision import Precision
from guidedrl.rollout.budget import ForwardBudget
from guidedrl.rollout.engine import Rollouts
from guidedrl.rollout.forward import response_predictions


class TokenizerMismatchError(ValueError):
    """Teacher and student do not share a vocabulary, so per-token signals cannot be aligned."""


def check_shared_vocab(student: PreTrainedTokenizerBase, teacher: PreTrainedTokenizerBase, teacher_path: str) -> None:
    """Refuse a teacher whose token ids mean something else than the student's."""
    s, t = student.get_vocab(), teacher.get_vocab()
    differ = sorted(tok for tok in set(s) | set(t) if s.get(tok) != t.get(tok))
    if differ:
        raise TokenizerMismatchError(
            f"teacher tokenizer at {teacher_path} does not match the student's: {len(differ)} tokens differ "
            f"(e.g. {differ[:3]}); TGPO and reverse-KL distillation need a shared vocabulary")


@dataclass
class TeacherPredictions:
    """Per response token (B×R): teacher log-prob of the sampled token and the teacher's label; with
    ``top_k`` > 0 also the teacher's k most likely tokens and their log-probs (B×R×k, best first)."""

    logp: Tensor
    label: Tensor
    topk_ids: Tensor | None = None
    topk_logp: Tensor | None = None


class FrozenTeacher:
    """A frozen causal LM that predicts on student rollouts, forward by forward within the token budget; with
    ``adapters_off`` it is a LoRA policy with its adapters switched off (the run's initial policy, no copy)."""

    def __init__(self, model: PreTrainedModel, name: str, label: str = "argmax", temperature: float = 1.0,
                 top_k: int = 0, precision: Precision | None = None, budget: ForwardBudget | None = None,
                 adapters_off: bool = False) -> None:
        self.model, self.name, self.adapters_off = model, name, adapters_off
        self.precision = precision or Precision()
        self.budget = budget or ForwardBudget()
        self.label, self.temperature, self.top_k = label, temperature, top_k

    @classmethod
    def load(cls, path: str, student_tokenizer: PreTrainedTokenizerBase, label: str = "argmax",
             temperature: float = 1.0, top_k: int = 0, precision: Precision | None = None,
             budget: ForwardBudget | None = None, overrides: dict | None = None) -> FrozenTeacher:
        """A local teacher model from ``path``, refused when its vocabulary is not the student's."""
        check_shared_vocab(student_tokenizer, AutoTokenizer.from_pretrained(path), path)
        if top_k > len(student_tokenizer):
            raise ValueError(f"top_k {top_k} exceeds the student's vocabulary ({len(student_tokenizer)} tokens)")
        precision = precision or Precision()
        model = AutoModelForCausalLM.from_pretrained(path, dtype=precision.frozen_dtype,
                                                     **pretrained_kwargs(path, overrides or {})).eval()
        return cls(model.to(precision.device), Path(path).name, label, temperature, top_k, precision, budget)

    def predict(self, rollouts: Rollouts, generator: torch.Generator | None = None) -> TeacherPredictions:
        """Teacher predictions on the student's prefixes (on the CPU); zero/pad outside the response mask. Only
        B×R(×k) values leave the teacher's device; a sampled label draws from ``generator`` (on that device)."""
        def score(part: Rollouts, rows: Tensor) -> tuple[Tensor, ...]:
            with self.precision.autocast():
                pred = response_predictions(self.model, part.input_ids, part.attention_mask, part.prompt_width,
                                            self.temperature, self.top_k, self.label == "sample", generator,
                                            self.budget.logits_chunk)
            return tuple(t for t in pred if t is not None)

        with self.model.disable_adapter() if self.adapters_off else nullcontext():
            logp, label, *topk = self.budget.per_token(rollouts, score)
        mask = rollouts.response_mask.bool()
        signal = TeacherPredictions(logp.float().masked_fill(~mask, 0.0), label.masked_fill(~mask, 0))
        if topk:
            signal.topk_ids = topk[0].masked_fill(~mask[..., None], 0)
            signal.topk_logp = topk[1].float().masked_fill(~mask[..., None], 0.0)
        return signal
