"""BYOL's instance concordance (spec 2)."""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from .precision import full_precision

__all__ = ["byol_loss"]


@full_precision
def byol_loss(pred: Tensor, target: Tensor) -> Tensor:
    """Instance concordance: -2 · mean_i cos(pred_i, target_i); the target gets no gradient."""
    return -2.0 * F.cosine_similarity(pred, target.detach(), dim=-1).mean()
