"""Clustering scores as the deep-clustering literature reports them.

NMI and ARI come from scikit-learn; ACC is the accuracy under the best one-to-one
map of clusters to classes (scipy's Hungarian solver), which also works when the
number of clusters differs from the number of classes (unmatched clusters count
as wrong).
"""
from __future__ import annotations

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from sklearn.metrics import adjusted_rand_score, confusion_matrix, normalized_mutual_info_score

__all__ = [
    "cluster_accuracy",
    "best_cluster_map",
    "evaluate",
    "labelled_mask",
    "neighbor_purity",
    "knn_accuracy",
    "contingency",
]


def _as_labels(y, name: str) -> np.ndarray:
    if isinstance(y, torch.Tensor):
        y = y.detach().cpu().numpy()
    y = np.asarray(y)
    if y.ndim != 1:
        raise ValueError(f"{name} must be 1-D; got shape {y.shape}")
    if y.size and not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"{name} must hold integer labels; got dtype {y.dtype}")
    return y.astype(np.int64)


def _pair(y_true, y_pred) -> tuple[np.ndarray, np.ndarray]:
    y_true, y_pred = _as_labels(y_true, "y_true"), _as_labels(y_pred, "y_pred")
    if y_true.shape != y_pred.shape:
        raise ValueError(f"y_true has {y_true.size} labels but y_pred has {y_pred.size}")
    if y_true.size == 0:
        raise ValueError("cannot score an empty labelling")
    return y_true, y_pred


def contingency(y_true, y_pred) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Counts [n_clusters, n_classes] with the cluster ids and class ids they index."""
    y_true, y_pred = _pair(y_true, y_pred)
    classes, t = np.unique(y_true, return_inverse=True)
    clusters, p = np.unique(y_pred, return_inverse=True)
    counts = np.zeros((clusters.size, classes.size), dtype=np.int64)
    np.add.at(counts, (p, t), 1)
    return counts, clusters, classes


def best_cluster_map(y_true, y_pred) -> dict[int, int]:
    """Cluster id -> class id of the one-to-one assignment maximising agreement."""
    counts, clusters, classes = contingency(y_true, y_pred)
    rows, cols = linear_sum_assignment(counts, maximize=True)
    return {int(clusters[r]): int(classes[c]) for r, c in zip(rows, cols)}


def cluster_accuracy(y_true, y_pred) -> float:
    """Fraction of samples whose cluster maps to their class under the best one-to-one map."""
    counts, _, _ = contingency(y_true, y_pred)
    rows, cols = linear_sum_assignment(counts, maximize=True)
    return float(counts[rows, cols].sum() / counts.sum())


def labelled_mask(y_true) -> np.ndarray:
    """True where a ground-truth label is known (labels < 0, e.g. STL-10's unlabelled
    images, mark unknown ones)."""
    return _as_labels(y_true, "y_true") >= 0


def evaluate(y_true, y_pred) -> dict[str, float]:
    """{"nmi", "acc", "ari"} as fractions in [0, 1] (ARI may dip below 0) over the
    samples whose true label is known (>= 0; ``labelled_mask`` tells which).

    Samples labelled -1 (STL-10's 100k unlabelled images) were clustered with the rest
    but are left out of the scores, as in the paper's STL-10 protocol."""
    y_true, y_pred = _pair(y_true, y_pred)
    known = y_true >= 0
    if not known.any():
        raise ValueError("no sample has a known label (all labels are -1): nothing to score")
    y_true, y_pred = y_true[known], y_pred[known]
    return {
        "nmi": float(normalized_mutual_info_score(y_true, y_pred)),
        "acc": cluster_accuracy(y_true, y_pred),
        "ari": float(adjusted_rand_score(y_true, y_pred)),
    }


def neighbor_purity(neighbors, labels, exclude_self: bool = True) -> float:
    """Share of neighbour slots whose label equals the anchor's label.

    ``neighbors`` [B, k] indexes into ``labels`` [N]; with ``exclude_self`` the
    anchor's own index is not counted (the purity of k-1 true neighbours when the
    neighbourhood includes the anchor).
    """
    nb = torch.as_tensor(neighbors).long().cpu()
    lab = torch.as_tensor(labels).long().cpu()
    if nb.dim() != 2:
        raise ValueError(f"neighbors must be [B, k]; got shape {tuple(nb.shape)}")
    anchors = torch.arange(nb.shape[0]).unsqueeze(1)
    same = lab[nb] == lab[: nb.shape[0]].unsqueeze(1)
    if exclude_self:
        valid = nb != anchors
        total = int(valid.sum())
        return float((same & valid).sum()) / total if total else float("nan")
    return float(same.float().mean())


@torch.no_grad()
def knn_accuracy(train_feats, train_labels, test_feats, test_labels, k: int = 20,
                 temperature: float = 0.07, n_classes: int | None = None,
                 exclude_self: bool = False, chunk: int = 1024) -> float:
    """Weighted k-NN classification accuracy on L2-normalised features.

    Each of the k nearest training samples (cosine) votes for its label with
    weight exp(sim / temperature), the monitor used by instance-discrimination
    style papers. ``exclude_self`` drops the identical index when test and train
    are the same set (leave-one-out).
    """
    tf = torch.nn.functional.normalize(torch.as_tensor(train_feats).float(), dim=1)
    qf = torch.nn.functional.normalize(torch.as_tensor(test_feats).float(), dim=1)
    tl = torch.as_tensor(train_labels).long().to(tf.device)
    ql = torch.as_tensor(test_labels).long().to(tf.device)
    n_classes = int(n_classes or (int(tl.max()) + 1))
    correct = 0
    for start in range(0, qf.shape[0], chunk):
        q = qf[start:start + chunk].to(tf.device)
        sims = q @ tf.t()
        if exclude_self:
            rows = torch.arange(q.shape[0], device=tf.device)
            sims[rows, rows + start] = -float("inf")
        top_s, top_i = sims.topk(min(k, tf.shape[0] - int(exclude_self)), dim=1)
        votes = torch.zeros(q.shape[0], n_classes, device=tf.device)
        votes.scatter_add_(1, tl[top_i], (top_s / temperature).exp())
        correct += int((votes.argmax(1) == ql[start:start + chunk]).sum())
    return correct / qf.shape[0]


def confusion(y_true, y_pred) -> np.ndarray:
    """Confusion matrix [n_classes, n_classes] after mapping clusters to classes."""
    y_true, y_pred = _pair(y_true, y_pred)
    mapping = best_cluster_map(y_true, y_pred)
    mapped = np.array([mapping.get(int(c), -1) for c in y_pred])
    classes = np.unique(y_true)
    return confusion_matrix(y_true, mapped, labels=classes)
