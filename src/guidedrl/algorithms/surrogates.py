"""Per-token policy-gradient surrogates, registered by name and chosen per kind of token by the config.

Each maps (log π_θ, behaviour log-prob, advantage, response mask) on B×R response positions to a B×R token
loss and a B×R bool of where a clip is the active branch (the mask lets a surrogate work per sequence). On teacher
rows the behaviour log-prob is 0, so the ratio is π_θ itself (LUFFY); on hinted rows it is π_θ(o|q) / π_old(o|q,h)
(Guide).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from guidedrl.registry import SURROGATES

LOG_RATIO_CLAMP = 20.0  # |log ρ| bound before exp (verl's convention), so the ratio never overflows
GAMMA_FLOOR = 1e-4  # the smallest γ a quantile may give (Guide's code)


@dataclass(frozen=True)
class SurrogateParams:
    """The knobs a surrogate reads: the clip ranges and the shaping γ of its kind of token."""

    eps_low: float = 0.2
    eps_high: float = 0.2
    dual_clip: float | None = None
    gamma: float | Tensor = 0.1
    tau_pos: float = 1.0  # SAPO's gate temperature where A > 0
    tau_neg: float = 1.05  # and where A ≤ 0


def ratio_of(logp: Tensor, behaviour_logp: Tensor) -> Tensor:
    """Importance ratio exp(logp − behaviour_logp), the log difference clamped to ±20 first."""
    return torch.exp((logp - behaviour_logp).clamp(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP))


def shape(ratio: Tensor, gamma: float | Tensor) -> Tensor:
    """Policy shaping f(ρ) = ρ / (ρ + γ) (LUFFY/AMPO/Guide): lifts the gradient of low-ratio tokens."""
    return ratio / (ratio + gamma)


def quantile_gamma(ratio: Tensor, mask: Tensor, q: float) -> Tensor:
    """Guide's γ: the q-quantile of the ratio over the masked tokens only (not padding), detached, ≥ 1e-4."""
    values = ratio.detach()[mask.bool()].float()
    if values.numel() == 0:
        return ratio.new_tensor(GAMMA_FLOOR)
    return torch.quantile(values, q).clamp_min(GAMMA_FLOOR).to(ratio.dtype)


MiniBatchHook = Callable[[Tensor], dict[str, Tensor]]  # the ratios of a mini-batch's tokens -> surrogate params
PREPARES: dict[str, Callable[[Any], MiniBatchHook | None]] = {}


def prepares(name: str) -> Callable[[Callable[[Any], MiniBatchHook | None]], Callable[[Any], MiniBatchHook | None]]:
    """Register, for the surrogate ``name``, what it takes from each mini-batch: a function of its config
    (:class:`~guidedrl.config.SurrogateSpec`) that returns a hook of the ratios of the mini-batch's tokens of its
    kind (every rank's, no padding) giving parameters of :class:`SurrogateParams`, or None when the config asks
    for none (the update then makes no extra forward)."""
    def add(fn: Callable[[Any], MiniBatchHook | None]) -> Callable[[Any], MiniBatchHook | None]:
        PREPARES[name] = fn
        return fn
    return add


def mini_batch_hook(spec: Any) -> MiniBatchHook | None:
    """The hook a surrogate config asks the update for, if any."""
    prepare = PREPARES.get(spec.name)
    return None if prepare is None else prepare(spec)


@SURROGATES.register("clip")
def clip(logp: Tensor, old_logp: Tensor, adv: Tensor, mask: Tensor, p: SurrogateParams) -> tuple[Tensor, Tensor]:
    """PPO's max(−Aρ, −A·clip(ρ, 1−εl, 1+εh)); with ``dual_clip`` c, min(that, −A·c) where A < 0."""
    ratio = ratio_of(logp, old_logp)
    unclipped = -adv * ratio
    clipped = -adv * ratio.clamp(1 - p.eps_low, 1 + p.eps_high)
    loss = torch.maximum(unclipped, clipped)
    active = clipped > unclipped
    if p.dual_clip is not None:
        bound = -adv * p.dual_clip
        dual = (adv < 0) & (loss > bound)
        loss = torch.where(dual, bound, loss)
        active = active | dual
    return loss, active


@SURROGATES.register("plain")
def plain(logp: Tensor, old_logp: Tensor, adv: Tensor, mask: Tensor, p: SurrogateParams) -> tuple[Tensor, Tensor]:
    """−A·ρ without a clip (LUFFY's ``loss_remove_clip`` on on-policy tokens)."""
    return -adv * ratio_of(logp, old_logp), torch.zeros_like(adv, dtype=torch.bool)


