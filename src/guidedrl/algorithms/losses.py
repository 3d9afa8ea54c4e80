"""Policy losses: token-level surrogates, policy shaping, regularizers and aggregation, registered by name.

Layout: per-token tensors are B×R over the response positions only, with ``response_mask`` marking the
real tokens. Every function is pure (tensors in, tensors out); a registered loss maps
(``LossInputs``, ``LossSettings``) to a scalar loss and a dict of float statistics.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

AGG_MODES = ("token-mean", "seq-mean-token-mean", "seq-mean-token-sum", "seq-mean-token-sum-norm")
LOG_RATIO_CLAMP = 20.0  # |log ρ| bound before exp (verl's convention), so the ratio never overflows
KL_CLAMP = 10.0  # bound of the k3 KL per token (verl's convention)


# ---- aggregation ---------------------------------------------------------------------------------------
def aggregate(loss_mat: Tensor, mask: Tensor, mode: str, norm_length: int | None = None) -> Tensor:
    """Reduce a B×R token-loss matrix to a scalar over ``mask``'s tokens; an empty mask gives 0 (with grad).

    ``token-mean``: mean over all masked tokens. ``seq-mean-token-mean``: each row's token mean, then the
    mean over rows with ≥1 token (original GRPO). ``seq-mean-token-sum``: each row's token sum, then that
    row mean. ``seq-mean-token-sum-norm`` (Dr.GRPO): each row's sum / ``norm_length`` (default R), then
    that row mean.
    """
    m = mask.to(loss_mat.dtype)
    masked = loss_mat * m
    if mode == "token-mean":
        return masked.sum() / m.sum().clamp_min(1)
    if mode not in AGG_MODES:
        raise ValueError(f"unknown aggregation mode {mode!r}; expected one of {', '.join(AGG_MODES)}")
    tokens = m.sum(-1)
    row_sums = masked.sum(-1)
    if mode == "seq-mean-token-mean":
        per_row = row_sums / tokens.clamp_min(1)
    elif mode == "seq-mean-token-sum":
        per_row = row_sums
    else:
        per_row = row_sums / (norm_length or mask.shape[-1])
    return per_row.sum() / (tokens > 0).sum().clamp_min(1)


# ---- token losses ----------------------------------------------------------------------------------------
def ratio_of(logp: Tensor, behaviour_logp: Tensor) -> Tensor:
    """Importance ratio exp(logp − behaviour_logp), the log difference clamped to ±20 first."""
    return torch.exp((logp - behaviour_logp).clamp(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP))


def clipped_surrogate(logp: Tensor, old_logp: Tensor, adv: Tensor, eps_low: float, eps_high: float,
                      dual_clip: float | None = None) -> tuple[Tensor, Tensor]:
    """PPO's per-token max(−Aρ, −A·clip(ρ, 1−εl, 1+εh)); with ``dual_clip`` c, min(that, −A·c) where A < 0.

    Returns (loss B×R, bool B×R: where a clipped branch, the ε clip or the dual clip, is the active one).
    """
    ratio = ratio_of(logp, old_logp)
    unclipped = -adv * ratio
    clipped = -adv * ratio.clamp(1 - eps_low, 1 + eps_high)
    loss = torch.maximum(unclipped, clipped)
    clipped_mask = clipped > unclipped
    if dual_clip is not None:
        bound = -adv * dual_clip
        dual = (adv < 0) & (loss > bound)
        loss = torch.where(dual, bound, loss)
        clipped_mask = clipped_mask | dual
    return loss, clipped_mask


def shape(ratio: Tensor, gamma: float | Tensor) -> Tensor:
    """Policy shaping f(ρ) = ρ / (ρ + γ) (LUFFY/AMPO/Guide): lifts the gradient of low-ratio tokens."""
    return ratio / (ratio + gamma)


def percentile_gamma(ratio: Tensor, mask: Tensor, q: float = 0.9, floor: float = 1e-4) -> Tensor:
    """Guide's γ: the q-quantile of the ratio over the masked tokens only (not padding), detached, ≥ floor."""
    values = ratio.detach()[mask.bool()].float()
    if values.numel() == 0:
        return ratio.new_tensor(floor)
    return torch.quantile(values, q).clamp_min(floor).to(ratio.dtype)


# ---- regularizers (B×R per-token matrices, to aggregate) -------------------------------------------------
def k3_kl(logp: Tensor, ref_logp: Tensor) -> Tensor:
    """k3 estimator of KL(π_θ‖π_ref): exp(d) − d − 1 with d = ref − logp, clamped to [−10, 10] (d to ±20)."""
    d = (ref_logp - logp).clamp(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)
    return (torch.exp(d) - d - 1).clamp(-KL_CLAMP, KL_CLAMP)


