"""The policy update of one step: K epochs × mini-batches of optimizer steps, each accumulated over micro-batches.

Every micro-batch's loss is normalized by its mini-batch's counts (:class:`Denominators`), so accumulation
gives the gradient of the whole mini-batch's loss however its rows are cut; rows are sorted by length and cut
by the token budget (:class:`~guidedrl.rollout.budget.ForwardBudget`) so each micro-batch is padded little and
holds a bounded number of tokens. The parameters a surrogate takes from its mini-batch (its hook, such as Guide's
quantile γ) are taken over the whole mini-batch, in one extra no-grad forward of the rows of that kind. With one update
epoch the behaviour log-probs come from the sampler (same weights, same temperature): no "old log-prob" pass.
"""

from __future__ import annotations

import math
from dataclasses import replace

import torch
from transformers import PreTrainedModel

from guidedrl.algorithms.aggregation import Denominators
from guidedrl.algorithms.losses import LossInputs, pg_loss_by_kind, policy_loss
from guidedrl.algorithms.rollout_correction import rollout_weights
from guidedrl.algorithms.surrogates import mini_batch_hook, ratio_of
from guidedrl.batch import RolloutBatch
from guidedrl.config import TrainConfig
from guidedrl.distributed import Ranks
from guidedrl.precision import Precision
from guidedrl.rollout.budget import ForwardBudget
from guidedrl.rollout.forward import chunkable_head, response_logprobs
from guidedrl.rows import RowKind
from guidedrl.seeding import derive_seed
from guidedrl.teachers.signal import STUDENT_VIEWS
from guidedrl.yaml_config import ConfigError


def add_stats(acc: dict[str, float], stats: dict[str, float], weight: float = 1.0) -> None:
    """``acc[k] += weight · stats[k]`` for every key (a key absent so far counts from 0)."""
    for key, value in stats.items():
        acc[key] = acc.get(key, 0.0) + weight * value


