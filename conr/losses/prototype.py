"""HaDis' prototypical contrast (spec 6, ProPos' prototype scattering): InfoNCE over the
centres of the pseudo-clusters present in the batch."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .precision import at_least_float32, full_precision

__all__ = ["cluster_centers", "prototype_contrast_loss", "prototype_loss"]


@full_precision
def cluster_centers(x: Tensor, labels: Tensor, n_clusters: int) -> tuple[Tensor, Tensor]:
    """Per-cluster mean of the rows of ``x`` under ``labels`` (L1-normalised one-hot
    weights), then L2-normalised. Clusters without a member get a zero row.

    Returns ``(centers [K, D], present [K] bool)``.
    """
    labels = labels.long()
    # one-hot rows by comparison: F.one_hot's range check reads the labels back to the host
    weight = (labels.unsqueeze(0) == torch.arange(n_clusters, device=labels.device).unsqueeze(1)).to(x.dtype)  # [K, N]
    counts = weight.sum(dim=1)
    weight = weight / counts.clamp_min(1.0).unsqueeze(1)      # L1 normalisation per cluster
    centers = F.normalize(weight @ x, dim=1)
    return centers, counts > 0


@full_precision
def prototype_contrast_loss(q_centers: Tensor, k_centers: Tensor, present: Tensor,
                            temperature: float = 0.5, absent_logit: float | None = None) -> Tensor:
    """ProPos' prototype scattering as used by HaDis (spec 6): InfoNCE over clusters.

    For every present cluster a: the positive logit is q_a·k_a / T and the negatives
    are q_a·q_b / T for the other present clusters b; loss_a = −pos + logsumexp(all),
    averaged over the present clusters. Absent clusters are masked out: with
    ``absent_logit=None`` their columns are removed exactly; a number (the ProPos
    code uses −10) instead fills their columns with that logit.

    Args:
        q_centers: [K, D] L2-normalised centres of the online projections (gradient).
        k_centers: [K, D] L2-normalised centres of the target projections (no gradient).
        present: [K] bool, clusters with at least one member in the batch.
    """
    qc = at_least_float32(q_centers)
    kc = at_least_float32(k_centers.detach()).to(qc.dtype)
    n = qc.shape[0]
    logits = (qc @ qc.t()) / temperature
    diag = torch.eye(n, dtype=torch.bool, device=qc.device)
    logits = torch.where(diag, ((qc * kc).sum(dim=1) / temperature).diag_embed(), logits)
    absent_col = (~present).unsqueeze(0).expand(n, n) & ~diag
    fill = float("-inf") if absent_logit is None else float(absent_logit)
    logits = logits.masked_fill(absent_col, fill)
    per_cluster = torch.logsumexp(logits, dim=1) - logits.diagonal()
    per_cluster = torch.where(present, per_cluster, torch.zeros_like(per_cluster))
    return per_cluster.sum() / present.sum().clamp_min(1)


@full_precision
def prototype_loss(q: Tensor, k: Tensor, labels: Tensor, n_clusters: int, temperature: float = 0.5,
                   absent_logit: float | None = None) -> Tensor:
    """Prototypical contrast on a batch: centres of L2-normalised online projections
    ``q`` and target projections ``k`` under ``labels``, then
    :func:`prototype_contrast_loss`."""
    q_centers, present = cluster_centers(F.normalize(at_least_float32(q), dim=1), labels, n_clusters)
    k_centers, _ = cluster_centers(F.normalize(at_least_float32(k.detach()), dim=1), labels, n_clusters)
    return prototype_contrast_loss(q_centers, k_centers, present, temperature, absent_logit)
