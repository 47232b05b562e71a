"""Loss terms of the extra methods as pure functions of tensors: SimSiam and
MoCo v2 with their ConNR* neighbourhood variants (spec section 5), and HaDis'
hardness-aware self-distillation and prototypical contrast (spec section 6).

Every function takes plain tensors and returns a scalar loss; none reads a
config or a module, so each can be checked against a hand computation.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from . import full_precision

__all__ = [
    "simsiam_loss",
    "simsiam_neighborhood_loss",
    "moco_infonce",
    "moco_neighborhood_infonce",
    "hsd_mining",
    "hsd_loss",
    "cluster_centers",
    "prototype_contrast_loss",
    "prototype_loss",
]


def _f32(x: Tensor) -> Tensor:
    """At least float32 (half precision in, float32 out; float64 stays float64)."""
    return x if x.dtype == torch.float64 else x.float()


def _masked_slot_mean(values: Tensor, keep: Tensor | None) -> Tensor:
    """Mean over all [B, k] slots; anchors dropped by ``keep`` count as zero (spec 4d)."""
    if keep is not None:
        values = values * keep.to(values.dtype).unsqueeze(1)
    return values.mean()


# ----------------------------------------------------------------------------- SimSiam

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
    return -_masked_slot_mean(cos, keep)


# ----------------------------------------------------------------------------- MoCo v2

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
    neg_lse = torch.logsumexp(_f32(neg), dim=1, keepdim=True)                # [B, 1]
    pos = _f32(pos)
    losses = torch.logaddexp(pos, neg_lse) - pos                             # -log softmax of the positive
    return _masked_slot_mean(losses, keep)


@full_precision
def moco_infonce(q: Tensor, k: Tensor, queue: Tensor, temperature: float) -> Tensor:
    """MoCo's InfoNCE: cross-entropy of [q·k₊, q·queue] / T with the positive as class 0."""
    own = torch.arange(q.shape[0], device=q.device).unsqueeze(1)
    return moco_neighborhood_infonce(q, k, queue, temperature, own)


# ----------------------------------------------------------------------------- HaDis: HSD

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
    t = _f32(teacher.detach())
    s = _f32(student).to(t.dtype)
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


# ----------------------------------------------------------------------- HaDis: prototypes

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
    qc = _f32(q_centers)
    kc = _f32(k_centers.detach()).to(qc.dtype)
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
    q_centers, present = cluster_centers(F.normalize(_f32(q), dim=1), labels, n_clusters)
    k_centers, _ = cluster_centers(F.normalize(_f32(k.detach()), dim=1), labels, n_clusters)
    return prototype_contrast_loss(q_centers, k_centers, present, temperature, absent_logit)