def k2_kl(logp: Tensor, teacher_logp: Tensor) -> Tensor:
    """KDRL's k2 term ½ (teacher_logp − logp)², the gradient through the student's ``logp`` only."""
    return 0.5 * (teacher_logp.detach() - logp) ** 2


def label_ce(label_logp: Tensor) -> Tensor:
    """TGPO's cross-entropy on the teacher's label: −log π_θ(ŷ_t)."""
    return -label_logp


def topk_forward_kl(topk_logp: Tensor, teacher_topk_logp: Tensor) -> Tensor:
    """Forward KL from the teacher's top-k distribution (renormalized over its k tokens) to the student:
    Σ_j p̃_T(v_j) (log p̃_T(v_j) − log π_θ(v_j)) over the last dimension (B×R×k → B×R); ≥ 0, the TGPO
    ablation that replaces the hard label by the teacher's k best tokens."""
    teacher = torch.log_softmax(teacher_topk_logp.detach().float(), -1)
    return (teacher.exp() * (teacher - topk_logp)).sum(-1)


TEACHER_TOKENS = ("all", "disagree", "high_entropy", "low_entropy")


def teacher_token_mask(kind: str, mask: Tensor, tokens: Tensor | None = None, label: Tensor | None = None,
                       entropy: Tensor | None = None, share: float = 0.2) -> Tensor:
    """Tokens TGPO's teacher term applies to (B×R bool): every response token, those where the sampled token
    differs from the teacher's label, or each row's ``share`` of tokens with the highest / lowest entropy."""
    m = mask.bool()
    if kind == "all":
        return m
    if kind == "disagree":
        return m & (tokens != label)
    if kind not in TEACHER_TOKENS:
        raise ValueError(f"unknown teacher token set {kind!r}; expected one of {', '.join(TEACHER_TOKENS)}")
    ent = entropy.detach().float().masked_fill(~m, float("nan"))
    if kind == "high_entropy":
        return m & (ent >= torch.nanquantile(ent, 1.0 - share, dim=-1, keepdim=True))
    return m & (ent <= torch.nanquantile(ent, share, dim=-1, keepdim=True))


def plus_label_bonus(advantages: Tensor, label_logp: Tensor, coef: float, mask: Tensor) -> Tensor:
    """TGPO-Adv: A_t + λ·π_old(ŷ_t), the student's own (detached) probability of the teacher's label added
    to the advantage of the token it sampled at that position, on the tokens of ``mask``."""
    return advantages + coef * label_logp.detach().exp() * mask


# ---- diagnostics -----------------------------------------------------------------------------------------
def mismatch_ratio(teacher_argmax: Tensor, tokens: Tensor, mask: Tensor) -> float:
    """Share of masked tokens where the teacher's argmax differs from the sampled token (TGPO's gap measure)."""
    m = mask.bool()
    return float(((teacher_argmax != tokens) & m).sum()) / max(int(m.sum()), 1)


def mean_reverse_kl(logp: Tensor, teacher_logp: Tensor, mask: Tensor) -> float:
    """k1 estimate of the reverse KL to the teacher: masked mean of logp − teacher_logp over sampled tokens."""
    m = mask.to(logp.dtype)
    return float(((logp - teacher_logp).detach() * m).sum() / m.sum().clamp_min(1))


# ---- registered policy losses ----------------------------------------------------------------------------
@dataclass(frozen=True)
class LossInputs:
    """One micro-batch as a loss sees it; B×R tensors over the response positions."""

    logp: Tensor  # log π_θ of the response tokens in the training (hint-free) context; has grad
    behaviour_logp: Tensor  # log-probs of the sampling policy; 0 on teacher tokens (ratio = π_θ, as LUFFY)
    advantages: Tensor
    response_mask: Tensor
    off_policy_mask: Tensor | None = None  # bool: tokens of a teacher's solution
    hint_mask: Tensor | None = None  # bool: tokens of rows sampled with a hint, trained without it
    entropy: Tensor | None = None  # per-token entropy of π_θ
    ref_logp: Tensor | None = None  # log π_ref, for the k3 KL
    teacher_logp: Tensor | None = None  # log π_T of the sampled tokens, for KDRL's k2
    label_logp: Tensor | None = None  # log π_θ of the teacher's label ŷ_t, for TGPO's CE and TGPO-Adv's bonus
    topk_logp: Tensor | None = None  # B×R×k: log π_θ of the teacher's top-k tokens, for the top-k forward KL
    teacher_topk_logp: Tensor | None = None  # B×R×k: the teacher's log-probs of those tokens
    teacher_tokens: Tensor | None = None  # B×R bool: where TGPO's teacher term applies (None = every response token)


