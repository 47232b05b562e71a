"""CoNR's group-aware concordance (spec 4d): each anchor is pulled toward the targets of
its neighbourhood, anchors left out by the boundary filter count as zero."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .precision import full_precision

__all__ = ["neighborhood_loss", "masked_slot_mean"]


@full_precision
def neighborhood_loss(pred: Tensor, targets: Tensor, neighbors: Tensor, keep: Tensor | None = None) -> Tensor:
    """Group-aware concordance of CoNR (spec 4d) for one view order.

    loss = -2 / (B·k) · Σ_i Σ_{j ∈ neighbors[i]} keep_i · cos(pred_i, targets_j)

    Args:
        pred: [B, D] online predictions (any scale; cosine is taken).
        targets: [B, D] target features of the other view; no gradient flows into them.
        neighbors: [B, k] indices into ``targets`` (the anchor itself normally included).
        keep: optional [B] bool/float mask of anchors kept by the boundary filter;
            dropped anchors still count in the B·k denominator, as in the official code.
    """
    p = F.normalize(pred, dim=-1)
    t = F.normalize(targets.detach(), dim=-1)[neighbors]  # [B, k, D]
    cos = torch.einsum("bd,bkd->bk", p, t.to(p.dtype))
    if keep is not None:
        cos = cos * keep.to(cos.dtype).unsqueeze(1)
    return -2.0 * cos.mean()


def masked_slot_mean(values: Tensor, keep: Tensor | None) -> Tensor:
    """Mean over all [B, k] slots; anchors dropped by ``keep`` count as zero (spec 4d)."""
    if keep is not None:
        values = values * keep.to(values.dtype).unsqueeze(1)
    return values.mean()
