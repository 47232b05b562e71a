"""The final assignment by spectral clustering of the features' nearest-neighbour graph.

k-means, which the training loop uses for its per-epoch pseudo-labels, assumes
round, convex clusters; learned features of a folder are often chains instead (the
views of an object turning on a table, a face across poses). Clustering the graph
of each image's nearest neighbours follows such chains — the same reliance on
neighbourhoods that CoNR trains with. Used for the final labels when
``cluster.final: spectral`` (the automatic settings choose it).
"""
from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F
from torch import Tensor

from .kmeans import KMeansResult
from .partition import labels_result

__all__ = ["spectral_clustering", "spectral_labels", "graph_neighbors", "eigen_solver", "ARPACK_MAX"]

ARPACK_MAX = 2000   # images up to which ARPACK (exact, shift-invert) finds the graph's eigenvectors


def eigen_solver(n_samples: int) -> str:
    """scikit-learn's eigensolver for the spectral embedding of ``n_samples`` images:
    ARPACK up to :data:`ARPACK_MAX`, LOBPCG above. ARPACK factorises the graph Laplacian
    and its time grows ~ N^2.5: on the PCA-50 pixels of CIFAR-10's test images (10-NN
    graph) it took 0.42 s for 2,000, 3.6 s for 5,000 and 33 s for 10,000, where LOBPCG
    took 0.11, 0.33 and 0.75 s for the same partitions (ARI 0.95, 0.999; NMI with the
    classes 0.0916 and 0.0917 at 10,000). On small sets the two differ a little more
    (ORL pixels: ARI 0.84 between them), and there ARPACK is fast and exact."""
    return "arpack" if n_samples <= ARPACK_MAX else "lobpcg"


def graph_neighbors(n_samples: int, n_clusters: int, cap: int = 10) -> int:
    """Neighbours per image in the graph: 10, but never more than the average cluster
    size (40 clusters of 10 images need few), and at least 3."""
    return int(max(3, min(cap, n_samples // max(1, n_clusters))))


def spectral_labels(x, n_clusters: int, seed: int = 0, n_neighbors: int | None = None):
    """Spectral clustering (scikit-learn) of the symmetrised k-NN graph of the rows of ``x``
    [N, D] (a numpy array, as given): labels [N] (int64). ``n_neighbors``: None =
    :func:`graph_neighbors`; the eigensolver follows N (:func:`eigen_solver`)."""
    import numpy as np
    from sklearn.cluster import SpectralClustering

    n = len(x)
    nn = min(n_neighbors or graph_neighbors(n, n_clusters), n - 1)
    with warnings.catch_warnings():  # a graph in several pieces is fine: the pieces are clusters
        warnings.simplefilter("ignore")
        labels = SpectralClustering(n_clusters, affinity="nearest_neighbors", n_neighbors=nn, assign_labels="kmeans",
                                    eigen_solver=eigen_solver(n), random_state=seed).fit_predict(x)
    return np.asarray(labels, dtype=np.int64)


def spectral_clustering(features: Tensor, n_clusters: int, n_neighbors: int | None = None,
                        seed: int = 0) -> KMeansResult:
    """:func:`spectral_labels` of the L2-normalised ``features``; centres are the plain means
    of each cluster's unit features (as k-means' are), so boundary ratios and ``predict``
    keep their meaning. ``inertia`` is the sum of cosine distances to those centres."""
    x = F.normalize(features.float().cpu(), dim=1)
    n = x.shape[0]
    if not 2 <= n_clusters <= n:
        raise ValueError(f"n_clusters={n_clusters} must lie in [2, {n}] (the number of samples)")
    labels = spectral_labels(x.numpy(), n_clusters, seed=seed, n_neighbors=n_neighbors)
    return labels_result(x, torch.as_tensor(labels, dtype=torch.long), n_clusters)
