"""MoCo v2's InfoNCE against a queue of negatives, and its ConNR* neighbourhood variant
(spec section 5, paper App. A.2)."""
from __future__ import annotations

import torch
from torch import Tensor

from .neighborhood import masked_slot_mean
from .precision import at_least_float32, full_precision

__all__ = ["moco_infonce", "moco_neighborhood_infonce"]


@full_precision
def moco_neighborhood_infonce(q: Tensor, keys: Tensor, queue: Tensor, temperature: float,
                              neighbors: Tensor, keep: Tensor | None = None) -> Tensor:
    """ConNR* for MoCo v2 (paper App. A.2): InfoNCE where the positives of query i
    are the keys in the neighbourhood of its own key; each positive forms its own
    (1 + Q)-way classification against the queue's Q negatives, and the loss is
    averaged over the neighbourhood (and over all B·k slots):

        ℓ_ij = -log( e^{q_i·k_j/T} / (e^{q_i·k_j/T} + Σ_n e^{q_i·n/T}) ),  j ∈ neighbors[i]

    Args:
        q: [B, D] L2-normalised queries (gradient flows here).
        keys: [B, D] L2-normalised keys of the other view (no gradient).
        queue: [Q, D] L2-normalised negative keys (no gradient).
        temperature: T.
        neighbors: [B, k] indices into ``keys``; k = 1 with neighbors[i] = i is plain MoCo.
        keep: optional [B] mask of anchors kept by the boundary filter.
    """
    keys = keys.detach().to(q.dtype)
    pos = torch.einsum("bd,bkd->bk", q, keys[neighbors]) / temperature  # [B, k]
    neg = (q @ queue.detach().to(q.dtype).t()) / temperature                # [B, Q]
    neg_lse = torch.logsumexp(at_least_float32(neg), dim=1, keepdim=True)                # [B, 1]
    pos = at_least_float32(pos)
    losses = torch.logaddexp(pos, neg_lse) - pos                             # -log softmax of the positive
    return masked_slot_mean(losses, keep)


@full_precision
def moco_infonce(q: Tensor, k: Tensor, queue: Tensor, temperature: float) -> Tensor:
    """MoCo's InfoNCE: cross-entropy of [q·k₊, q·queue] / T with the positive as class 0."""
    own = torch.arange(q.shape[0], device=q.device).unsqueeze(1)
    return moco_neighborhood_infonce(q, k, queue, temperature, own)