class PolicyUpdate:
    """Applies the configured policy loss to a step's final batch (advantages already on it)."""

    def __init__(self, policy: PreTrainedModel, optimizer: torch.optim.Optimizer, cfg: TrainConfig,
                 precision: Precision, recompute_behaviour: bool = False, ranks: Ranks | None = None,
                 train_model: torch.nn.Module | None = None) -> None:
        self.policy, self.optimizer, self.cfg, self.precision = policy, optimizer, cfg, precision
        self.ranks = ranks or Ranks()
        self.train_model = train_model or policy  # what the gradient flows through (DDP-wrapped on N ranks)
        self.needs = cfg.needs()
        self.budget = ForwardBudget.of(cfg)
        self.norm_length = cfg.algorithm.norm_length or cfg.rollout.max_new_tokens
        self.recompute_behaviour = recompute_behaviour
        if cfg.optim.grad_norm_by_kind and self.ranks.world > 1:
            raise ConfigError("optim.grad_norm_by_kind: the diagnostic runs in one process only")
        if self.ranks.fsdp:  # whether the head can be chunked is probed once, on the whole weights: no collective
            with self.ranks.full_weights(self.train_model):
                chunkable_head(self.train_model)

    def __call__(self, batch: RolloutBatch | None, index: int, first_group: int = 0) -> dict[str, float]:
        """Optimize on ``batch`` (this rank's rows; None when its groups were all filtered) at step ``index``
        (0-based). Statistics are means over the step's updates, except ``updates``: how many were applied, and
        ``updates_skipped``: how many had a non-finite loss or gradient and were not. ``first_group`` is the global
        index of this rank's first group: mini-batches are drawn by groups over the whole step, the same on any
        number of ranks."""
        o = self.cfg.optim
        updates = o.epochs * o.mini_batches
        acc: dict[str, float] = {}
        correction = self.cfg.algorithm.rollout_correction
        # π_old from a no-grad forward: when asked, or for a rollout correction over several updates
        if self.recompute_behaviour or (correction is not None and updates > 1):
            with self.ranks.full_weights(self.train_model):
                if batch is not None:
                    sampler_logp = batch.rollouts.behaviour_logp
                    batch, acc["behaviour_logp_gap"] = self.recomputed_behaviour(batch)
                    if correction is not None:
                        batch = replace(batch, sampler_logp=sampler_logp)
        generator = torch.Generator().manual_seed(derive_seed(self.cfg.seed, "minibatch", index))
        self.policy.train()
        for _ in range(o.epochs):
            for mini in self.mini_batches(batch, generator, first_group):
                self.update_once(batch, mini, index, acc, updates)
        self.policy.eval()
        return acc

    def mini_batches(self, batch: RolloutBatch | None, generator: torch.Generator, first_group: int
                     ) -> list[torch.Tensor]:
        """This rank's rows of each mini-batch of one epoch: the step's groups (all ranks') are shuffled and cut
        into ``mini_batches`` parts; rows of similar length are put next to each other (less padding)."""
        o, total = self.cfg.optim, self.cfg.rollout.prompts_per_step
        order = torch.randperm(total, generator=generator) if o.mini_batches > 1 else torch.arange(total)
        if batch is None:
            return [torch.zeros(0, dtype=torch.long)] * o.mini_batches
        lengths = batch.rollouts.prompt_mask.sum(1) + batch.rollouts.response_mask.sum(1)
        out = []
        for groups in order.tensor_split(o.mini_batches):  # exactly mini_batches parts (chunk may make fewer)
            rows = torch.isin(batch.group_index + first_group, groups).nonzero().squeeze(1)
            out.append(rows[lengths[rows].argsort(stable=True)])
        return out

    def update_once(self, batch: RolloutBatch | None, mini: torch.Tensor, index: int, acc: dict[str, float],
                    updates: int) -> None:
        """One optimizer step on a mini-batch, accumulated over micro-batches, its gradient averaged over ranks.
        Every rank runs as many forwards as the rank with the most micro-batches, so the wrapped model's
        collectives match: the extra ones (all of them on a rank with no row in the mini-batch) are
        :meth:`idle_loss`. A non-finite loss on any rank skips the step on every rank."""
        o, ranks = self.cfg.optim, self.ranks
        mask = batch.rollouts.response_mask[mini] if batch is not None else torch.zeros(0, 1)
        kind = batch.kind[mini] if batch is not None else torch.zeros(0, dtype=torch.long)
        local = Denominators.of(mask, kind)
        tokens, rows, *kinds = ranks.sum([local.tokens, local.rows, *local.kind_tokens])
        denominators = Denominators(tokens, rows, tuple(kinds))
        prepared = self.prepared_params(batch, mini)
        self.optimizer.zero_grad(set_to_none=True)
        finite = True
        by_kind: dict[RowKind, list[torch.Tensor]] = {}  # the diagnostic's per-kind gradients
        micros = self.budget.cuts(batch.rollouts, mini) if len(mini) else []
        count = max(ranks.max(len(micros)), 1)  # a mini-batch without rows anywhere still steps (zero gradient)
        for j in range(count):
            with ranks.no_sync(self.train_model, sync=j == count - 1):
                if j >= len(micros):
                    ranks.backward(self.idle_loss())
                    continue
                mb = batch.select(micros[j]).to(self.precision.device)
                x = self.loss_inputs(mb, prepared)
                loss, stats = policy_loss(x, self.cfg.algorithm, index + 1, self.norm_length, denominators)
                if o.grad_norm_by_kind:
                    self.add_kind_gradients(by_kind, x, denominators)
                finite = finite and bool(torch.isfinite(loss))
                ranks.backward(loss * ranks.world)
            add_stats(acc, stats, 1.0 / updates)
        norm = ranks.clip_grad_norm(self.train_model, o.grad_clip)
        add_stats(acc, {"grad_norm": norm, **{f"{kind}_{name}": float(value) for kind, params in prepared.items()
                                              for name, value in params.items()}}, 1.0 / updates)
        add_stats(acc, {f"grad_norm/{kind.key}": float(torch.sqrt(sum((g.float() ** 2).sum() for g in grads)))
                        for kind, grads in by_kind.items()}, 1.0 / updates)
        if not ranks.any(not finite) and math.isfinite(norm):
            self.optimizer.step()
            add_stats(acc, {"updates": 1.0})
        else:  # a non-finite loss or gradient on any rank is never applied
            self.optimizer.zero_grad(set_to_none=True)
            add_stats(acc, {"updates_skipped": 1.0})

    def add_kind_gradients(self, sums: dict[RowKind, list[torch.Tensor]], x: LossInputs,
                           denominators: Denominators) -> None:
        """The diagnostic ``optim.grad_norm_by_kind``: add the gradient of each kind of token's policy-gradient term
        in this micro-batch to ``sums`` (one backward per kind, the graph kept for the update's own)."""
        params = [p for p in self.policy.parameters() if p.requires_grad]
        for kind, term in pg_loss_by_kind(x, self.cfg.algorithm, self.norm_length, denominators).items():
            grads = torch.autograd.grad(term, params, retain_graph=True, allow_unused=True)
            total = sums.setdefault(kind, [torch.zeros_like(p) for p in params])
            for acc, grad in zip(total, grads):
                if grad is not None:
                    acc += grad

    def idle_loss(self) -> torch.Tensor:
        """A real forward of one token through the wrapped model, weighted 0: this rank's share of the model's
        collectives (DDP's buffer broadcast and gradient all-reduce, FSDP's all-gathers and reduce-scatters) in a
        micro-batch it has no rows for."""
        ids = torch.zeros((1, 1), dtype=torch.long, device=self.precision.device)
        with self.precision.autocast():
            return self.train_model(input_ids=ids).logits.float().sum() * 0.0

    def forward(self, mb: RolloutBatch, grad: bool = True
                ) -> tuple[torch.Tensor, torch.Tensor | None, dict[str, torch.Tensor]]:
        """log π_θ of the response tokens, their entropy, and the student's views of the teacher's tokens that the
        configured pieces need (:data:`~guidedrl.teachers.signal.STUDENT_VIEWS`, by loss input), from one forward
        on the training context."""
        r = mb.rollouts
        views = {need: view for need, view in STUDENT_VIEWS.items() if need in self.needs}
        with torch.set_grad_enabled(grad), self.precision.autocast():
            out = response_logprobs(
                self.train_model if grad else self.policy, r.input_ids, r.attention_mask, r.prompt_width,
                self.cfg.rollout.temperature, with_entropy=grad, logits_chunk=self.budget.logits_chunk,
                entropy_grad="entropy" in self.needs, **{arg: getattr(mb, field) for field, arg in views.values()})
        return out.logp, out.entropy, {need: getattr(out, need) for need in views}

    def loss_inputs(self, mb: RolloutBatch, prepared: dict[str, dict[str, torch.Tensor]]) -> LossInputs:
        """What the loss reads of a micro-batch: its training forward and the batch's fields, with the rollout
        correction's weights when one is configured (π_old: the recomputed behaviour log-probs, or, without a
        recompute, this forward's own, detached — the step's single update starts at the sampled weights)."""
        logp, entropy, views = self.forward(mb)
        r = mb.rollouts
        behaviour, weight, masked = r.behaviour_logp, None, None
        c = self.cfg.algorithm.rollout_correction
        if c is not None:
            own = mb.rows_of(RowKind.POLICY)[:, None] & r.response_mask.bool()
            sampler = r.behaviour_logp if mb.sampler_logp is None else mb.sampler_logp
            if mb.sampler_logp is None:
                behaviour = torch.where(own, logp.detach().to(behaviour.dtype), behaviour)
            weight, masked = rollout_weights(behaviour, sampler, own, c.level, c.mode, c.threshold)
        return LossInputs(logp=logp, behaviour_logp=behaviour, advantages=mb.advantages,
                          response_mask=r.response_mask, kind=mb.kind, prepared=prepared, entropy=entropy,
                          ref_logp=mb.ref_logp, teacher_logp=mb.teacher_logp, teacher_topk_logp=mb.teacher_topk_logp,
                          teacher_tokens=mb.teacher_tokens, rollout_weight=weight, rollout_masked=masked, **views)

    def recomputed_behaviour(self, batch: RolloutBatch) -> tuple[RolloutBatch, float]:
        """The batch with its own samples' behaviour log-probs recomputed by a no-grad training forward, for when
        the sampler's differ from the training forward's (bf16, another engine), and the mean absolute gap
        between the two over those tokens. Hinted rows keep the sampler's (their sampling context held the hint,
        which the training context does not) and teacher rows keep 0."""
        own = batch.rows_of(RowKind.POLICY).nonzero().flatten()
        logp = batch.rollouts.behaviour_logp.clone()
        lengths = batch.rollouts.prompt_mask.sum(1) + batch.rollouts.response_mask.sum(1)
        for micro in self.budget.cuts(batch.rollouts, own[lengths[own].argsort(stable=True)]):
            mb = batch.select(micro).to(self.precision.device)
            width = mb.rollouts.response_ids.shape[1]
            logp[micro, :width] = (self.forward(mb, grad=False)[0].float() * mb.rollouts.response_mask).cpu()
        mask = batch.rollouts.response_mask[own]
        gap = float(((logp[own] - batch.rollouts.behaviour_logp[own]).abs() * mask).sum() / mask.sum().clamp_min(1))
        return replace(batch, rollouts=replace(batch.rollouts, behaviour_logp=logp)), gap

    def prepared_params(self, batch: RolloutBatch | None, mini: torch.Tensor) -> dict[str, dict[str, torch.Tensor]]:
        """Per kind of token whose surrogate has a mini-batch hook (:func:`~guidedrl.algorithms.surrogates.prepares`:
        Guide's quantile γ), the parameters it takes from the ratios of the mini-batch's tokens of that kind (all
        ranks' tokens, gathered), in one extra no-grad forward of those rows."""
        prepared: dict[str, dict[str, torch.Tensor]] = {}
        kind = batch.kind[mini] if batch is not None else torch.zeros(0, dtype=torch.long)
        for k in RowKind:
            hook = mini_batch_hook(getattr(self.cfg.algorithm.surrogate, k.key))
            if hook is None or not self.ranks.any(bool((kind == k).any())):
                continue
            ratios = [torch.zeros(0)]
            with self.ranks.full_weights(self.train_model):
                for micro in self.budget.cuts(batch.rollouts, mini[kind == k]) if batch is not None else []:
                    mb = batch.select(micro).to(self.precision.device)
                    logp = self.forward(mb, grad=False)[0]
                    mask = mb.rollouts.response_mask.bool()
                    ratios.append(ratio_of(logp, mb.rollouts.behaviour_logp)[mask].float().cpu())
            values = torch.cat(self.ranks.gather(torch.cat(ratios)))
            prepared[k.key] = {name: v.to(self.precision.device) for name, v in hook(values).items()}
        return prepared
