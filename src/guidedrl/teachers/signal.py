"""The teacher-signal stage of a step (TGPO, reverse-KL distillation, KDRL): the teachers' predictions on the
final batch (one teacher, several routed per row, or the student itself with privileged context), what the
configured pieces derive from them, and the student–teacher gap, logged (per teacher when there are several)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from guidedrl.algorithms.distill import mean_reverse_kl, mismatch_ratio, teacher_token_mask
from guidedrl.batch import RolloutBatch
from guidedrl.config import TeacherSignalConfig
from guidedrl.precision import Precision
from guidedrl.rollout.budget import ForwardBudget
from guidedrl.rollout.engine import Rollouts
from guidedrl.rollout.forward import response_logprobs
from guidedrl.rows import RowKind
from guidedrl.seeding import derive_seed
from guidedrl.teachers.model import FrozenTeacher, TeacherPredictions
from guidedrl.teachers.privileged import privileged_text, with_privileged_context
from guidedrl.teachers.server import ServedTeacher, server_client
from guidedrl.yaml_config import ConfigError

ENTROPY_SETS = ("high_entropy", "low_entropy")
# What the teacher signal adds to the training forward: for each loss input a piece may need, the batch field of
# the teacher's tokens at whose positions the student's log-probs are read, and the forward's argument taking them
# (TGPO's label: log π_θ(ŷ_t); the top-k KL's: log π_θ of the teacher's k most likely tokens).
STUDENT_VIEWS: dict[str, tuple[str, str]] = {"label_logp": ("teacher_label", "labels"),
                                             "topk_logp": ("teacher_topk_ids", "topk_ids")}


class TeacherSignal:
    """Fills ``teacher_logp``, ``teacher_label`` (and the top-k, π_old of the label, the label-term token set
    when the configured pieces read them) on a batch: each row scored by its teacher — the one teacher, the one
    its ``route_by`` column names (one batched call per teacher), or the student itself with the row's hint or
    solution in its prompt — and at most one student forward."""

    def __init__(self, paths: dict[str, Path], tokenizer: PreTrainedTokenizerBase, cfg: TeacherSignalConfig,
                 needs: frozenset[str], temperature: float, seed: int, precision: Precision,
                 budget: ForwardBudget | None = None, cache_dir: Path | None = None,
                 longest: int | None = None, self_model: PreTrainedModel | None = None,
                 self_adapters_off: bool = False) -> None:
        self.cfg, self.needs, self.temperature, self.seed, self.precision = cfg, needs, temperature, seed, precision
        self.budget, self.tokenizer = budget or ForwardBudget(), tokenizer
        top_k = cfg.top_k if "teacher_topk" in needs else 0
        self.teachers: dict[str, FrozenTeacher | ServedTeacher] = {}
        for name, spec in cfg.scoring_teachers().items():
            if spec.server is not None:  # a served teacher: its prompt log-probs of each rollout
                key = "teacher_signal.server" if name == "teacher" else f"teacher_signal.teachers.{name}.server"
                client = server_client(spec.server, cache_dir, key)
                if longest is not None and client.context is not None and longest > client.context:
                    raise ValueError(f"rollout.max_prompt_length + rollout.max_new_tokens = {longest} tokens exceed "
                                     f"the served teacher's max_model_len ({client.context}); serve it with a "
                                     "longer --max-model-len or shorten them")
                self.teachers[name] = ServedTeacher(client)
            else:
                self.teachers[name] = FrozenTeacher.load(str(paths[name]), tokenizer, cfg.label, cfg.temperature,
                                                         top_k, precision, self.budget, spec.model_overrides)
        if cfg.source != "model":
            self.teachers["self"] = FrozenTeacher(self_model, "self", cfg.label, cfg.temperature, top_k, precision,
                                                  self.budget, self_adapters_off)

    def route(self, rows: list[dict]) -> list[str]:
        """The teacher of each row (checked at start: every value routes somewhere, see :func:`check_routes`)."""
        if len(self.teachers) == 1:
            return [next(iter(self.teachers))] * len(rows)
        c = self.cfg
        return [c.routes.get(str(row.get(c.route_by)), c.default_teacher) for row in rows]

    def predict(self, rollouts: Rollouts, rows: list[dict], generator: torch.Generator | None
                ) -> tuple[TeacherPredictions, list[str], dict[str, float]]:
        """Every row's predictions from its teacher, the teacher of each row, and context metrics."""
        metrics: dict[str, float] = {}
        if self.cfg.source != "model":
            field = "hint" if self.cfg.source == "self_with_hint" else "solution"
            rollouts, missing = with_privileged_context(rollouts, rows, field, self.cfg.context_template,
                                                        self.tokenizer)
            metrics["teacher_signal/no_context"] = missing
        names = self.route(rows)
        if len(set(names)) == 1:
            return self.teachers[names[0]].predict(rollouts, generator), names, metrics
        b, width = rollouts.response_ids.shape
        merged = TeacherPredictions(torch.zeros(b, width), torch.zeros(b, width, dtype=torch.long))
        for name in dict.fromkeys(names):
            idx = torch.tensor([i for i, n in enumerate(names) if n == name])
            part = self.teachers[name].predict(rollouts.select(idx), generator)
            cols = part.logp.shape[1]
            merged.logp[idx, :cols], merged.label[idx, :cols] = part.logp, part.label
            if part.topk_ids is not None:
                if merged.topk_ids is None:
                    k = part.topk_ids.shape[-1]
                    merged.topk_ids = torch.zeros(b, width, k, dtype=torch.long)
                    merged.topk_logp = torch.zeros(b, width, k)
                merged.topk_ids[idx, :cols], merged.topk_logp[idx, :cols] = part.topk_ids, part.topk_logp
        return merged, names, metrics

    def __call__(self, batch: RolloutBatch, policy: PreTrainedModel, step: int, rows: list[dict]
                 ) -> tuple[RolloutBatch, dict[str, float]]:
        """The batch with the teacher's fields; ``rows`` are the data rows of its groups (by ``group_index``)."""
        cfg, r = self.cfg, batch.rollouts
        generator = (torch.Generator(self.precision.device).manual_seed(derive_seed(self.seed, "teacher_label", step))
                     if cfg.label == "sample" else None)
        pred, names, metrics = self.predict(r, [rows[int(g)] for g in batch.group_index], generator)
        old_label_logp = entropy = None
        if "old_label_logp" in self.needs or cfg.tokens in ENTROPY_SETS:  # the student before its update
            old_label_logp, entropy = self.student_view(batch, policy, pred.label)
        tokens = None if cfg.tokens == "all" else teacher_token_mask(
            cfg.tokens, r.response_mask, r.response_ids, pred.label, entropy, cfg.entropy_share)
        own = batch.token_mask(batch.rows_of(RowKind.POLICY))
        metrics |= {"teacher_signal/mismatch_ratio": mismatch_ratio(pred.label, r.response_ids, own),
                    "teacher_signal/reverse_kl": mean_reverse_kl(r.behaviour_logp, pred.logp, own)}
        if len(self.teachers) > 1:  # the gap to each teacher, over the rows it scored
            for name in self.teachers:
                mine = own & torch.tensor([n == name for n in names])[:, None]
                if mine.any():
                    metrics[f"teacher_signal/{name}/mismatch_ratio"] = mismatch_ratio(pred.label, r.response_ids, mine)
                    metrics[f"teacher_signal/{name}/reverse_kl"] = mean_reverse_kl(r.behaviour_logp, pred.logp, mine)
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


def check_routes(cfg: TeacherSignalConfig, rows: list[dict], source: str) -> None:
    """Every row of the data has a teacher: its ``route_by`` value is routed, or there is a default teacher; a
    self-teacher's privileged text exists in some row (else it would score with the student's own prompt)."""
    if len(cfg.scoring_teachers()) > 1 or cfg.routes:
        for i, row in enumerate(rows):
            value = row.get(cfg.route_by)
            if str(value) not in cfg.routes and cfg.default_teacher is None:
                raise ConfigError(f"{source}: row {i}: {cfg.route_by}={value!r} is in no teacher_signal.routes "
                                  f"({', '.join(cfg.routes) or 'none'}) and there is no default_teacher")
    if cfg.source != "model":
        field = "hint" if cfg.source == "self_with_hint" else "solution"
        if not any(privileged_text(row, field) for row in rows):
            what = "a 'hint' column" if field == "hint" else "a 'solution' or 'teacher_solutions' column"
            raise ConfigError(f"teacher_signal.source: {cfg.source} needs {what}, which {source} has not")