@dataclass(frozen=True)
class LossSettings:
    """Knobs of the policy losses; the defaults are GRPO's with every regularizer off."""

    eps_low: float = 0.2  # lower clip range: ρ ≥ 1 − eps_low
    eps_high: float = 0.2  # upper clip range: ρ ≤ 1 + eps_high (DAPO's clip-higher sets it larger)
    dual_clip: float | None = None  # c (3..10) caps −A·ρ at −A·c where A < 0; None = off
    agg_mode: str = "token-mean"  # one of AGG_MODES
    norm_length: int | None = None  # Dr.GRPO's constant divisor; None = the padded width R
    off_policy_gamma: float = 0.1  # γ of f(π_θ) = π_θ / (π_θ + γ) on teacher tokens (LUFFY/AMPO)
    hint_shaping: str = "percentile"  # hinted tokens: "percentile" (Guide), "constant" (γ = hint_gamma), "clip"
    hint_gamma: float = 0.1  # γ when hint_shaping is "constant"
    hint_percentile: float = 0.9  # q of the ratio quantile used as γ when hint_shaping is "percentile"
    on_policy_clip: bool = True  # False = LUFFY's loss_remove_clip: plain −A·ρ on on-policy tokens
    entropy_coef: float = 0.0  # entropy bonus (subtracted)
    kl_coef: float = 0.0  # β of the k3 KL to the reference
    kdrl_coef: float = 0.0  # β of KDRL's k2 term to the teacher
    label_ce_coef: float = 0.0  # λ_k of TGPO's CE on the teacher's label
    topk_kl_coef: float = 0.0  # λ_k of the forward KL to the teacher's top-k distribution (TGPO ablation)
    label_bonus_coef: float = 0.0  # λ_k of TGPO-Adv's π_old(ŷ_t) added to the advantages
    reg_agg_mode: str | None = None  # aggregation of the regularizers; None = agg_mode (AMPO's code: token-mean)


PolicyLossFn = Callable[[LossInputs, LossSettings], tuple[Tensor, dict[str, float]]]
POLICY_LOSSES: dict[str, PolicyLossFn] = {}
HINT_SHAPINGS = ("percentile", "constant", "clip")


def register_policy_loss(name: str) -> Callable[[PolicyLossFn], PolicyLossFn]:
    """Decorator adding a loss to ``POLICY_LOSSES`` under ``name`` (the config's ``algorithm.loss``)."""
    def add(fn: PolicyLossFn) -> PolicyLossFn:
        if name in POLICY_LOSSES:
            raise ValueError(f"policy loss {name!r} is already registered")
        POLICY_LOSSES[name] = fn
        return fn
    return add


def _masked_mean(values: Tensor, mask: Tensor) -> float | None:
    """Mean of ``values`` over ``mask`` as a float, or None when the mask is empty (the stat is then left out)."""
    n = int(mask.sum())
    return float((values.detach() * mask).sum()) / n if n else None


def _regularizers(x: LossInputs, s: LossSettings) -> tuple[Tensor, dict[str, float]]:
    """Σ coef·aggregate(term) over entropy (as a bonus), k3 KL, k2 KDRL and TGPO's teacher term, plus each available
    term's value. The teacher term is zero outside ``teacher_tokens`` and still averaged over all response tokens."""
    teacher_only = 1.0 if x.teacher_tokens is None else x.teacher_tokens.to(x.logp.dtype)
    terms = (  # stat name, coefficient (sign included), the LossInputs field it needs, its B×R matrix
        ("entropy", -s.entropy_coef, "entropy", lambda v: v),
        ("kl", s.kl_coef, "ref_logp", lambda v: k3_kl(x.logp, v)),
        ("kdrl", s.kdrl_coef, "teacher_logp", lambda v: k2_kl(x.logp, v)),
        ("label_ce", s.label_ce_coef, "label_logp", lambda v: label_ce(v) * teacher_only),
        ("topk_kl", s.topk_kl_coef, "topk_logp", lambda v: topk_forward_kl(v, x.teacher_topk_logp) * teacher_only),
    )
    mode = s.reg_agg_mode or s.agg_mode
    total = x.logp.new_zeros(())
    stats: dict[str, float] = {}
    for name, coef, field, matrix in terms:
        given = getattr(x, field)
        if given is None:
            if coef != 0:
                raise ValueError(f"the {name} coefficient is {abs(coef)} but LossInputs.{field} is missing")
            continue
        value = aggregate(matrix(given), x.response_mask, mode, s.norm_length)
        stats[name] = float(value.detach())
        if coef != 0:
            total = total + coef * value
    return total, stats


