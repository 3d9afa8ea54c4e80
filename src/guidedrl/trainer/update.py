"""The policy update of one step: K epochs × mini-batches of optimizer steps, each accumulated over micro-batches.

Every micro-batch's loss is normalized by its mini-batch's counts (:class:`Denominators`), so accumulation
gives the gradient of the whole mini-batch's loss whatever ``micro_batch_size`` is; rows are grouped by
length into micro-batches so each is padded little. A shaping γ taken from a quantile of the ratio (Guide)
is taken over the whole mini-batch, in one extra no-grad forward of the rows of that kind. With one update
epoch the behaviour log-probs come from the sampler (same weights, same temperature): no "old log-prob" pass.
"""

from __future__ import annotations

from dataclasses import replace

import torch
from transformers import PreTrainedModel

from guidedrl.algorithms.advantages import POLICY
from guidedrl.algorithms.aggregation import Denominators
from guidedrl.algorithms.losses import TOKEN_KINDS, LossInputs, policy_loss
from guidedrl.algorithms.surrogates import quantile_gamma, ratio_of
from guidedrl.batch import RolloutBatch
from guidedrl.config import TrainConfig
from guidedrl.precision import Precision
from guidedrl.rollout.forward import response_logprobs
from guidedrl.seeding import derive_seed


def add_stats(acc: dict[str, float], stats: dict[str, float], weight: float = 1.0) -> None:
    """``acc[k] += weight · stats[k]`` for every key (a key absent so far counts from 0)."""
    for key, value in stats.items():
        acc[key] = acc.get(key, 0.0) + weight * value


