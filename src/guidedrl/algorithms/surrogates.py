"""Per-token policy-gradient surrogates, registered by name and chosen per kind of token by the config.

Each maps (log π_θ, behaviour log-prob, advantage, response mask) on B×R response positions to a B×R token
loss and a B×R bool of where a clip is the active branch (the mask lets a surrogate work per sequence). On teacher rows the behaviour log-prob is 0, so the ratio
is π_θ itself (LUFFY); on hinted rows it is π_θ(o|q) / π_old(o|q,h) (Guide).
"""

from __future__ import annotations

from dataclasses import dataclass

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
