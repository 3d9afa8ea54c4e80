"""Regularizers, registered by name: each maps a micro-batch's :class:`LossInputs` to a B×R token matrix that
the policy loss aggregates and adds with its (scheduled) coefficient. Pure functions.

``needs`` names the inputs a regularizer reads, so the trainer computes them only when one is configured.
"""

from __future__ import annotations

import torch
from torch import Tensor

from guidedrl.algorithms.losses import LossInputs
from guidedrl.algorithms.surrogates import LOG_RATIO_CLAMP
from guidedrl.registry import REGULARIZERS

KL_CLAMP = 10.0  # bound of the k3 KL per token (verl's convention)


def k3_kl(logp: Tensor, ref_logp: Tensor) -> Tensor:
    """k3 estimator of KL(π_θ‖π_ref): exp(d) − d − 1 with d = ref − logp, clamped to [−10, 10] (d to ±20)."""
    d = (ref_logp - logp).clamp(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)
    return (torch.exp(d) - d - 1).clamp(-KL_CLAMP, KL_CLAMP)


def k2_kl(logp: Tensor, teacher_logp: Tensor) -> Tensor:
    """KDRL's k2 term ½ (teacher_logp − logp)², the gradient through the student's ``logp`` only."""
    return 0.5 * (teacher_logp.detach() - logp) ** 2


def topk_forward_kl(topk_logp: Tensor, teacher_topk_logp: Tensor) -> Tensor:
    """Forward KL from the teacher's top-k distribution (renormalized over its k tokens) to the student:
    Σ_j p̃_T(v_j) (log p̃_T(v_j) − log π_θ(v_j)) over the last dimension (B×R×k → B×R); ≥ 0."""
    teacher = torch.log_softmax(teacher_topk_logp.detach().float(), -1)
    return (teacher.exp() * (teacher - topk_logp)).sum(-1)


def _on_teacher_tokens(matrix: Tensor, x: LossInputs) -> Tensor:
    """Zero outside ``teacher_tokens`` (still averaged over every response token, as TGPO's code)."""
    return matrix if x.teacher_tokens is None else matrix * x.teacher_tokens.to(matrix.dtype)


@REGULARIZERS.register("entropy", needs={"entropy"})
def entropy_bonus(x: LossInputs) -> Tensor:
    """−H(π_θ) per token: a positive coefficient is an entropy bonus (AMPO, TGPO: 0.001)."""
    return -x.entropy


@REGULARIZERS.register("kl", needs={"ref_logp"})
def kl_to_reference(x: LossInputs) -> Tensor:
    """k3 KL to the frozen initial policy (GRPO's β term)."""
    return k3_kl(x.logp, x.ref_logp)


@REGULARIZERS.register("kdrl", needs={"teacher_logp"})
def kdrl(x: LossInputs) -> Tensor:
    """KDRL's ½(log π_T − log π_θ)² on the sampled tokens (reverse KL combined with RLVR; authors: 0.002)."""
    return k2_kl(x.logp, x.teacher_logp)


@REGULARIZERS.register("label_ce", needs={"teacher_label", "label_logp", "teacher_tokens"})
def label_ce(x: LossInputs) -> Tensor:
    """TGPO's cross-entropy −log π_θ(ŷ_t) on the teacher's label at each prefix of the student's rollout."""
    return _on_teacher_tokens(-x.label_logp, x)


@REGULARIZERS.register("topk_kl", needs={"teacher_topk", "topk_logp", "teacher_tokens"})
def topk_kl(x: LossInputs) -> Tensor:
    """Forward KL to the teacher's renormalized top-k distribution (TGPO ablation in place of the hard label)."""
    return _on_teacher_tokens(topk_forward_kl(x.topk_logp, x.teacher_topk_logp), x)