class PolicyUpdate:
    """Applies the configured policy loss to a step's final batch (advantages already on it)."""

    def __init__(self, policy: PreTrainedModel, optimizer: torch.optim.Optimizer, cfg: TrainConfig,
                 precision: Precision, recompute_behaviour: bool = False) -> None:
        self.policy, self.optimizer, self.cfg, self.precision = policy, optimizer, cfg, precision
        self.needs = cfg.needs()
        self.norm_length = cfg.algorithm.norm_length or cfg.rollout.max_new_tokens
        self.recompute_behaviour = recompute_behaviour

    def __call__(self, batch: RolloutBatch, index: int) -> dict[str, float]:
        """Optimize on ``batch`` at step ``index`` (0-based); the statistics are means over its updates, except
        ``updates_skipped``: how many of them had a non-finite loss or gradient and were not applied."""
        o = self.cfg.optim
        updates = o.epochs * o.mini_batches
        if self.recompute_behaviour:
            batch = self.recomputed_behaviour(batch)
        generator = torch.Generator().manual_seed(derive_seed(self.cfg.seed, "minibatch", index))
        lengths = batch.rollouts.prompt_mask.sum(1) + batch.rollouts.response_mask.sum(1)
        kind = batch.kind
        acc: dict[str, float] = {}
        self.policy.train()
        for _ in range(o.epochs):
            order = torch.randperm(batch.size, generator=generator) if o.mini_batches > 1 else torch.arange(batch.size)
            for mini in order.chunk(o.mini_batches):
                mini = mini[lengths[mini].argsort(stable=True)]  # similar lengths share a micro-batch: less padding
                denominators = Denominators.of(batch.rollouts.response_mask[mini], kind[mini])
                gammas = self.quantile_gammas(batch, mini)
                self.optimizer.zero_grad(set_to_none=True)
                finite = True
                for micro in mini.split(o.micro_batch_size):
                    mb = batch.select(micro).to(self.precision.device)
                    loss, stats = policy_loss(self.loss_inputs(mb, gammas), self.cfg.algorithm, index + 1,
                                              self.norm_length, denominators)
                    finite = finite and bool(torch.isfinite(loss))
                    if finite:
                        loss.backward()
                    add_stats(acc, stats, 1.0 / updates)
                norm = torch.nn.utils.clip_grad_norm_(self.policy.parameters(), o.grad_clip)
                add_stats(acc, {"grad_norm": float(norm), **{f"{k}_gamma": float(g) for k, g in gammas.items()}},
                          1.0 / updates)
                if finite and torch.isfinite(norm):
                    self.optimizer.step()
                else:  # a non-finite loss or gradient is never applied
                    self.optimizer.zero_grad(set_to_none=True)
                    add_stats(acc, {"updates_skipped": 1.0})
        self.policy.eval()
        return acc

    def forward(self, mb: RolloutBatch, grad: bool = True) -> tuple[torch.Tensor, torch.Tensor | None,
                                                                     torch.Tensor | None, torch.Tensor | None]:
        """log π_θ of the response tokens, their entropy, and π_θ's log-probs of the teacher's label and
        top-k where the configured pieces read them, from one forward on the training context."""
        r = mb.rollouts
        with torch.set_grad_enabled(grad), self.precision.autocast():
            out = response_logprobs(
                self.policy, r.input_ids, r.attention_mask, r.prompt_width, self.cfg.rollout.temperature,
                labels=mb.teacher_label if "label_logp" in self.needs else None, with_entropy=grad,
                topk_ids=mb.teacher_topk_ids if "topk_logp" in self.needs else None)
        return out.logp, out.entropy, out.label_logp, out.topk_logp

    def loss_inputs(self, mb: RolloutBatch, gammas: dict[str, torch.Tensor]) -> LossInputs:
        logp, entropy, label_logp, topk_logp = self.forward(mb)
        r = mb.rollouts
        return LossInputs(logp=logp, behaviour_logp=r.behaviour_logp, advantages=mb.advantages,
                          response_mask=r.response_mask, kind=mb.kind, gammas=gammas, entropy=entropy,
                          ref_logp=mb.ref_logp, teacher_logp=mb.teacher_logp, label_logp=label_logp,
                          topk_logp=topk_logp, teacher_topk_logp=mb.teacher_topk_logp, teacher_tokens=mb.teacher_tokens)

    def recomputed_behaviour(self, batch: RolloutBatch) -> RolloutBatch:
        """The batch with its own samples' behaviour log-probs recomputed by a no-grad training forward, for when
        the sampler's differ from the training forward's (bf16, another engine). Hinted rows keep the sampler's
        (their sampling context held the hint, which the training context does not) and teacher rows keep 0."""
        own = (batch.kind == POLICY).nonzero().flatten()
        logp = batch.rollouts.behaviour_logp.clone()
        for micro in own.split(self.cfg.optim.micro_batch_size):
            mb = batch.select(micro).to(self.precision.device)
            width = mb.rollouts.response_ids.shape[1]
            logp[micro, :width] = (self.forward(mb, grad=False)[0].float() * mb.rollouts.response_mask).cpu()
        return replace(batch, rollouts=replace(batch.rollouts, behaviour_logp=logp))

    def quantile_gammas(self, batch: RolloutBatch, mini: torch.Tensor) -> dict[str, torch.Tensor]:
        """γ per kind of token whose surrogate takes it from a quantile of the ratio over the mini-batch."""
        gammas: dict[str, torch.Tensor] = {}
        kind = batch.kind[mini]
        for k, name in enumerate(TOKEN_KINDS):
            q = getattr(self.cfg.algorithm.surrogate, name).gamma_quantile
            rows = mini[kind == k]
            if q is None or len(rows) == 0:
                continue
            ratios = []
            for micro in rows.split(self.cfg.optim.micro_batch_size):
                mb = batch.select(micro).to(self.precision.device)
                logp = self.forward(mb, grad=False)[0]
                mask = mb.rollouts.response_mask.bool()
                ratios.append(ratio_of(logp, mb.rollouts.behaviour_logp)[mask])
            values = torch.cat(ratios)
            gammas[name] = quantile_gamma(values, torch.ones_like(values, dtype=torch.bool), q)
        return gammas
