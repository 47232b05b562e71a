"""Tests of conr.ops.neighbors against slow, loop-based references written from the spec
(section 4a), never against the module's own output."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from conr.ops.neighbors import conaff_neighbors, contextual_similarity, euclidean_neighbors, same_cluster_neighbors


# --------------------------------------------------------------------------- data
def _unit_rows(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def random_unit_feats(b: int = 48, d: int = 16, seed: int = 0) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    return torch.from_numpy(_unit_rows(rng.standard_normal((b, d))).astype(np.float32))


def blob_feats(n_blobs: int = 4, per_blob: int = 12, d: int = 16, noise: float = 0.15,
               seed: int = 1, shuffle: bool = True):
    """Tight Gaussian blobs around random unit directions, rows L2-normalised."""
    rng = np.random.default_rng(seed)
    centers = _unit_rows(rng.standard_normal((n_blobs, d)))
    labels = np.repeat(np.arange(n_blobs), per_blob)
    x = centers[labels] + noise * rng.standard_normal((labels.size, d)) / math.sqrt(d)
    if shuffle:
        perm = rng.permutation(labels.size)
        x, labels = x[perm], labels[perm]
    return torch.from_numpy(_unit_rows(x).astype(np.float32)), labels


def orthogonal_cluster_feats(n_blobs: int = 4, per_blob: int = 10, d: int = 16,
                             noise: float = 0.05, seed: int = 2):
    """Very well separated clusters: blob centres are orthonormal basis vectors."""
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.repeat(np.arange(n_blobs), per_blob))
    x = np.eye(d)[labels] + noise * rng.standard_normal((labels.size, d)) / math.sqrt(d)
    return torch.from_numpy(_unit_rows(x).astype(np.float32)), labels


# ---------------------------------------------------------------- reference (spec 4a)
def reference_contextual_similarity(feats, k1: int, k2: int):
    """Spec 4a steps 1-4 as explicit loops, in float64.

    Returns (C, S, R) with S the plain similarity and R the top-k1 ranking lists."""
    f = np.asarray(feats, dtype=np.float64)
    b = f.shape[0]
    # Step 1: S = F F^T and each row's top-k1 columns in descending order.
    s_mat = np.zeros((b, b))
    for i in range(b):
        for j in range(b):
            s_mat[i, j] = float(np.dot(f[i], f[j]))
    ranks = np.zeros((b, k1), dtype=np.int64)
    top_s = np.zeros((b, k1))
    for i in range(b):
        order = sorted(range(b), key=lambda j: -s_mat[i, j])
        for j in range(k1):
            ranks[i, j] = order[j]
            top_s[i, j] = s_mat[i, order[j]]
    # Step 2: binary adjacency.
    a = np.zeros((b, b))
    for i in range(b):
        for j in range(k1):
            a[i, ranks[i, j]] = 1.0
    # Step 3: twice {symmetrise; alpha-query expansion (alpha=2) over top-k2; L2 rows}.
    if k2 > 1:
        for _ in range(2):
            sym = np.zeros((b, b))
            for i in range(b):
                for j in range(b):
                    sym[i, j] = a[i, j] + a[j, i]
            expanded = np.zeros((b, b))
            for i in range(b):
                for j in range(k2):
                    expanded[i] += top_s[i, j] ** 2 * sym[ranks[i, j]]
            for i in range(b):
                expanded[i] /= math.sqrt(float(np.sum(expanded[i] ** 2)))
            a = expanded
    # Step 4: C = A A^T.
    c = np.zeros((b, b))
    for i in range(b):
        for j in range(b):
            c[i, j] = float(np.dot(a[i], a[j]))
    return c, s_mat, ranks


def _assert_clean_k1_boundary(s_mat: np.ndarray, k1: int, gap: float = 1e-6) -> None:
    """Guard on the test data: the k1-th and (k1+1)-th similarities of every row are
    distinct enough that float32 and float64 select the same ranking lists."""
    if k1 >= s_mat.shape[0]:
        return
    srt = -np.sort(-s_mat, axis=1)
    assert np.all(srt[:, k1 - 1] - srt[:, k1] > gap)


KK = [(5, 1), (10, 2), (30, 10)]


# ------------------------------------------------------------- contextual_similarity
@pytest.mark.parametrize("k1,k2", KK)
def test_contextual_similarity_matches_reference_random(k1, k2):
    feats = random_unit_feats(48, 16, seed=k1 + k2)
    c_ref, s_mat, _ = reference_contextual_similarity(feats.numpy(), k1, k2)
    _assert_clean_k1_boundary(s_mat, k1)
    c = contextual_similarity(feats, k1, k2)
    assert c.shape == (48, 48)
    assert c.dtype == torch.float32
    np.testing.assert_allclose(c.numpy(), c_ref, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("k1,k2", KK)
def test_contextual_similarity_matches_reference_blobs(k1, k2):
    feats, _ = blob_feats(4, 12, 16, seed=3 + k1)
    c_ref, s_mat, _ = reference_contextual_similarity(feats.numpy(), k1, k2)
    _assert_clean_k1_boundary(s_mat, k1)
    c = contextual_similarity(feats, k1, k2)
    assert c.dtype == torch.float32
    np.testing.assert_allclose(c.numpy(), c_ref, rtol=1e-4, atol=1e-5)


def test_contextual_similarity_k2_1_is_shared_list_count():
    """With k2 = 1, A stays binary and C[i, j] = |top-k1(i) ∩ top-k1(j)| (an integer),
    so C[i, i] = k1."""
    k1 = 7
    feats = random_unit_feats(30, 8, seed=11)
    f = feats.numpy().astype(np.float64)
    s_mat = f @ f.T
    _assert_clean_k1_boundary(s_mat, k1)
    lists = [set(np.argsort(-s_mat[i], kind="stable")[:k1].tolist()) for i in range(30)]
    expected = np.array([[len(lists[i] & lists[j]) for j in range(30)] for i in range(30)], dtype=float)
    c = contextual_similarity(feats, k1, 1).numpy()
    np.testing.assert_array_equal(c, expected)
    np.testing.assert_array_equal(np.diag(c), np.full(30, k1))


def test_contextual_similarity_k2_gt_1_rows_unit_norm_and_symmetric():
    """After step 3 every row of A has unit norm, so C is symmetric with unit diagonal
    and entries in [0, 1] (A is non-negative)."""
    feats = random_unit_feats(40, 12, seed=5)
    c = contextual_similarity(feats, 10, 3).numpy()
    np.testing.assert_allclose(np.diag(c), 1.0, atol=1e-5)
    np.testing.assert_allclose(c, c.T, atol=1e-6)
    assert c.min() >= -1e-6 and c.max() <= 1.0 + 1e-5


def test_contextual_similarity_hand_made_three_points():
    """Tiny case worked by hand: B = 3 points on a line-like arrangement, k1 = 2, k2 = 1.
    Sims: x0·x1 = 0.8, x1·x2 = 0.6, x0·x2 = 0 -> lists {0,1}, {1,0}, {2,1}."""
    x = torch.tensor([[1.0, 0.0], [0.8, 0.6], [0.0, 1.0]])
    c = contextual_similarity(x, 2, 1)
    expected = torch.tensor([[2.0, 2.0, 1.0], [2.0, 2.0, 1.0], [1.0, 1.0, 2.0]])
    torch.testing.assert_close(c, expected)


def test_contextual_similarity_bfloat16_runs_and_returns_float32():
    feats, labels = orthogonal_cluster_feats(4, 10)
    c = contextual_similarity(feats.bfloat16(), 10, 2)
    assert c.dtype == torch.float32 and c.shape == (40, 40)
    assert torch.isfinite(c).all()
    same = torch.from_numpy(labels[:, None] == labels[None, :])
    # Well separated: no contextual similarity across clusters, positive within.
    assert (c[~same].abs() < 1e-6).all()
    assert (c[same] > 0).all()


# ----------------------------------------------------------------- conaff_neighbors
def _check_topk_values(nbrs: np.ndarray, c_ref: np.ndarray, k: int, atol: float = 1e-5):
    b = c_ref.shape[0]
    assert nbrs.shape == (b, k)
    for i in range(b):
        assert len(set(nbrs[i].tolist())) == k, "duplicate neighbour"
        got = c_ref[i, nbrs[i]]
        want = -np.sort(-c_ref[i])[:k]
        np.testing.assert_allclose(got, want, atol=atol, rtol=0)


@pytest.mark.parametrize("k,k1,k2", [(5, 5, 1), (10, 10, 2), (20, 30, 10), (8, 12, 3)])
def test_conaff_neighbors_random_values_match_reference(k, k1, k2):
    feats = random_unit_feats(48, 16, seed=100 + k + k1 + k2)
    c_ref, s_mat, _ = reference_contextual_similarity(feats.numpy(), k1, k2)
    _assert_clean_k1_boundary(s_mat, k1)
    nbrs = conaff_neighbors(feats, k, k1, k2)
    assert nbrs.dtype == torch.int64
    nbrs = nbrs.numpy()
    _check_topk_values(nbrs, c_ref, k)
    # Self attains the row maximum (C[i, i] = k1 for k2 = 1, 1 for unit rows otherwise).
    for i in range(48):
        assert np.isclose(c_ref[i, i], c_ref[i].max())
    if k2 > 1:
        # Without ties the order is determined: self first, then descending C.
        for i in range(48):
            srt = -np.sort(-c_ref[i])
            if np.all(np.diff(srt[: k + 1]) < -1e-4):
                assert nbrs[i, 0] == i
                np.testing.assert_array_equal(nbrs[i], np.argsort(-c_ref[i])[:k])
                assert set(nbrs[i].tolist()) == set(np.argsort(-c_ref[i])[:k].tolist())


@pytest.mark.parametrize("k,k1,k2", [(5, 5, 1), (10, 10, 2), (20, 30, 10)])
def test_conaff_neighbors_blobs_values_match_reference(k, k1, k2):
    feats, _ = blob_feats(4, 12, 16, seed=20 + k)
    c_ref, s_mat, _ = reference_contextual_similarity(feats.numpy(), k1, k2)
    _assert_clean_k1_boundary(s_mat, k1)
    nbrs = conaff_neighbors(feats, k, k1, k2).numpy()
    _check_topk_values(nbrs, c_ref, k)


def test_conaff_neighbors_self_included_random():
    feats = random_unit_feats(40, 16, seed=21)
    for k, k1, k2 in [(10, 10, 2), (5, 20, 4)]:
        c_ref, _, _ = reference_contextual_similarity(feats.numpy(), k1, k2)
        off = c_ref - np.eye(40) * 10.0
        assert off.max() < 1.0 - 1e-4  # no other row reaches self's C = 1
        nbrs = conaff_neighbors(feats, k, k1, k2).numpy()
        for i in range(40):
            assert nbrs[i, 0] == i


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("k,k1,k2", [(10, 10, 1), (10, 10, 2), (5, 10, 2), (5, 10, 1), (8, 10, 3)])
def test_conaff_neighbors_recover_well_separated_clusters(dtype, k, k1, k2):
    """Clusters of size 10 that are far apart: every ConAff neighbourhood lies inside
    the anchor's own cluster (is exactly it when k = 10), in float32 and bfloat16."""
    feats, labels = orthogonal_cluster_feats(4, 10)
    nbrs = conaff_neighbors(feats.to(dtype), k, k1, k2).numpy()
    assert nbrs.shape == (40, k)
    for i in range(40):
        members = set(np.flatnonzero(labels == labels[i]).tolist())
        got = set(nbrs[i].tolist())
        assert len(got) == k
        assert got <= members
        if k == 10:
            assert got == members
            assert i in got


