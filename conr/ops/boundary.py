"""Near-boundary samples and their progressive relaxation (spec 4b, 4c).

A sample whose feature lies nearly as close to another cluster's centre as to
its own is likely mis-assigned; CoNR drops the anchors with the largest ratio
own-distance / nearest-other-distance from the group loss, and lets the kept
fraction grow linearly from fr0 to 1 after stage 2 starts.
"""
from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["boundary_ratio", "relaxed_fraction", "keep_mask", "assignment_confidence"]

RATIO_VARIANTS = ("code", "paper")
KEEP_RULES = ("code", "paper")


def boundary_ratio(feats: Tensor, centers: Tensor, labels: Tensor, variant: str = "code") -> Tensor:
    """Per-sample boundary ratio; larger means closer to a cluster boundary.

    Args:
        feats: [B, D] features (CoNR uses the L2-normalised target features).
        centers: [K, D] cluster centres (k-means means, not re-normalised), K >= 2.
        labels: [B] cluster index of each sample in ``centers``.
        variant: ``"code"`` gives d_own / d_next (official code); ``"paper"`` gives
            1 - (d_next - d_own) / max(d_own, d_next) (paper Eq. 11). Both order
            samples the same way, so the filter they drive is identical.
    """
    if variant not in RATIO_VARIANTS:
        raise ValueError(f"unknown boundary ratio variant {variant!r}; choose one of {RATIO_VARIANTS}")
    if centers.dim() != 2 or centers.shape[0] < 2:
        raise ValueError(f"centers must be [K, D] with K >= 2 clusters; got shape {tuple(centers.shape)}")
    if feats.dim() != 2 or feats.shape[1] != centers.shape[1]:
        raise ValueError(f"feats {tuple(feats.shape)} and centers {tuple(centers.shape)} must share D")
    labels = labels.long().view(-1, 1)
    if labels.shape[0] != feats.shape[0]:
        raise ValueError(f"{labels.shape[0]} labels for {feats.shape[0]} samples")

    dists = torch.cdist(feats.float(), centers.float())  # [B, K]
    own = dists.gather(1, labels).squeeze(1)
    nearest_other = dists.scatter(1, labels, float("inf")).min(dim=1).values
    if variant == "code":
        return own / nearest_other
    return 1.0 - (nearest_other - own) / torch.maximum(own, nearest_other)


def relaxed_fraction(epoch: int, t0: int, t_end: int, fr0: float) -> float:
    """Fraction of anchors kept at ``epoch`` (1-based, stage 2 starts at t0 + 1).

    fr(t) = fr0 + (1 - fr0) (t - t0) / (t_end - t0), capped at 1; ``t_end <= t0``
    means no relaxation window, i.e. everything is relaxed at once.
    """
    if not 0.0 <= fr0 <= 1.0:
        raise ValueError(f"fr0={fr0} must lie in [0, 1]")
    if t_end <= t0:
        return 1.0
    frac = fr0 + (1.0 - fr0) * (epoch - t0) / (t_end - t0)
    return float(min(1.0, max(fr0, frac)))


def keep_mask(ratios: Tensor, fraction: float, rule: str = "code") -> Tensor:
    """Boolean mask of the anchors kept by the boundary filter.

    ``rule="code"`` (default, official code): the cut is the ⌊fraction·B⌋-th
    smallest ratio and anchors strictly below it are kept, so even at fraction 1
    the largest ratio (and any tie at the cut) is dropped.
    ``rule="paper"``: exactly the ⌊fraction·B⌋ smallest ratios are kept (ties
    broken by position), so fraction 1 keeps everybody.
    """
    if rule not in KEEP_RULES:
        raise ValueError(f"unknown keep rule {rule!r}; choose one of {KEEP_RULES}")
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction={fraction} must lie in [0, 1]")
    if ratios.dim() != 1:
        raise ValueError(f"ratios must be a 1-D tensor; got shape {tuple(ratios.shape)}")
    batch = ratios.shape[0]
    n_keep = int(fraction * batch)  # the official code's int(), i.e. ⌊fraction·B⌋ in floating point
    if n_keep == 0:
        return torch.zeros_like(ratios, dtype=torch.bool)
    if rule == "code":
        cut = ratios.kthvalue(n_keep).values
        return ratios < cut
    order = torch.sort(ratios, stable=True).indices
    mask = torch.zeros_like(ratios, dtype=torch.bool)
    mask[order[:n_keep]] = True
    return mask


def assignment_confidence(feats: Tensor, centers: Tensor, labels: Tensor) -> Tensor:
    """How clearly each sample belongs to its cluster, in [0, 1]: 1 - d_own / d_next
    (Euclidean distances to the own centre and to the nearest other one), so 1 at the
    own centre, 0 half-way to (or beyond) the nearest other centre."""
    ratio = boundary_ratio(feats, centers, labels, "code")
    return (1.0 - ratio).clamp(0.0, 1.0)
