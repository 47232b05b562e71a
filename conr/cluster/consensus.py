"""One partition from several: spectral clustering of the co-association matrix.

UMAP's layout depends on its random seed, and on learned features a single UMAP + GMM
run can merge two classes one time and keep them apart the next (the demo's features:
ACC 0.87 to 0.96 over six UMAP seeds). The consensus of several runs is steadier than
any one of them: two images belong together as often as the runs put them together.

The co-association matrix ``A[i, j]`` (the share of runs that put ``i`` and ``j`` in
one cluster) is ``H Hᵀ / R`` for the one-hot membership matrix ``H`` [N, R·K] of the
``R`` runs, so its normalised spectral embedding (Ng, Jordan & Weiss) is the top left
singular vectors of ``D^-½ H``: no N × N matrix is formed, and a million images
cost no more than their memberships.
"""
from __future__ import annotations

import numpy as np

__all__ = ["membership_matrix", "consensus_partition", "agreement", "align_to", "consensus_confidence", "DENSE_ENTRIES"]

DENSE_ENTRIES = 50_000_000  # above this many entries of the membership matrix, it is kept sparse


def _membership_columns(labelings) -> tuple[np.ndarray, int]:
    """Each sample's column in each labeling's block of the membership matrix, [R, N] (the
    blocks side by side, one column a cluster), and the number of columns Σ_r K_r."""
    labelings = [np.asarray(lab, dtype=np.int64).ravel() for lab in labelings]
    if not labelings:
        raise ValueError("consensus of no labelings: give at least one")
    n = labelings[0].size
    if any(lab.size != n for lab in labelings):
        raise ValueError(f"labelings of different lengths {[lab.size for lab in labelings]}: all must label the "
                         "same samples")
    cols, offset = [], 0
    for lab in labelings:
        _, idx = np.unique(lab, return_inverse=True)
        cols.append(idx + offset)
        offset += idx.max() + 1 if n else 0
    return np.stack(cols), int(offset)


def _labeling_scales(r: int, weights) -> np.ndarray:
    """Each labeling's factor in the membership matrix: √(w_r / Σ w), 1/√R for equal weights."""
    if weights is None:
        return np.full(r, 1 / np.sqrt(r))
    w = np.asarray(weights, dtype=np.float64).ravel()
    if w.size != r or not np.isfinite(w).all() or (w < 0).any() or w.sum() <= 0:
        raise ValueError(f"weights {w.tolist()} for {r} labelings: give {r} non-negative numbers, not all zero")
    return np.sqrt(w / w.sum())


def _dense_membership(cols: np.ndarray, width: int, weights=None) -> np.ndarray:
    r, n = cols.shape
    h = np.zeros((n, width))
    h[np.arange(n)[None, :], cols] = np.repeat(_labeling_scales(r, weights), n).reshape(r, n)
    return h


def _top_vectors_sparse(cols: np.ndarray, width: int, n_clusters: int, weights=None) -> np.ndarray:
    """The top ``n_clusters`` left singular vectors of ``D^-½ H`` for a large membership
    matrix: ``H`` sparse (one entry a labeling a row), the vectors from the eigenvectors of
    the small Gram matrix ``Mᵀ M`` (columns: Σ K_r), so no dense N × Σ K_r array is formed."""
    from scipy import sparse

    r, n = cols.shape
    h = sparse.csr_matrix((np.repeat(_labeling_scales(r, weights), n), (np.tile(np.arange(n), r), cols.ravel())),
                          shape=(n, width))
    degree = h @ (h.T @ np.ones(n))
    return _top_vectors_gram(sparse.diags(1 / np.sqrt(degree)) @ h, n_clusters)


def _top_vectors_gram(m, n_clusters: int) -> np.ndarray:
    """The top ``n_clusters`` left singular vectors of ``m`` [N, C] (dense or sparse) from the
    eigenvectors of its small Gram matrix ``mᵀ m`` [C, C]: ``u = m v / σ``."""
    gram = m.T @ m
    w, v = np.linalg.eigh(gram.toarray() if hasattr(gram, "toarray") else gram)
    top = np.argsort(-w)[:n_clusters]
    return (m @ v[:, top]) / np.sqrt(np.maximum(w[top], 1e-12))


