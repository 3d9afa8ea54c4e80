"""PPO's critic, a stage of its own: a separate value model (the policy's body, initialized from its weights,
plus a scalar head) that scores the *hint-free* training context. It owns γ and λ: before the update it adds
its values and their GAE returns to the batch (GAE once per step; the ``gae`` advantage reads both), after the
update it fits itself to those returns with value clipping, and it saves and loads its own state."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import torch
from torch import Tensor, nn
from transformers import AutoModel

from guidedrl.algorithms.advantages import gae
from guidedrl.algorithms.losses import value_loss
from guidedrl.batch import RolloutBatch
from guidedrl.config import CriticConfig
from guidedrl.memory.plan import pretrained_kwargs
from guidedrl.precision import Precision
from guidedrl.rollout.budget import ForwardBudget
from guidedrl.rollout.engine import Rollouts
from guidedrl.rollout.forward import position_ids_from_mask


class Critic(nn.Module):
    """V(prompt, response[:t]) for every response position t, from the policy's architecture."""

    def __init__(self, policy_path: str, cfg: CriticConfig, precision: Precision | None = None,
                 budget: ForwardBudget | None = None, overrides: dict | None = None) -> None:
        super().__init__()
        self.cfg, self.precision, self.budget = cfg, precision or Precision(), budget or ForwardBudget()
        dtype = self.precision.weights_dtype
        self.body = AutoModel.from_pretrained(policy_path, dtype=dtype,
                                              **pretrained_kwargs(policy_path, overrides or {}))
        self.head = nn.Linear(self.body.config.hidden_size, 1, dtype=dtype)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)
        self.to(self.precision.device)
        self.optimizer = torch.optim.AdamW(self.parameters(), lr=cfg.lr, weight_decay=0.0)

    def forward(self, rollouts: Rollouts) -> Tensor:
        """Values (B×R, on the critic's device): position t holds the value of the state before response token t."""
        r = rollouts.to(self.precision.device)
        with self.precision.autocast():
            hidden = self.body(input_ids=r.input_ids, attention_mask=r.attention_mask,
                               position_ids=position_ids_from_mask(r.attention_mask), use_cache=False).last_hidden_state
            start = r.prompt_width - 1
            values = self.head(hidden[:, start:start + r.response_ids.shape[1]]).squeeze(-1).float()
        return values * r.response_mask

    @torch.no_grad()
    def values(self, rollouts: Rollouts) -> Tensor:
        """The critic's current estimates on the CPU, without gradients (the 'old' values of this step), forward
        by forward within the token budget."""
        self.eval()
        return self.budget.per_token(rollouts, lambda part, rows: self(part))[0] * rollouts.response_mask

    def score(self, batch: RolloutBatch) -> RolloutBatch:
        """The batch with the critic's current values and their GAE(γ, λ) returns (advantages + values)."""
        values = self.values(batch.rollouts)
        _, returns = gae(batch.rewards, values, batch.rollouts.response_mask, self.cfg.gamma, self.cfg.lam)
        return replace(batch, values=values, returns=returns)

    def update(self, batch: RolloutBatch) -> dict[str, float]:
        """Fit the critic to the returns :meth:`score` added to a step's batch."""
        return self.fit(batch.rollouts, batch.values, batch.returns)

    def fit(self, rollouts: Rollouts, old_values: Tensor, returns: Tensor) -> dict[str, float]:
        """One pass of value regression on ``returns``, accumulated over the budget's micro-batches (token-mean)."""
        total = float(rollouts.response_mask.sum()) or 1.0
        self.train()
        self.optimizer.zero_grad(set_to_none=True)
        loss_sum = 0.0
        device = self.precision.device
        for rows in self.budget.cuts(rollouts):
            part = rollouts.select(rows).trimmed()
            width = part.response_ids.shape[1]
            share = float(part.response_mask.sum()) / total
            loss = value_loss(self(part), old_values[rows, :width].to(device), returns[rows, :width].to(device),
                              part.response_mask.to(device), self.cfg.value_clip)
            (loss * share).backward()
            loss_sum += share * float(loss.detach())
        norm = torch.nn.utils.clip_grad_norm_(self.parameters(), self.cfg.grad_clip)
        self.optimizer.step()
        self.eval()
        mask = rollouts.response_mask.bool()
        return {"critic/value_loss": loss_sum, "critic/grad_norm": float(norm),
                "critic/value_mean": float(old_values[mask].mean()) if mask.any() else 0.0,
                "critic/return_mean": float(returns[mask].mean()) if mask.any() else 0.0}

    def checkpoint_state(self) -> dict[str, Any]:
        """What a checkpoint keeps of the critic: its weights and its optimizer."""
        return {"critic": self.state_dict(), "critic_optimizer": self.optimizer.state_dict()}

    def load_checkpoint_state(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`checkpoint_state` kept."""
        self.load_state_dict(state["critic"])
        self.optimizer.load_state_dict(state["critic_optimizer"])
