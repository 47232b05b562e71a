"""Nearest neighbours of every row, exact while that is cheap and approximate beyond.

The vectors' training views (conr/engine/vectors.py) and the final stage's graphs need
each row's k nearest rows. An exact search costs N x N x D; past :data:`EXACT_ROWS` rows
the search is approximate (NN-descent from pynndescent, which umap-learn already brings),
which grows about as N log N.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

__all__ = ["EXACT_ROWS", "TABLE_DIMS", "knn_table", "approximate_neighbors"]

EXACT_ROWS = 20_000   # rows up to which neighbours are searched exactly (brute force)
TABLE_DIMS = 128      # a wider table above EXACT_ROWS is searched in its first principal components


@torch.no_grad()
def knn_table(z: Tensor, k: int, chunk: int = 4096, exact_rows: int = EXACT_ROWS, seed: int = 0) -> Tensor:
    """[N, k] indices of the k nearest rows (Euclidean) of every row of ``z`` [N, D], the
    row itself first. Exact up to ``exact_rows`` rows (a chunked matrix product, bounded
    memory); beyond, NN-descent (:func:`approximate_neighbors`) on at most
    :data:`TABLE_DIMS` principal components."""
    z = z.float()
    n = z.shape[0]
    k = max(1, min(int(k), n))
    if n > exact_rows:
        x = z
        if z.shape[1] > TABLE_DIMS:
            centred = z - z.mean(0, keepdim=True)
            _, _, v = torch.pca_lowrank(centred, q=TABLE_DIMS, center=False, niter=3)
            x = centred @ v
        idx, _ = approximate_neighbors(x.cpu().numpy(), k, seed=seed)
        return torch.from_numpy(idx).to(z.device)
    sq = (z * z).sum(1)
    out = []
    for start in range(0, n, chunk):
        q = z[start:start + chunk]
        score = 2 * q @ z.t() - sq  # larger = nearer (|q|^2 is the same along a row)
        rows = torch.arange(start, start + len(q), device=z.device)
        score[torch.arange(len(q), device=z.device), rows] = float("inf")  # the row itself first
        out.append(score.topk(k, dim=1).indices)
    return torch.cat(out)


def approximate_neighbors(x: np.ndarray, k: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Approximate Euclidean k-NN of the rows of ``x`` by NN-descent (pynndescent), each row
    its own first neighbour: (indices [N, k] int64, distances [N, k] float32)."""
    from pynndescent import NNDescent

    x = np.ascontiguousarray(x, dtype=np.float32)
    k = int(max(2, min(k, len(x) - 1)))
    index = NNDescent(x, n_neighbors=k, metric="euclidean", random_state=seed, n_jobs=None, low_memory=True,
                      compressed=True)
    idx, dist = index.neighbor_graph
    idx, dist = idx.astype(np.int64), dist.astype(np.float32)
    rows = np.arange(len(x))
    first = idx[:, 0] != rows  # a duplicate row may come first: put the row itself there
    if first.any():
        idx[first, 0], dist[first, 0] = rows[first], 0.0
    return idx, dist
