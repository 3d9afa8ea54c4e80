"""``RolloutBatch``: the one structure every method fills a field or two of.

The rollouts hold the *training* context (prompt without any hint, then the response) and the
behaviour log-probs of whoever produced each response; each row's :class:`~guidedrl.rows.RowKind` says
whether it is the student's own, a teacher's or a hinted re-roll, so the loss gives its tokens their own
surrogate. Later stages
add per-token fields: the teacher's predictions, the reference policy's log-probs, the critic's
values and returns, and the advantages.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import Tensor
from transformers import PreTrainedTokenizerBase

from guidedrl.algorithms.advantages import AdvantageInputs
from guidedrl.registry import BATCH_FILTERS
from guidedrl.rewards import Reward, RewardState
from guidedrl.rollout.engine import Rollouts
from guidedrl.rows import Groups, RowKind, kinds_of

ROW_FIELDS = ("rewards", "correct", "group_index", "kind")  # the per-row tensors, in constructor order
PER_TOKEN = ("teacher_logp", "teacher_label", "teacher_topk_ids", "teacher_topk_logp", "old_label_logp",
             "teacher_tokens", "ref_logp", "values", "returns", "sampler_logp", "advantages")


@dataclass
class RolloutBatch:
    """Scored rollouts of one step, with per-row provenance and the per-token fields later stages add."""

    rollouts: Rollouts
    rewards: Tensor  # B float
    correct: Tensor  # B bool: reward above the correctness threshold
    group_index: Tensor  # B long: rows of one prompt share an index
    kind: Tensor  # B long: each row's RowKind
    source: list[str]  # "policy", "hint", or the teacher's name
    teacher_logp: Tensor | None = None  # B×R: a scoring teacher's log-probs of the response tokens (TGPO, RKL)
    teacher_label: Tensor | None = None  # B×R long: the teacher's prediction at each response position
    teacher_topk_ids: Tensor | None = None  # B×R×k long: the teacher's k most likely tokens there (top-k KL)
    teacher_topk_logp: Tensor | None = None  # B×R×k: the teacher's log-probs of those tokens
    old_label_logp: Tensor | None = None  # B×R: the student's log-prob of the teacher's label before the update
    teacher_tokens: Tensor | None = None  # B×R bool: where the label terms apply
    ref_logp: Tensor | None = None  # B×R: the frozen initial policy's log-probs (k3 KL)
    values: Tensor | None = None  # B×R: the critic's values (PPO)
    returns: Tensor | None = None  # B×R: the critic's GAE returns (PPO)
    sampler_logp: Tensor | None = None  # B×R: the sampler's log-probs, kept for the rollout correction when the
    # behaviour log-probs were recomputed by a training forward
    advantages: Tensor | None = None  # B×R: per-token advantages of the update

    @classmethod
    def on_policy(cls, rollouts: Rollouts, rewards: Tensor, correct: Tensor) -> RolloutBatch:
        """A batch straight from the rollout engine: groups are the prompts it sampled."""
        b = rollouts.size
        return cls(rollouts, rewards, correct, rollouts.prompt_index.clone(), kinds_of(b, RowKind.POLICY),
                   ["policy"] * b)

    @property
    def size(self) -> int:
        return self.rollouts.size

    def rows_of(self, kind: RowKind) -> Tensor:
        """B bool: the rows of one kind."""
        return self.kind == kind

    def to(self, device: torch.device | str) -> RolloutBatch:
        """The same batch with every tensor on ``device``."""
        tensors = {f: getattr(self, f).to(device) for f in ROW_FIELDS}
        per_token = {f: None if getattr(self, f) is None else getattr(self, f).to(device) for f in PER_TOKEN}
        return replace(self, rollouts=self.rollouts.to(device), **tensors, **per_token)

    def token_mask(self, rows: Tensor) -> Tensor:
        """Broadcast a per-row flag to the response tokens of those rows (B×R bool)."""
        return rows[:, None] & self.rollouts.response_mask.bool()

    def select(self, rows: Tensor) -> RolloutBatch:
        """The given rows, with padding columns no selected row needs trimmed away."""
        idx = rows.tolist()
        rollouts = self.rollouts.select(rows).trimmed()
        width = rollouts.response_ids.shape[1]
        per_token = {f: None if getattr(self, f) is None else getattr(self, f)[rows, :width] for f in PER_TOKEN}
        return RolloutBatch(rollouts, *(getattr(self, f)[rows] for f in ROW_FIELDS), [self.source[i] for i in idx],
                            **per_token)

    @classmethod
    def concat(cls, parts: list[RolloutBatch], pad_id: int) -> RolloutBatch:
        """Rows of several batches in order (prompts and responses re-padded to common widths); per-token
        fields are added after guidance has assembled the batch, so parts must not carry them yet."""
        if any(getattr(p, f) is not None for p in parts for f in PER_TOKEN):
            raise ValueError("concat of batches that already carry per-token fields")
        return cls(Rollouts.concat([p.rollouts for p in parts], pad_id),
                   *(torch.cat([getattr(p, f) for p in parts]) for f in ROW_FIELDS),
                   [s for p in parts for s in p.source])

    def advantage_inputs(self) -> AdvantageInputs:
        """What an advantage estimator may read of this batch."""
        r = self.rollouts
        return AdvantageInputs(rewards=self.rewards, response_mask=r.response_mask, group_index=self.group_index,
                               kind=self.kind, behaviour_logp=r.behaviour_logp, teacher_logp=self.teacher_logp,
                               old_label_logp=self.old_label_logp, teacher_tokens=self.teacher_tokens,
                               values=self.values, returns=self.returns)

    def group_outcomes(self) -> tuple[float, float]:
        """Shares of groups whose rows are all wrong and all right (no learning signal in either)."""
        groups = Groups.of(self.group_index)
        solved = groups.count(self.correct)
        return (solved == 0).float().mean().item(), (solved == groups.sizes).float().mean().item()


def reward_rollouts(rollouts: Rollouts, rows: list[dict], reward: Reward, tokenizer: PreTrainedTokenizerBase,
                    correct_threshold: float, state: RewardState) -> tuple[RolloutBatch, dict[str, float]]:
    """The engine's rollouts of ``rows`` (one row per prompt, ``n`` rollouts each) as a scored batch, and the
    reward metrics: mean reward, shares of all-wrong and all-right groups, each reward function's mean."""
    n = rollouts.size // len(rows)
    lengths = rollouts.response_lengths.tolist()
    ids = [seq[:k] for seq, k in zip(rollouts.response_ids.tolist(), lengths)]
    rewards, stats = reward([row for row in rows for _ in range(n)], rollouts.response_texts(tokenizer), ids, state)
    batch = RolloutBatch.on_policy(rollouts, rewards, rewards > correct_threshold)
    all_wrong, all_right = batch.group_outcomes()
    return batch, {"reward": rewards.mean().item(), "all_wrong": all_wrong, "all_right": all_right, **stats}


def filter_batch(batch: RolloutBatch, names: list[str]) -> tuple[RolloutBatch | None, dict[str, float]]:
    """The rows every named batch filter keeps (None when none is left), and the share dropped."""
    if not names:
        return batch, {}
    keep = torch.ones(batch.size, dtype=torch.bool)
    for name in names:
        keep &= BATCH_FILTERS.get(name)(batch.rewards, batch.group_index)
    return ((batch.select(keep.nonzero().squeeze(1)) if keep.any() else None),
            {"filtered_rows": 1.0 - keep.float().mean().item()})


def first_groups(batch: RolloutBatch, rows: list[dict], count: int) -> tuple[RolloutBatch, list[dict]]:
    """The rows of the batch's ``count`` lowest-numbered groups, renumbered 0, 1, … in order, and their data rows
    (``rows[g]`` is group g's)."""
    ids = torch.unique(batch.group_index)[:count]
    kept = batch.select(torch.isin(batch.group_index, ids).nonzero().squeeze(1))
    return replace(kept, group_index=torch.searchsorted(ids, kept.group_index)), [rows[g] for g in ids.tolist()]