def membership_matrix(labelings) -> np.ndarray:
    """One-hot memberships of ``R`` labelings of the same N samples, side by side
    [N, Σ_r K_r], scaled by 1/√R so that ``H Hᵀ`` is the co-association matrix."""
    return _dense_membership(*_membership_columns(labelings))


def consensus_partition(labelings, n_clusters: int, seed: int = 0, weights=None) -> np.ndarray:
    """``n_clusters`` clusters of the co-association matrix of ``labelings`` by
    normalised spectral clustering (k-means of the row-normalised top eigenvectors of
    ``D^-½ A D^-½``, computed from the membership matrix). ``weights``: one per labeling (the
    co-association then counts a labeling's vote by its weight), equal by default."""
    from sklearn.cluster import KMeans

    cols, width = _membership_columns(labelings)
    n = cols.shape[1]
    if n_clusters < 1 or n_clusters > n:
        raise ValueError(f"n_clusters={n_clusters} for {n} samples: choose 1..{n}")
    if n * width > DENSE_ENTRIES:
        u = _top_vectors_sparse(cols, width, n_clusters, weights)
    else:
        h = _dense_membership(cols, width, weights)
        degree = h @ (h.T @ np.ones(n))            # row sums of A = H Hᵀ (every entry ≥ 1/R: A[i, i] = 1)
        m = h / np.sqrt(degree)[:, None]
        try:
            u, _, _ = np.linalg.svd(m, full_matrices=False)
        except np.linalg.LinAlgError:  # LAPACK's SVD can fail to converge on a legitimate vote (digits seed 1
            u = _top_vectors_gram(m, n_clusters)  # of 2026-12-06, five candidates and one at half): the Gram way
    u = u[:, :n_clusters]
    u /= np.maximum(np.linalg.norm(u, axis=1, keepdims=True), 1e-12)
    return KMeans(n_clusters, n_init=10, random_state=seed).fit_predict(u).astype(np.int64)


def agreement(labelings) -> np.ndarray:
    """Each labeling's mean adjusted Rand index with the others (1 for a lone labeling)."""
    from sklearn.metrics import adjusted_rand_score

    r = len(labelings)
    ari = np.ones((r, r))
    for i in range(r):
        for j in range(i + 1, r):
            ari[i, j] = ari[j, i] = adjusted_rand_score(labelings[i], labelings[j])
    return (ari.sum(1) - 1) / max(1, r - 1) if r > 1 else np.ones(r)


def align_to(reference: np.ndarray, labels: np.ndarray, n_clusters: int) -> np.ndarray:
    """For each cluster id of ``labels``, the id of ``reference`` it overlaps most under
    a one-to-one matching (Hungarian, :func:`conr.ops.metrics.best_cluster_map`), as an array
    [n_clusters] (ids without a match: -1)."""
    from ..ops.metrics import best_cluster_map

    out = np.full(n_clusters, -1, dtype=np.int64)
    for cluster, ref in best_cluster_map(reference, labels).items():
        out[cluster] = ref
    return out


def consensus_confidence(labels: np.ndarray, members, probabilities, n_clusters: int) -> np.ndarray:
    """Per sample, the mean over the runs of the probability each run gives to the
    consensus cluster (each run's clusters matched to the consensus ones first)."""
    labels = np.asarray(labels, dtype=np.int64)
    conf = np.zeros(labels.size)
    for lab, proba in zip(members, probabilities):
        col = align_to(lab, labels, n_clusters)[labels]   # each sample's consensus cluster, as the run's column
        conf += np.where(col >= 0, np.asarray(proba)[np.arange(labels.size), np.maximum(col, 0)], 0.0)
    return (conf / max(1, len(members))).astype(np.float32)
