"""``RolloutBatch``: the one structure every method fills a field or two of.

The rollouts hold the *training* context (prompt without any hint, then the response) and the
behaviour log-probs of whoever produced each response; the flags say which rows came from a
teacher or from a hinted re-roll, so a registered loss can treat their tokens differently.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import Tensor

from guidedrl.rollout.engine import Rollouts


@dataclass
class RolloutBatch:
    """Scored rollouts of one step, with per-row provenance."""

    rollouts: Rollouts
    rewards: Tensor  # B float
    correct: Tensor  # B bool: reward above the correctness threshold
    group_index: Tensor  # B long: rows of one prompt share an index
    off_policy: Tensor  # B bool: a teacher's solution (behaviour log-probs are 0, i.e. ratio = π_θ)
    hinted: Tensor  # B bool: sampled with a hint, trained without it
    source: list[str]  # "policy", "hint", or the teacher's name
    teacher_logp: Tensor | None = None  # B×R: a scoring teacher's log-probs of the response tokens (TGPO, RKL)
    teacher_label: Tensor | None = None  # B×R long: the teacher's prediction at each response position
    teacher_topk_ids: Tensor | None = None  # B×R×k long: the teacher's k most likely tokens there (top-k KL)
    teacher_topk_logp: Tensor | None = None  # B×R×k: the teacher's log-probs of those tokens

    @classmethod
    def on_policy(cls, rollouts: Rollouts, rewards: Tensor, correct: Tensor) -> RolloutBatch:
        """A batch straight from the rollout engine: groups are the prompts it sampled."""
        b = rollouts.size
        return cls(rollouts, rewards, correct, rollouts.prompt_index.clone(), torch.zeros(b, dtype=torch.bool),
                   torch.zeros(b, dtype=torch.bool), ["policy"] * b)

    @property
    def size(self) -> int:
        return self.rollouts.size

    def token_mask(self, rows: Tensor) -> Tensor:
        """Broadcast a per-row flag to the response tokens of those rows (B×R bool)."""
        return rows[:, None] & self.rollouts.response_mask.bool()

    def select(self, rows: Tensor) -> RolloutBatch:
        """The given rows, with padding columns no selected row needs trimmed away."""
        idx = rows.tolist()
        rollouts = trim(self.rollouts.select(rows))
        width = rollouts.response_ids.shape[1]
        per_token = [None if t is None else t[rows, :width] for t in
                     (self.teacher_logp, self.teacher_label, self.teacher_topk_ids, self.teacher_topk_logp)]
        return RolloutBatch(rollouts, self.rewards[rows], self.correct[rows], self.group_index[rows],
                            self.off_policy[rows], self.hinted[rows], [self.source[i] for i in idx], *per_token)

    @classmethod
    def concat(cls, parts: list[RolloutBatch], pad_id: int) -> RolloutBatch:
        """Rows of several batches in order (prompts and responses re-padded to common widths); teacher
        scores are taken after guidance has assembled the batch, so parts must not carry them yet."""
        if any(p.teacher_logp is not None for p in parts):
            raise ValueError("concat of batches that already carry teacher scores")
        return cls(Rollouts.concat([p.rollouts for p in parts], pad_id),
                   *(torch.cat([getattr(p, f) for p in parts]) for f in
                     ("rewards", "correct", "group_index", "off_policy", "hinted")),
                   [s for p in parts for s in p.source])

    def group_outcomes(self) -> tuple[float, float]:
        """Shares of groups whose rows are all wrong and all right (no learning signal in either)."""
        groups = torch.unique(self.group_index)
        solved = torch.zeros(int(self.group_index.max()) + 1).index_add_(0, self.group_index, self.correct.float())
        sizes = torch.zeros_like(solved).index_add_(0, self.group_index, torch.ones_like(self.rewards))
        solved, sizes = solved[groups], sizes[groups]
        return (solved == 0).float().mean().item(), (solved == sizes).float().mean().item()


def trim(r: Rollouts) -> Rollouts:
    """Drop prompt columns that are padding in every row (left) and response columns likewise (right)."""
    p_keep = int(r.prompt_mask.sum(1).max())
    r_keep = int(r.response_mask.sum(1).max()) if r.response_mask.numel() else 0
    return replace(r, prompt_ids=r.prompt_ids[:, r.prompt_ids.shape[1] - p_keep:],
                   prompt_mask=r.prompt_mask[:, r.prompt_mask.shape[1] - p_keep:],
                   response_ids=r.response_ids[:, :r_keep], response_mask=r.response_mask[:, :r_keep],
                   behaviour_logp=r.behaviour_logp[:, :r_keep])