@register_policy_loss("mixed")
def mixed(x: LossInputs, s: LossSettings) -> tuple[Tensor, dict[str, float]]:
    """One loss for on-policy, teacher (LUFFY/AMPO) and hinted (Guide) tokens, aggregated once, plus regularizers.

    On-policy tokens: clipped surrogate (plain −A·ρ if ``on_policy_clip`` is False). Teacher tokens:
    −A·f(ρ) with γ = ``off_policy_gamma``, unclipped; the trainer passes behaviour_logp = 0 there, so
    ρ = π_θ as in LUFFY. Hinted tokens: ρ = π_θ(o|q) / π_old(o|q,h) from the hint-free ``logp`` over the
    hinted ``behaviour_logp``, then f(ρ) with γ = the ``hint_percentile`` quantile of ρ over the hinted
    tokens ("percentile"), γ = ``hint_gamma`` ("constant"), or the clipped surrogate ("clip").
    With ``label_bonus_coef`` (TGPO-Adv) the advantages of the student's own (on-policy) tokens first get
    λ·π(ŷ_t) from the detached ``label_logp``, which is π_old's when the trainer makes one optimizer update
    per step (it requires that); teacher and hinted tokens get no bonus.
    """
    if s.hint_shaping not in HINT_SHAPINGS:
        raise ValueError(f"unknown hint_shaping {s.hint_shaping!r}; expected one of {', '.join(HINT_SHAPINGS)}")
    mask = x.response_mask.bool()
    none = torch.zeros_like(mask)
    off = mask & (none if x.off_policy_mask is None else x.off_policy_mask.bool())
    hint = mask & (none if x.hint_mask is None else x.hint_mask.bool())
    if (off & hint).any():
        raise ValueError("a token cannot be both off-policy (teacher) and hinted")
    on = mask & ~off & ~hint
    adv = x.advantages.detach()
    if s.label_bonus_coef:
        if x.label_logp is None:
            raise ValueError(f"the label bonus coefficient is {s.label_bonus_coef} but LossInputs.label_logp is missing")
        adv = plus_label_bonus(adv, x.label_logp, s.label_bonus_coef,
                               on if x.teacher_tokens is None else on & x.teacher_tokens.bool())
    ratio = ratio_of(x.logp, x.behaviour_logp)
    clipped, clipped_mask = clipped_surrogate(x.logp, x.behaviour_logp, adv, s.eps_low, s.eps_high, s.dual_clip)
    on_loss = clipped if s.on_policy_clip else -adv * ratio
    off_loss = -adv * shape(ratio, s.off_policy_gamma)
    hint_gamma = percentile_gamma(ratio, hint, s.hint_percentile) if s.hint_shaping == "percentile" else s.hint_gamma
    hint_loss = clipped if s.hint_shaping == "clip" else -adv * shape(ratio, hint_gamma)
    loss_mat = torch.where(off, off_loss, torch.where(hint, hint_loss, on_loss))
    pg_loss = aggregate(loss_mat, mask, s.agg_mode, s.norm_length)
    reg_loss, stats = _regularizers(x, s)
    stats["pg_loss"] = float(pg_loss.detach())
    available = {
        "clip_frac": _masked_mean((clipped_mask if s.on_policy_clip else none).float(), on),
        "ratio_mean": _masked_mean(ratio, on),
        "off_policy_prob_mean": _masked_mean(ratio, off),
        "hint_ratio_mean": _masked_mean(ratio, hint),
        "hint_gamma": float(hint_gamma) if hint.any() and s.hint_shaping != "clip" else None,
    }
    stats.update({k: v for k, v in available.items() if v is not None})
    return pg_loss + reg_loss, stats


@register_policy_loss("vanilla")
def vanilla(x: LossInputs, s: LossSettings) -> tuple[Tensor, dict[str, float]]:
    """GRPO/PPO: the clipped surrogate on every response token, plus regularizers; refuses teacher or hinted tokens.

    Exactly ``mixed`` without masks, so ``on_policy_clip=False`` (LUFFY's unclipped −A·ρ) applies here too.
    """
    for name, m in (("off_policy_mask", x.off_policy_mask), ("hint_mask", x.hint_mask)):
        if m is not None and bool(m.any()):
            raise ValueError(f"loss 'vanilla' got tokens in {name}; use loss 'mixed' for teacher or hinted rows")
    return mixed(x, s)


def value_loss(values: Tensor, old_values: Tensor, returns: Tensor, mask: Tensor, clip: float | None,
               agg_mode: str = "token-mean") -> Tensor:
    """PPO critic loss ½·max((v − R)², (clip(v, v_old ± clip) − R)²), aggregated over ``mask``."""
    loss = (values - returns) ** 2
    if clip is not None:
        clipped = old_values + (values - old_values).clamp(-clip, clip)
        loss = torch.maximum(loss, (clipped - returns) ** 2)
    return aggregate(0.5 * loss, mask, agg_mode)
