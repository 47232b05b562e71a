"""SimSiam's negative cosine with stop-gradient, and its ConNR* neighbourhood variant
(spec section 5, paper App. A.2)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .neighborhood import masked_slot_mean
from .precision import full_precision

__all__ = ["simsiam_loss", "simsiam_neighborhood_loss"]


@full_precision
def simsiam_loss(p: Tensor, z: Tensor) -> Tensor:
    """SimSiam's D(p, z) = -mean_i cos(p_i, stopgrad(z_i))."""
    return -F.cosine_similarity(p, z.detach(), dim=-1).mean()


@full_precision
def simsiam_neighborhood_loss(p: Tensor, z: Tensor, neighbors: Tensor, keep: Tensor | None = None) -> Tensor:
    """ConNR* for SimSiam, one view order (paper App. A.2):
    mean over the neighbourhood N(i) of D(p_i, stopgrad(z_j)), i.e.

        -1 / (B·k) · Σ_i Σ_{j ∈ neighbors[i]} keep_i · cos(p_i, z_j)

    Args:
        p: [B, D] predictions of view 1 (gradient flows here).
        z: [B, D] projections of view 2 (stop-gradient).
        neighbors: [B, k] indices into ``z``; ``neighbors[:, 0] = arange(B)`` with k = 1
            gives :func:`simsiam_loss` exactly.
        keep: optional [B] mask of anchors kept by the boundary filter.
    """
    pn = F.normalize(p, dim=-1)
    zn = F.normalize(z.detach(), dim=-1).to(pn.dtype)[neighbors]  # [B, k, D]
    cos = torch.einsum("bd,bkd->bk", pn, zn)
    return -masked_slot_mean(cos, keep)
