"""HaDis' hardness-aware self-distillation (spec 6): the hardest negative and positive of
every anchor, and a two-logit cross-entropy over them."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .precision import at_least_float32, full_precision

__all__ = ["hsd_mining", "hsd_loss"]


def _pairwise_distance(a: Tensor, b: Tensor) -> Tensor:
    """‖a_i − b_j‖ with a clamped square root (finite gradient at zero distance)."""
    sq = a.square().sum(1, keepdim=True) + b.square().sum(1).unsqueeze(0) - 2.0 * (a @ b.t())
    return sq.clamp_min(1e-12).sqrt()


@full_precision
def hsd_mining(teacher: Tensor, student: Tensor) -> dict[str, Tensor]:
    """Hardest negative / positive of every anchor for HaDis' self-distillation (spec 6).

    With D_t[i, j] = ‖t_i − t_j‖ and D[i, j] = ‖t_i − s_j‖: the negatives of anchor i
    are the j with D_t[i, j] > D[i, i]; the hardest negative is the one nearest in D,
    the hardest positive the farthest in D among all the others (i itself included).

    Returns a dict of [B] tensors: ``an`` / ``ap`` (indices; ``an`` is -1 where the
    anchor has no negative), ``d_an`` / ``d_ap`` (D at them, with gradient),
    ``w_an`` = max(D_t[i, an] − D[i, an], 0) and ``w_ap`` = max(D[i, ap] − D_t[i, ap], 0)
    (no gradient; 0 where there is no negative), and ``has_neg``.
    """
    t = at_least_float32(teacher.detach())
    s = at_least_float32(student).to(t.dtype)
    d_t = _pairwise_distance(t, t)
    d = _pairwise_distance(t, s)
    b = t.shape[0]
    eye = torch.eye(b, dtype=torch.bool, device=t.device)
    neg = (d_t > d.diagonal().detach().unsqueeze(1)) & ~eye
    has_neg = neg.any(dim=1)
    rows = torch.arange(b, device=t.device)
    an = d.detach().masked_fill(~neg, float("inf")).argmin(dim=1)
    ap = d.detach().masked_fill(neg, float("-inf")).argmax(dim=1)
    d_an = d[rows, an] * has_neg.to(d.dtype)
    d_ap = d[rows, ap]
    w_an = ((d_t[rows, an] - d_an.detach()).clamp_min(0.0) * has_neg.to(d.dtype)).detach()
    w_ap = (d_ap.detach() - d_t[rows, ap]).clamp_min(0.0).detach()
    return {"an": torch.where(has_neg, an, torch.full_like(an, -1)), "ap": ap, "d_an": d_an, "d_ap": d_ap,
            "w_an": w_an, "w_ap": w_ap, "has_neg": has_neg}


@full_precision
def hsd_loss(teacher: Tensor, student: Tensor, temperature: float = 0.5) -> Tensor:
    """Hardness-aware self-distillation of HaDis (spec 6): per anchor the logits
    [w_an·D[i,an]/τ, w_ap·D[i,ap]/τ], cross-entropy with target class 0, averaged.

    Args:
        teacher: [B, D] L2-normalised target features t (no gradient).
        student: [B, D] L2-normalised predictions s (gradient flows here).
        temperature: τ (0.5 in HaDis).
    """
    m = hsd_mining(teacher, student)
    logits = torch.stack([m["w_an"] * m["d_an"], m["w_ap"] * m["d_ap"]], dim=1) / temperature
    target = torch.zeros(logits.shape[0], dtype=torch.long, device=logits.device)
    return F.cross_entropy(logits, target)