# -------------------------------------------------------------- euclidean_neighbors
def _reference_sq_dists(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    b = x.shape[0]
    d = np.zeros((b, b))
    for i in range(b):
        for j in range(b):
            d[i, j] = float(np.sum((x[i] - x[j]) ** 2))
    return d


def _check_euclidean(x: torch.Tensor, k: int):
    d = _reference_sq_dists(x.float().numpy())
    nbrs = euclidean_neighbors(x, k)
    assert nbrs.dtype == torch.int64 and nbrs.shape == (x.shape[0], k)
    nbrs = nbrs.numpy()
    for i in range(x.shape[0]):
        srt = np.sort(d[i])
        np.testing.assert_allclose(d[i, nbrs[i]], srt[:k], rtol=1e-4, atol=1e-4)
        assert nbrs[i, 0] == i  # self (distance 0) first
        if np.all(np.diff(srt[: k + 1]) > 1e-3):  # no near-ties: exact order
            np.testing.assert_array_equal(nbrs[i], np.argsort(d[i], kind="stable")[:k])


@pytest.mark.parametrize("k", [1, 5, 12])
def test_euclidean_neighbors_unit_features(k):
    _check_euclidean(random_unit_feats(32, 8, seed=k), k)


@pytest.mark.parametrize("k", [1, 4, 15])
def test_euclidean_neighbors_non_normalised_features(k):
    """Rows with very different norms: Euclidean order differs from cosine order."""
    rng = np.random.default_rng(42 + k)
    x = rng.standard_normal((40, 6)) * rng.uniform(0.2, 5.0, size=(40, 1)) + 1.5
    _check_euclidean(torch.from_numpy(x.astype(np.float32)), k)


def test_euclidean_neighbors_hand_made_line():
    """Points on a line at 0, 1, 3, 7, 15: known nearest-first orders."""
    x = torch.tensor([[0.0], [1.0], [3.0], [7.0], [15.0]])
    nbrs = euclidean_neighbors(x, 3)
    expected = torch.tensor([[0, 1, 2], [1, 0, 2], [2, 1, 0], [3, 2, 1], [4, 3, 2]])
    torch.testing.assert_close(nbrs, expected)


def test_euclidean_is_not_cosine_order():
    """A long vector in the same direction is cosine-identical but Euclidean-far."""
    x = torch.tensor([[1.0, 0.0], [10.0, 0.0], [0.9, 0.5], [0.0, 1.0]])
    nbrs = euclidean_neighbors(x, 2)
    assert nbrs[0].tolist() == [0, 2]
    assert nbrs[1].tolist() == [1, 0]


# --------------------------------------------------------------------------- errors
def test_errors_k_not_smaller_than_batch():
    feats = random_unit_feats(10, 4)
    with pytest.raises(ValueError):
        conaff_neighbors(feats, 10, 10, 2)
    with pytest.raises(ValueError):
        conaff_neighbors(feats, 11, 10, 2)
    with pytest.raises(ValueError):
        euclidean_neighbors(feats, 10)


def test_errors_k_below_one():
    feats = random_unit_feats(10, 4)
    with pytest.raises(ValueError):
        conaff_neighbors(feats, 0, 5, 2)
    with pytest.raises(ValueError):
        euclidean_neighbors(feats, 0)


def test_errors_k1_smaller_than_k2():
    feats = random_unit_feats(20, 4)
    with pytest.raises(ValueError):
        contextual_similarity(feats, 3, 5)
    with pytest.raises(ValueError):
        conaff_neighbors(feats, 3, 3, 5)


def test_errors_k1_larger_than_batch():
    feats = random_unit_feats(10, 4)
    with pytest.raises(ValueError):
        contextual_similarity(feats, 11, 2)
    with pytest.raises(ValueError):
        conaff_neighbors(feats, 5, 11, 2)
    # k1 == B is allowed (the whole batch is each list).
    assert contextual_similarity(feats, 10, 2).shape == (10, 10)


@pytest.mark.parametrize("shape", [(10,), (2, 5, 4), ()])
def test_errors_non_2d_input(shape):
    x = torch.randn(shape)
    with pytest.raises(ValueError):
        contextual_similarity(x, 3, 2)
    with pytest.raises(ValueError):
        conaff_neighbors(x, 2, 3, 2)
    with pytest.raises(ValueError):
        euclidean_neighbors(x, 2)


def test_same_cluster_neighbors_matches_a_loop():
    g = torch.Generator().manual_seed(3)
    neighbors = torch.randint(0, 30, (30, 6), generator=g)
    labels = torch.randint(0, 4, (30,), generator=g)
    out = same_cluster_neighbors(neighbors, labels)
    for i in range(30):
        for j in range(6):
            n = int(neighbors[i, j])
            assert int(out[i, j]) == (n if labels[n] == labels[i] else i)


def test_same_cluster_neighbors_hand_made():
    # two pseudo-clusters {0, 1} and {2, 3}; sample 1's second neighbour (2) is of the other one
    neighbors = torch.tensor([[0, 1], [1, 2], [2, 3], [3, 0]])
    labels = torch.tensor([5, 5, 7, 7])
    assert same_cluster_neighbors(neighbors, labels).tolist() == [[0, 1], [1, 1], [2, 3], [3, 3]]
