"""Tests of conr.cluster.kmeans against known blob structure, brute force and scikit-learn."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.cluster import KMeans as SkKMeans
from sklearn.datasets import make_blobs
from sklearn.metrics import adjusted_rand_score

from conr.cluster.kmeans import KMeansResult, _restart, assign, kmeans, restart_seeds


# --------------------------------------------------------------------------- data
def euclidean_blobs(n=400, k=5, d=6, std=0.4, seed=0):
    x, y = make_blobs(n_samples=n, centers=k, n_features=d, cluster_std=std,
                      center_box=(-10.0, 10.0), random_state=seed)
    return torch.from_numpy(x.astype(np.float32)), y


def directional_blobs(n_per=60, k=4, d=8, noise=0.08, seed=0):
    """Points around k orthogonal directions with random positive scales: clusters
    are defined by direction only, so only the cosine metric can recover them."""
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.standard_normal((d, d)))
    dirs = q[:k]
    y = rng.permutation(np.repeat(np.arange(k), n_per))
    x = dirs[y] + noise * rng.standard_normal((y.size, d))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    x *= rng.uniform(0.2, 6.0, size=(y.size, 1))
    return torch.from_numpy(x.astype(np.float32)), y


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


# ------------------------------------------------------------------ known answers
@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_well_separated_blobs_recovered(metric, seed):
    # Euclidean: make_blobs clusters; cosine: clusters that differ by direction only.
    x, y = euclidean_blobs(seed=seed) if metric == "euclidean" else directional_blobs(seed=seed)
    res = kmeans(x, int(y.max()) + 1, metric=metric, seed=seed)
    assert isinstance(res, KMeansResult)
    assert res.labels.dtype == torch.int64 and res.labels.shape == (x.shape[0],)
    assert res.centers.shape == (int(y.max()) + 1, x.shape[1])
    assert adjusted_rand_score(y, res.labels.numpy()) == 1.0
    assert 1 <= res.n_iter <= 300


def test_cosine_ignores_row_scale_euclidean_does_not():
    x, y = directional_blobs(seed=5)
    cos = kmeans(x, 4, metric="cosine", seed=0)
    assert adjusted_rand_score(y, cos.labels.numpy()) == 1.0
    # Rescaling rows by positive factors leaves cosine k-means unchanged.
    scale = torch.from_numpy(np.random.default_rng(1).uniform(0.1, 10.0, size=(x.shape[0], 1)).astype(np.float32))
    cos2 = kmeans(x * scale, 4, metric="cosine", seed=0)
    assert adjusted_rand_score(cos.labels.numpy(), cos2.labels.numpy()) == 1.0
    # Euclidean k-means on these wildly scaled points is fooled by the norms.
    euc = kmeans(x * scale, 4, metric="euclidean", seed=0)
    assert adjusted_rand_score(y, euc.labels.numpy()) < 0.9


# ------------------------------------------------------------------- centres
def test_euclidean_centers_are_member_means():
    x, y = euclidean_blobs(seed=3)
    res = kmeans(x, 5, metric="euclidean", seed=0)
    xn = x.numpy().astype(np.float64)
    lab = res.labels.numpy()
    for c in range(5):
        np.testing.assert_allclose(res.centers[c].numpy(), xn[lab == c].mean(0), rtol=1e-4, atol=1e-4)


def test_cosine_centers_are_means_of_normalised_members_not_renormalised():
    x, y = directional_blobs(seed=4)
    res = kmeans(x, 4, metric="cosine", seed=0)
    xn = _unit(x.numpy().astype(np.float64))
    lab = res.labels.numpy()
    for c in range(4):
        mean = xn[lab == c].mean(0)
        np.testing.assert_allclose(res.centers[c].numpy(), mean, rtol=1e-4, atol=1e-5)
    norms = np.linalg.norm(res.centers.numpy(), axis=1)
    assert np.all(norms < 0.999) and np.all(norms > 0.9)


@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
def test_labels_are_nearest_final_centre_and_inertia_consistent(metric):
    """Overlapping data (a hard case): whatever the run converges to, every label is
    the nearest final centre (brute force), and inertia is the documented sum."""
    rng = np.random.default_rng(7)
    x = rng.standard_normal((150, 5)).astype(np.float32)
    res = kmeans(torch.from_numpy(x), 6, metric=metric, seed=3)
    xs = x.astype(np.float64)
    if metric == "cosine":
        xs = _unit(xs)
    c = res.centers.numpy().astype(np.float64)
    total = 0.0
    for i in range(xs.shape[0]):
        if metric == "euclidean":
            d = [float(np.sum((xs[i] - c[j]) ** 2)) for j in range(6)]
        else:
            d = [1.0 - float(np.dot(xs[i], c[j]) / np.linalg.norm(c[j])) for j in range(6)]
        best = min(d)
        assert d[int(res.labels[i])] <= best + 1e-5
        total += d[int(res.labels[i])]
    assert res.inertia == pytest.approx(total, rel=1e-4, abs=1e-4)


# ------------------------------------------------------------------- determinism
@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
def test_same_seed_same_result(metric):
    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.standard_normal((200, 4)).astype(np.float32))
    a = kmeans(x, 7, metric=metric, seed=123, n_init=2)
    b = kmeans(x, 7, metric=metric, seed=123, n_init=2)
    assert torch.equal(a.labels, b.labels)
    assert torch.equal(a.centers, b.centers)
    assert a.inertia == b.inertia and a.n_iter == b.n_iter


def _brute_inertia(x: np.ndarray, labels: np.ndarray, centers: np.ndarray, metric: str) -> float:
    if metric == "cosine":
        x = _unit(x)
        return float(sum(1.0 - x[i] @ centers[labels[i]] / np.linalg.norm(centers[labels[i]])
                         for i in range(len(x))))
    return float(sum(np.sum((x[i] - centers[labels[i]]) ** 2) for i in range(len(x))))


@pytest.mark.parametrize("seeding", ["torch", "sklearn"])
@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_n_init_keeps_the_restart_of_lowest_inertia(metric, seeding):
    """n_init = 10 (the official runs) without relocation returns the best of the ten single
    restarts of ``restart_seeds(seed, 10)``, their inertias recomputed here by brute force."""
    rng = np.random.default_rng(5)
    x = rng.standard_normal((240, 4)).astype(np.float32)
    xt, xs = torch.from_numpy(x), x.astype(np.float64)
    xin = torch.nn.functional.normalize(xt, dim=1) if metric == "cosine" else xt
    shift_tol = 1e-4 * float(xin.var(dim=0).mean())
    singles = [_restart(xin, 7, metric, 300, shift_tol, rs, seeding == "sklearn")[0]
               for rs in restart_seeds(20, 10)]
    inertias = [_brute_inertia(xs, s.labels.numpy(), s.centers.numpy().astype(np.float64), metric)
                for s in singles]
    assert len({round(v, 4) for v in inertias}) > 1  # the restarts do differ on this data
    best = kmeans(xt, 7, metric=metric, seed=20, n_init=10, seeding=seeding, relocate=False)
    want = int(np.argmin(inertias))
    assert best.inertia == pytest.approx(inertias[want], rel=1e-4)
    assert torch.equal(best.labels, singles[want].labels)
    # relocation only ever lowers the inertia of that winner
    assert kmeans(xt, 7, metric=metric, seed=20, n_init=10, seeding=seeding).inertia <= best.inertia


def test_restart_seeds_independent_of_neighbouring_seeds():
    """Seeds s and s + 1 share no restart (the former scheme seed + r shared 9 in 10), and
    restart r does not depend on n_init."""
    a, b = restart_seeds(3, 10), restart_seeds(4, 10)
    assert len(set(a) | set(b)) == 20
    assert restart_seeds(3, 4) == a[:4]


def unequal_blobs(k=50, d=16, std=0.1, seed=1234):
    """k well-separated Gaussian groups of 5 to 300 samples (log-uniform sizes) on the unit
    sphere: the true partition is the optimum, and plain k-means++ restarts often keep one
    centre for two small groups and two for a large one."""
    rng = np.random.default_rng(seed)
    sizes = np.exp(rng.uniform(np.log(5), np.log(300), size=k)).astype(int)
    y = np.repeat(np.arange(k), sizes)
    x = rng.standard_normal((k, d))[y] + std * rng.standard_normal((y.size, d))
    return _unit(x).astype(np.float32), y


def _cosine_inertia(x: np.ndarray, labels: np.ndarray) -> float:
    """Sum of 1 - cos to the (mean) centre of each group, by brute force."""
    total = 0.0
    for c in np.unique(labels):
        m = x[labels == c].astype(np.float64).mean(0)
        total += float((1.0 - x[labels == c] @ m / np.linalg.norm(m)).sum())
    return total


@pytest.mark.slow  # many restarts on a hard case: ~5-8 s
def test_finds_the_optimum_where_restarts_alone_fail():
    """On 50 blobs of unequal sizes conr's k-means (n_init = 10) reaches the known optimum
    (the true partition) and scikit-learn's KMeans(n_init = 10) inertia within 0.5 % for 10
    seeds in 10; without relocation (restarts only, as scikit-learn) it does not."""
    x, y = unequal_blobs()
    optimum = _cosine_inertia(x, y)
    xt = torch.from_numpy(x)
    plain_misses = 0
    for seed in range(10):
        res = kmeans(xt, 50, n_init=10, seed=seed)
        sk = SkKMeans(n_clusters=50, n_init=10, random_state=seed).fit(x)
        assert res.inertia == pytest.approx(_cosine_inertia(x, res.labels.numpy()), rel=1e-4)
        assert res.inertia <= _cosine_inertia(x, sk.labels_) * 1.005, seed
        assert res.inertia <= optimum * 1.005, seed
        assert adjusted_rand_score(y, res.labels.numpy()) == 1.0
        plain_misses += kmeans(xt, 50, n_init=10, seed=seed, relocate=False).inertia > optimum * 1.005
    assert plain_misses >= 3  # the case is hard for restarts alone


def test_sklearn_seeding_is_sklearns_kmeans_plusplus():
    from sklearn.cluster import kmeans_plusplus

    rng = np.random.default_rng(2)
    x = rng.standard_normal((300, 5)).astype(np.float32)
    centers, _ = kmeans_plusplus(x, 5, random_state=restart_seeds(3, 1)[0] % 2**32)
    res = kmeans(torch.from_numpy(x), 5, metric="euclidean", seed=3, seeding="sklearn", max_iter=1,
                 relocate=False)
    # one Lloyd step from those seeds: the means of the points nearest each seed
    near = ((x[:, None, :] - centers[None]) ** 2).sum(-1).argmin(1)
    for c in range(5):
        np.testing.assert_allclose(res.centers[c].numpy(), x[near == c].mean(0), rtol=1e-4, atol=1e-5)


def test_different_seeds_explore_different_inits():
    rng = np.random.default_rng(1)
    x = torch.from_numpy(rng.standard_normal((200, 2)).astype(np.float32))
    results = {tuple(kmeans(x, 8, metric="euclidean", seed=s).labels.tolist()) for s in range(6)}
    assert len(results) > 1


# ------------------------------------------------------------------ vs scikit-learn
def test_inertia_comparable_to_sklearn_on_blobs():
    x, y = euclidean_blobs(n=500, k=6, d=5, std=1.0, seed=11)
    res = kmeans(x, 6, metric="euclidean", seed=0, n_init=3)
    sk = SkKMeans(n_clusters=6, n_init=10, random_state=0).fit(x.numpy().astype(np.float64))
    assert res.inertia <= sk.inertia_ * 1.01
    assert res.inertia >= sk.inertia_ * 0.99  # sklearn's optimum is not beaten by much either
    assert adjusted_rand_score(sk.labels_, res.labels.numpy()) > 0.99


def test_inertia_close_to_sklearn_on_overlapping_data():
    x, _ = euclidean_blobs(n=400, k=4, d=3, std=3.0, seed=2)
    res = kmeans(x, 4, metric="euclidean", seed=0, n_init=5)
    sk = SkKMeans(n_clusters=4, n_init=10, random_state=0).fit(x.numpy().astype(np.float64))
    assert res.inertia <= sk.inertia_ * 1.03


def test_n_clusters_equal_n_points():
    x = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [5.0, 5.0], [-3.0, 2.0], [2.0, -4.0]])
    res = kmeans(x, 6, metric="euclidean", seed=0)
    assert sorted(res.labels.tolist()) == list(range(6))
    assert res.inertia == pytest.approx(0.0, abs=1e-6)


# ------------------------------------------------------------------------ errors
@pytest.mark.parametrize("k", [1, 0, 21])
def test_bad_n_clusters(k):
    x = torch.randn(20, 3)
    with pytest.raises(ValueError):
        kmeans(x, k)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_input(bad):
    x = torch.randn(20, 3)
    x[4, 1] = bad
    with pytest.raises(ValueError):
        kmeans(x, 3)
    with pytest.raises(ValueError):
        kmeans(x, 3, metric="euclidean")


def test_bad_metric_and_shape():
    with pytest.raises(ValueError, match="seeding"):
        kmeans(torch.randn(20, 3), 3, seeding="faiss")
    with pytest.raises(ValueError):
        kmeans(torch.randn(20, 3), 3, metric="manhattan")
    with pytest.raises(ValueError):
        kmeans(torch.randn(20), 3)


# ------------------------------------------------------------------------ assign
@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
def test_assign_brute_force(metric):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((70, 5)) * rng.uniform(0.3, 3.0, size=(70, 1))
    centers = rng.standard_normal((6, 5)) * 0.7
    labels, dists = assign(torch.from_numpy(x.astype(np.float32)),
                           torch.from_numpy(centers.astype(np.float32)), metric)
    assert labels.shape == (70,) and dists.shape == (70,)
    for i in range(70):
        if metric == "euclidean":
            d = [float(np.sum((x[i] - centers[j]) ** 2)) for j in range(6)]
        else:
            xi = x[i] / np.linalg.norm(x[i])
            d = [1.0 - float(np.dot(xi, centers[j]) / np.linalg.norm(centers[j])) for j in range(6)]
        srt = sorted(d)
        if srt[1] - srt[0] > 1e-4:
            assert int(labels[i]) == int(np.argmin(d))
        assert float(dists[i]) == pytest.approx(srt[0], rel=1e-4, abs=1e-4)


def test_assign_hand_made():
    centers = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    x = torch.tensor([[1.0, 1.0], [9.0, 1.0], [1.0, 8.0], [6.0, 0.0]])
    labels, dists = assign(x, centers, "euclidean")
    assert labels.tolist() == [0, 1, 2, 1]
    torch.testing.assert_close(dists, torch.tensor([2.0, 2.0, 5.0, 16.0]))
    # cosine: direction only, whatever the norms of points and centres.
    centers_c = torch.tensor([[1.0, 0.0], [0.0, 2.0], [-3.0, 0.0]])
    xc = torch.tensor([[6.0, 0.5], [0.1, 0.2], [-5.0, 1.0], [1.0, 0.9]])
    labels_c, _ = assign(xc, centers_c, "cosine")
    assert labels_c.tolist() == [0, 1, 2, 0]


def test_warm_start_is_sklearns_lloyd_from_the_same_centres():
    """init=centres runs Lloyd from them (no restarts): on Euclidean data the labels are
    scikit-learn's KMeans(init=centres, n_init=1) with the same iteration cap."""
    x, _ = make_blobs(600, centers=5, cluster_std=2.5, random_state=3)
    start = x[[0, 1, 2, 3, 4]]
    for iters in (1, 2, 50):
        ours = kmeans(torch.as_tensor(x, dtype=torch.float32), 5, metric="euclidean", max_iter=iters,
                      init=torch.as_tensor(start, dtype=torch.float32), tol=0.0)
        ref = SkKMeans(5, init=start, n_init=1, max_iter=iters, tol=0.0, algorithm="lloyd").fit(x)
        # scikit-learn's labels are those of its last centres, as ours are
        assert adjusted_rand_score(ref.labels_, ours.labels.numpy()) > 0.99, iters
    with pytest.raises(ValueError, match="init must hold 5 centres"):
        kmeans(torch.as_tensor(x, dtype=torch.float32), 5, init=torch.zeros(4, 2))
