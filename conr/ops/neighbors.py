"""Neighbourhoods inside a batch of features: plain Euclidean top-k and the
contextually affinitive (ConAff) neighbourhood of CoNR (spec section 4a).

Everything here is a pure tensor function: dense products, ``topk`` and
gathers, no loop over samples and no custom extension, so the same code runs on
CPU and CUDA, in float32 or bfloat16.
"""
from __future__ import annotations

import torch
from torch import Tensor

__all__ = [
    "check_neighborhood_sizes",
    "contextual_similarity",
    "conaff_neighbors",
    "euclidean_neighbors",
    "same_cluster_neighbors",
]


def _check_feats(feats: Tensor) -> None:
    if not isinstance(feats, Tensor) or feats.dim() != 2:
        shape = tuple(feats.shape) if isinstance(feats, Tensor) else type(feats).__name__
        raise ValueError(f"feats must be a 2-D tensor [B, D]; got {shape}")
    if not feats.is_floating_point():
        raise ValueError(f"feats must be a floating-point tensor; got dtype {feats.dtype}")


def check_neighborhood_sizes(batch_size: int, k: int | None = None, k1: int | None = None,
                             k2: int | None = None) -> None:
    """Raise a ValueError that names the fix when (k, k1, k2) cannot work on a batch.

    k is the neighbourhood size used by the loss (self included), k1 the size of the
    initial top-k1 ranking lists and k2 the number of rows mixed by query expansion.
    """
    if k is not None:
        if k < 1:
            raise ValueError(f"k={k}: the neighbourhood size must be at least 1 (the sample itself)")
        if k >= batch_size:
            raise ValueError(
                f"k={k} must be smaller than the batch the neighbourhood sees (B={batch_size}); "
                f"lower stage2.k or raise train.batch_size")
    if k1 is not None:
        if k1 < 1:
            raise ValueError(f"k1={k1}: the initial ranking list needs at least one entry")
        if k1 > batch_size:
            raise ValueError(
                f"k1={k1} is larger than the batch (B={batch_size}); lower stage2.k1 or raise "
                f"train.batch_size")
    if k2 is not None:
        if k2 < 1:
            raise ValueError(f"k2={k2}: use k2=1 to switch query expansion off")
        if k1 is not None and k1 < k2:
            raise ValueError(
                f"k1={k1} < k2={k2}: query expansion mixes the top-k2 rows of the top-k1 list, "
                f"so k2 may not exceed k1; raise k1 or lower k2")


def contextual_similarity(feats: Tensor, k1: int, k2: int) -> Tensor:
    """Contextual similarity C = A Aᵀ of CoNR's online re-ranking (spec 4a, steps 1-4).

    Args:
        feats: [B, D] L2-normalised features (float32 or bfloat16, any device).
        k1: length of each sample's initial ranking list (top-k1 by cosine).
        k2: number of top-ranked rows mixed by α-query expansion (α = 2), applied
            twice after symmetrising; ``k2 = 1`` skips propagation altogether.

    Returns:
        [B, B] float32 tensor of contextual similarities; larger is closer.
    """
    _check_feats(feats)
    batch = feats.shape[0]
    check_neighborhood_sizes(batch, k1=k1, k2=k2)

    sims = feats @ feats.t()
    top_sims, ranks = sims.topk(k1, dim=1, largest=True, sorted=True)

    # Step 2: binary adjacency of the ranking lists (row i marks its top-k1).
    adjacency = torch.zeros(batch, batch, dtype=torch.float32, device=feats.device)
    adjacency.scatter_(1, ranks, 1.0)

    if k2 > 1:
        weights = top_sims[:, :k2].float().square()  # α = 2
        neighbor_rows = ranks[:, :k2]
        for _ in range(2):
            adjacency = adjacency + adjacency.t()
            expanded = torch.zeros_like(adjacency)
            for j in range(k2):  # k2 is small: one gather of B rows per rank position
                expanded.addcmul_(weights[:, j:j + 1], adjacency.index_select(0, neighbor_rows[:, j]))
            adjacency = expanded / expanded.norm(dim=1, keepdim=True)

    return adjacency @ adjacency.t()


def conaff_neighbors(feats: Tensor, k: int, k1: int, k2: int) -> Tensor:
    """Indices [B, k] of each sample's ConAff neighbourhood: the first k columns of
    its row of the contextual similarity sorted in descending order (the sample
    itself included, normally first)."""
    _check_feats(feats)
    check_neighborhood_sizes(feats.shape[0], k=k, k1=k1, k2=k2)
    return contextual_similarity(feats, k1, k2).topk(k, dim=1, largest=True, sorted=True).indices


def euclidean_neighbors(feats: Tensor, k: int) -> Tensor:
    """Indices [B, k] of each sample's k nearest samples in Euclidean distance,
    nearest first (the sample itself included)."""
    _check_feats(feats)
    check_neighborhood_sizes(feats.shape[0], k=k)
    f = feats.float()
    # ‖fi − fj‖² = ‖fi‖² − 2 fi·fj + ‖fj‖²; the ‖fi‖² term does not change row i's order.
    score = 2.0 * (f @ f.t()) - f.square().sum(dim=1).unsqueeze(0)
    return score.topk(k, dim=1, largest=True, sorted=True).indices


def same_cluster_neighbors(neighbors: Tensor, labels: Tensor) -> Tensor:
    """``neighbors`` [B, k] with every neighbour whose pseudo-label differs from its anchor's
    (``labels`` [B]) replaced by the anchor itself: the slot then pulls the sample toward its
    own other view, as the instance loss does."""
    anchors = torch.arange(neighbors.shape[0], device=neighbors.device).unsqueeze(1).expand_as(neighbors)
    return torch.where(labels[neighbors] == labels.unsqueeze(1), neighbors, anchors)
