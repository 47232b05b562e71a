"""The final spectral assignment (conr/spectral.py) on shapes with a known answer."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from conr.cluster.kmeans import kmeans
from conr.ops.metrics import evaluate
from conr.cluster.spectral import graph_neighbors, spectral_clustering


def _arcs(n_per: int = 150, seed: int = 0):
    """Two long interleaved arcs on the unit circle's neighbourhood in 3-D: chains that
    k-means (round clusters) cuts across, a k-NN graph follows."""
    rng = np.random.default_rng(seed)
    t = rng.uniform(0, np.pi, n_per)
    a = np.stack([np.cos(t), np.sin(t), np.full(n_per, 2.0)], 1)
    b = np.stack([1 - np.cos(t), 0.5 - np.sin(t), np.full(n_per, 2.0)], 1)
    x = np.concatenate([a, b]) + rng.normal(0, 0.03, (2 * n_per, 3))
    return torch.tensor(x, dtype=torch.float32), torch.tensor([0] * n_per + [1] * n_per)


def test_spectral_follows_chains_that_kmeans_cuts():
    x, y = _arcs()
    spec = spectral_clustering(x, 2, seed=0)
    km = kmeans(F.normalize(x, dim=1), 2, n_init=10, seed=0)
    assert evaluate(y, spec.labels)["acc"] == 1.0
    assert evaluate(y, km.labels)["acc"] < 0.9


def test_centres_are_the_means_of_the_unit_members():
    x, _ = _arcs(40)
    res = spectral_clustering(x, 2, seed=1)
    u = F.normalize(x, dim=1)
    for c in range(2):
        torch.testing.assert_close(res.centers[c], u[res.labels == c].mean(0))
    cos = (u * F.normalize(res.centers, dim=1)[res.labels]).sum(1)
    assert abs(res.inertia - float((1 - cos).sum())) < 1e-3


def test_graph_size_rule():
    assert graph_neighbors(10_000, 10) == 10      # the usual 10
    assert graph_neighbors(400, 40) == 10         # clusters of 10: still 10
    assert graph_neighbors(120, 40) == 3          # clusters of 3: never fewer than 3
    assert graph_neighbors(200, 40) == 5          # never more than the mean cluster size


def test_large_graphs_use_lobpcg_with_arpacks_partition():
    """Above ARPACK_MAX images the eigenvectors come from LOBPCG (ARPACK's factorisation
    grows ~ N^2.5); on a hand-made set of five unequal, touching blobs its partition is
    the one scikit-learn's default ARPACK path gives."""
    import warnings

    from sklearn.cluster import SpectralClustering
    from sklearn.metrics import adjusted_rand_score

    from conr.cluster.spectral import ARPACK_MAX, eigen_solver

    assert eigen_solver(ARPACK_MAX) == "arpack" and eigen_solver(ARPACK_MAX + 1) == "lobpcg"
    rng = np.random.default_rng(0)
    sizes = [900, 600, 400, 300, 200]
    truth = np.repeat(np.arange(5), sizes)
    centres = rng.normal(scale=4.0, size=(5, 8))
    x = (centres[truth] + rng.normal(size=(len(truth), 8))).astype(np.float32)
    assert len(x) > ARPACK_MAX
    ours = spectral_clustering(torch.from_numpy(x), 5, seed=0).labels.numpy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        unit = x / np.linalg.norm(x, axis=1, keepdims=True)
        ref = SpectralClustering(5, affinity="nearest_neighbors", n_neighbors=10, assign_labels="kmeans",
                                 random_state=0).fit_predict(unit)
    assert adjusted_rand_score(ref, ours) > 0.99
    assert adjusted_rand_score(truth, ours) > 0.95