@SURROGATES.register("shaped")
def shaped(logp: Tensor, old_logp: Tensor, adv: Tensor, mask: Tensor, p: SurrogateParams) -> tuple[Tensor, Tensor]:
    """−A·f(ρ) with f(ρ) = ρ/(ρ+γ), unclipped (LUFFY/AMPO teacher tokens; Guide's hinted tokens)."""
    return -adv * shape(ratio_of(logp, old_logp), p.gamma), torch.zeros_like(adv, dtype=torch.bool)


@SURROGATES.register("logp")
def logp_weighted(logp: Tensor, old_logp: Tensor, adv: Tensor, mask: Tensor, p: SurrogateParams
                  ) -> tuple[Tensor, Tensor]:
    """−A·log π_θ, no ratio: on teacher rows the teacher tokens' log-likelihood weighted by their advantage, so a
    token's gradient is SFT's times A whatever π_θ (``shaped`` scales it by γπ/(π+γ)², at most 1/4)."""
    return -adv * logp, torch.zeros_like(adv, dtype=torch.bool)


@prepares("shaped")
def shaped_quantile(spec: Any) -> MiniBatchHook | None:
    """Guide: with ``gamma_quantile`` q, γ = the q-quantile of the mini-batch's ratios of the kind."""
    q = spec.gamma_quantile
    if q is None:
        return None
    return lambda ratios: {"gamma": quantile_gamma(ratios, torch.ones_like(ratios, dtype=torch.bool), q)}


def sequence_ratio(logp: Tensor, old_logp: Tensor, mask: Tensor) -> Tensor:
    """GSPO's s_i = exp(mean over the row's tokens of log ρ_t), B×1, carried on every token with the gradient
    of the token's own log-prob: its value is the row's, its gradient s_i·∇log π_θ(o_t) (GSPO-token)."""
    m = mask.to(logp.dtype)
    mean_log = ((logp - old_logp) * m).sum(-1, keepdim=True) / m.sum(-1, keepdim=True).clamp_min(1)
    return torch.exp(mean_log.detach().clamp(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP) + logp - logp.detach())


@SURROGATES.register("gspo")
def gspo(logp: Tensor, old_logp: Tensor, adv: Tensor, mask: Tensor, p: SurrogateParams) -> tuple[Tensor, Tensor]:
    """GSPO: PPO's clipped surrogate on the row's sequence ratio (``sequence_ratio``), ε ≈ 3e-4 / 4e-4; with
    ``agg_mode: seq-mean-token-mean`` the loss is GSPO's mean over rows of −min(s·A, clip(s)·A)."""
    ratio = sequence_ratio(logp, old_logp, mask)
    unclipped, clipped = -adv * ratio, -adv * ratio.clamp(1 - p.eps_low, 1 + p.eps_high)
    return torch.maximum(unclipped, clipped), clipped > unclipped


@SURROGATES.register("cispo")
def cispo(logp: Tensor, old_logp: Tensor, adv: Tensor, mask: Tensor, p: SurrogateParams) -> tuple[Tensor, Tensor]:
    """CISPO (MiniMax-M1): −sg(clip(ρ, 1 − ε_low, 1 + ε_high))·A·log π_θ: the importance weight is clipped and
    detached, so every token keeps its gradient (none is dropped as PPO's clip drops them)."""
    ratio = ratio_of(logp, old_logp).detach()
    weight = ratio.clamp(1 - p.eps_low, 1 + p.eps_high)
    return -weight * adv * logp, weight != ratio


@SURROGATES.register("sapo")
def sapo(logp: Tensor, old_logp: Tensor, adv: Tensor, mask: Tensor, p: SurrogateParams) -> tuple[Tensor, Tensor]:
    """SAPO: −(4/τ)·σ(τ(ρ − 1))·A, a soft gate in place of the clip (its slope at ρ = 1 is 1, as PPO's), with
    τ = ``tau_pos`` where A > 0 and ``tau_neg`` elsewhere; nothing is clipped."""
    ratio = ratio_of(logp, old_logp)
    tau = torch.where(adv > 0, p.tau_pos, p.tau_neg)
    return -(4 / tau) * torch.sigmoid(tau * (ratio - 1)) * adv, torch.zeros_like(adv, dtype=torch.bool)
