"""Tests of conr.ops.metrics against scikit-learn, brute-force references and hand-made cases."""
from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

from conr.ops.metrics import (best_cluster_map, cluster_accuracy, confusion, evaluate, knn_accuracy,
                          neighbor_purity)


# ------------------------------------------------------------------- references
def brute_force_acc(y_true, y_pred):
    """Best one-to-one map of clusters to classes by trying every permutation.

    Both label sets are padded to m = max(#classes, #clusters) slots; a cluster mapped
    to a padding class (or a padding cluster) scores nothing, so every partial
    one-to-one matching is covered. Returns (acc, best map restricted to real pairs)."""
    classes = sorted(set(int(v) for v in y_true))
    clusters = sorted(set(int(v) for v in y_pred))
    m = max(len(classes), len(clusters))
    best, best_map = -1, None
    for perm in itertools.permutations(range(m)):
        mapping = {clusters[p]: classes[perm[p]] for p in range(len(clusters)) if perm[p] < len(classes)}
        correct = 0
        for t, p in zip(y_true, y_pred):
            if mapping.get(int(p)) == int(t):
                correct += 1
        if correct > best:
            best, best_map = correct, mapping
    return best / len(y_true), best_map


def _random_labels(n, n_classes, n_clusters, seed, agreement=0.6):
    rng = np.random.default_rng(seed)
    y_true = rng.integers(0, n_classes, size=n)
    perm = rng.permutation(n_clusters)
    y_pred = np.where(rng.random(n) < agreement, perm[y_true % n_clusters],
                      rng.integers(0, n_clusters, size=n))
    # make sure every class and every cluster is present
    y_true[:n_classes] = np.arange(n_classes)
    y_pred[n_classes:n_classes + n_clusters] = np.arange(n_clusters)
    return y_true, y_pred


# ------------------------------------------------------------------------- ACC
@pytest.mark.parametrize("n_classes,n_clusters", [(4, 4), (6, 6), (3, 5), (2, 6), (5, 3), (6, 2), (1, 3)])
@pytest.mark.parametrize("seed", [0, 1])
def test_acc_matches_brute_force(n_classes, n_clusters, seed):
    y_true, y_pred = _random_labels(60, n_classes, n_clusters, seed)
    want, _ = brute_force_acc(y_true.tolist(), y_pred.tolist())
    assert cluster_accuracy(y_true, y_pred) == pytest.approx(want, abs=1e-12)
    assert evaluate(y_true, y_pred)["acc"] == pytest.approx(want, abs=1e-12)


@pytest.mark.parametrize("n_classes,n_clusters", [(4, 4), (3, 5), (5, 3)])
def test_best_cluster_map_achieves_brute_force_optimum(n_classes, n_clusters):
    y_true, y_pred = _random_labels(50, n_classes, n_clusters, seed=9)
    want, _ = brute_force_acc(y_true.tolist(), y_pred.tolist())
    mapping = best_cluster_map(y_true, y_pred)
    assert len(mapping) == min(n_classes, n_clusters)
    assert len(set(mapping.values())) == len(mapping)  # one-to-one
    assert set(mapping) <= set(y_pred.tolist()) and set(mapping.values()) <= set(y_true.tolist())
    acc = sum(mapping.get(int(p)) == int(t) for t, p in zip(y_true, y_pred)) / len(y_true)
    assert acc == pytest.approx(want, abs=1e-12)


def test_acc_hand_worked_example():
    """Contingency (cluster x class): c0 -> {0:1, 2:2}, c1 -> {0:2, 2:1}, c2 -> {1:3}.
    Best map: c1->0 (2), c2->1 (3), c0->2 (2) -> 7/9."""
    y_true = [0, 0, 0, 1, 1, 1, 2, 2, 2]
    y_pred = [1, 1, 0, 2, 2, 2, 0, 0, 1]
    assert cluster_accuracy(y_true, y_pred) == pytest.approx(7 / 9)
    assert best_cluster_map(y_true, y_pred) == {1: 0, 2: 1, 0: 2}


def test_acc_hand_example_more_clusters_than_classes():
    """Two classes, three clusters: cluster 7 = 3 of class 0, cluster 3 = 2 of class 0 and
    1 of class 1, cluster 5 = 2 of class 1. Best: 7->0, 5->1 (3 + 2); cluster 3 unmatched
    -> 5/8."""
    y_true = [0, 0, 0, 0, 0, 1, 1, 1]
    y_pred = [7, 7, 7, 3, 3, 3, 5, 5]
    assert cluster_accuracy(y_true, y_pred) == pytest.approx(5 / 8)
    assert best_cluster_map(y_true, y_pred) == {7: 0, 5: 1}


def test_acc_hand_example_fewer_clusters_than_classes():
    """Three classes, one predicted cluster: best is the largest class."""
    y_true = [0, 1, 1, 2, 2, 2]
    y_pred = [4, 4, 4, 4, 4, 4]
    assert cluster_accuracy(y_true, y_pred) == pytest.approx(3 / 6)
    assert best_cluster_map(y_true, y_pred) == {4: 2}


def test_permuted_perfect_labelling():
    rng = np.random.default_rng(0)
    y_true = rng.integers(0, 5, size=100)
    relabel = np.array([3, 0, 4, 1, 2]) + 10  # arbitrary non-contiguous cluster ids
    y_pred = relabel[y_true]
    res = evaluate(y_true, y_pred)
    assert set(res) == {"nmi", "acc", "ari"}
    assert res["acc"] == 1.0
    assert res["nmi"] == pytest.approx(1.0)
    assert res["ari"] == pytest.approx(1.0)
    assert best_cluster_map(y_true, y_pred) == {int(relabel[c]): c for c in range(5)}


# ------------------------------------------------------------------- NMI / ARI
@pytest.mark.parametrize("n_classes,n_clusters,seed", [(4, 4, 0), (10, 7, 1), (3, 8, 2), (5, 5, 3)])
def test_evaluate_matches_sklearn(n_classes, n_clusters, seed):
    y_true, y_pred = _random_labels(300, n_classes, n_clusters, seed, agreement=0.5)
    res = evaluate(y_true, y_pred)
    assert res["nmi"] == pytest.approx(normalized_mutual_info_score(y_true, y_pred), abs=1e-12)
    assert res["ari"] == pytest.approx(adjusted_rand_score(y_true, y_pred), abs=1e-12)
    assert all(isinstance(v, float) for v in res.values())


def test_nmi_hand_computed():
    """y_true = [0,0,1,1], y_pred = [0,0,0,1]: MI and entropies by hand, arithmetic mean
    normalisation (scikit-learn's default)."""
    y_true = [0, 0, 1, 1]
    y_pred = [0, 0, 0, 1]
    h_true = math.log(2)
    h_pred = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))
    # joint: (0,0)=2/4, (1,0)=1/4, (1,1)=1/4
    mi = 0.5 * math.log(0.5 / (0.5 * 0.75)) + 0.25 * math.log(0.25 / (0.5 * 0.75)) \
        + 0.25 * math.log(0.25 / (0.5 * 0.25))
    res = evaluate(y_true, y_pred)
    assert res["nmi"] == pytest.approx(mi / ((h_true + h_pred) / 2), abs=1e-9)
    assert res["acc"] == pytest.approx(0.75)


def test_evaluate_accepts_tensors():
    y_true = torch.tensor([0, 0, 1, 1, 2, 2])
    y_pred = torch.tensor([1, 1, 0, 0, 2, 0])
    res = evaluate(y_true, y_pred)
    assert res["acc"] == pytest.approx(5 / 6)
    assert res["ari"] == pytest.approx(adjusted_rand_score(y_true.numpy(), y_pred.numpy()))


def test_evaluate_errors():
    with pytest.raises(ValueError):
        evaluate([0, 1, 1], [0, 1])
    with pytest.raises(ValueError):
        evaluate([], [])


# -------------------------------------------------------------------- confusion
def test_confusion_permuted_perfect_is_diagonal():
    y_true = np.array([0, 0, 1, 2, 2, 2])
    y_pred = np.array([5, 5, 9, 1, 1, 1])
    cm = confusion(y_true, y_pred)
    np.testing.assert_array_equal(cm, np.diag([2, 1, 3]))


def test_confusion_hand_example():
    """Same worked example as ACC (map c1->0, c2->1, c0->2): rows = true class,
    columns = mapped prediction."""
    y_true = [0, 0, 0, 1, 1, 1, 2, 2, 2]
    y_pred = [1, 1, 0, 2, 2, 2, 0, 0, 1]
    cm = confusion(y_true, y_pred)
    np.testing.assert_array_equal(cm, np.array([[2, 0, 1], [0, 3, 0], [1, 0, 2]]))
    assert np.trace(cm) == 7


# --------------------------------------------------------------- neighbor_purity
def test_neighbor_purity_hand_made():
    labels = torch.tensor([0, 0, 1, 1, 1])
    neighbors = torch.tensor([[0, 1, 2],   # excl self: same 1 of 2
                              [1, 0, 4],   # 1 of 2
                              [2, 3, 4],   # 2 of 2
                              [3, 4, 2],   # 2 of 2
                              [4, 2, 0]])  # 1 of 2
    assert neighbor_purity(neighbors, labels) == pytest.approx(7 / 10)
    assert neighbor_purity(neighbors, labels, exclude_self=True) == pytest.approx(7 / 10)
    # with self: 7 + 5 self matches over 15 slots
    assert neighbor_purity(neighbors, labels, exclude_self=False) == pytest.approx(12 / 15)


def test_neighbor_purity_self_absent_or_not_first():
    labels = [0, 1, 0, 1]
    neighbors = [[2, 0], [3, 2], [1, 3], [0, 2]]
    # excl self: row0 {2:same}, row1 {3:same, 2:diff}, row2 {1:diff, 3:diff},
    # row3 {0:diff, 2:diff} -> 2 same out of 7 valid
    assert neighbor_purity(neighbors, labels) == pytest.approx(2 / 7)
    # incl self: row0 2/2, row1 1/2, row2 0/2, row3 0/2 -> 3/8
    assert neighbor_purity(neighbors, labels, exclude_self=False) == pytest.approx(3 / 8)


def test_neighbor_purity_random_vs_loop():
    rng = np.random.default_rng(4)
    labels = rng.integers(0, 3, size=25)
    nb = np.stack([np.concatenate([[i], rng.choice(np.delete(np.arange(25), i), 5, replace=False)])
                   for i in range(25)])
    same = sum(labels[j] == labels[i] for i in range(25) for j in nb[i] if j != i)
    assert neighbor_purity(torch.from_numpy(nb), torch.from_numpy(labels)) == pytest.approx(same / (25 * 5))


# ----------------------------------------------------------------- knn_accuracy
def reference_knn_accuracy(train, train_labels, test, test_labels, k, temperature):
    train = np.asarray(train, dtype=np.float64)
    test = np.asarray(test, dtype=np.float64)
    n_classes = int(max(train_labels)) + 1
    correct = 0
    for q in range(test.shape[0]):
        qv = test[q] / np.linalg.norm(test[q])
        sims = []
        for t in range(train.shape[0]):
            tv = train[t] / np.linalg.norm(train[t])
            sims.append((float(np.dot(qv, tv)), t))
        sims.sort(key=lambda st: -st[0])
        votes = [0.0] * n_classes
        for s, t in sims[:k]:
            votes[int(train_labels[t])] += math.exp(s / temperature)
        pred = max(range(n_classes), key=lambda c: votes[c])
        correct += int(pred == int(test_labels[q]))
    return correct / test.shape[0]


@pytest.mark.parametrize("k,temperature", [(5, 0.07), (20, 0.07), (7, 1.0), (3, 0.5)])
def test_knn_accuracy_matches_brute_force(k, temperature):
    rng = np.random.default_rng(k)
    centers = rng.standard_normal((3, 6))
    train_labels = rng.integers(0, 3, size=40)
    test_labels = rng.integers(0, 3, size=30)
    train = centers[train_labels] + 1.2 * rng.standard_normal((40, 6))
    test = centers[test_labels] + 1.2 * rng.standard_normal((30, 6))
    want = reference_knn_accuracy(train, train_labels, test, test_labels, k, temperature)
    got = knn_accuracy(torch.from_numpy(train.astype(np.float32)), torch.from_numpy(train_labels),
                       torch.from_numpy(test.astype(np.float32)), torch.from_numpy(test_labels),
                       k=k, temperature=temperature)
    assert got == pytest.approx(want, abs=1e-12)
    assert 0.0 < want < 1.0  # a non-trivial case


def test_knn_accuracy_temperature_matters_hand_made():
    """Query along +x. Train: label 0 at cos 0.99, two label-1 points at cos 0.5,
    a label-0 point pointing away. k = 3.
    T = 0.07: e^(0.99/0.07) = e^14.1 > 2 e^(0.5/0.07) = 2 e^7.1 -> predicts 0.
    T = 10:   e^0.099 = 1.10 < 2 e^0.05 = 2.10 -> predicts 1."""
    a = math.acos(0.99)
    b = math.acos(0.5)
    train = torch.tensor([[math.cos(a), math.sin(a)], [math.cos(b), math.sin(b)],
                          [math.cos(b), -math.sin(b)], [-1.0, 0.1]]) * torch.tensor([[2.0], [0.5], [3.0], [1.0]])
    train_labels = torch.tensor([0, 1, 1, 0])
    test = torch.tensor([[3.0, 0.0]])
    test_labels = torch.tensor([0])
    assert knn_accuracy(train, train_labels, test, test_labels, k=3, temperature=0.07) == 1.0
    assert knn_accuracy(train, train_labels, test, test_labels, k=3, temperature=10.0) == 0.0
    # k = 1: only the nearest (label 0) votes
    assert knn_accuracy(train, train_labels, test, test_labels, k=1, temperature=10.0) == 1.0


def test_evaluate_scores_the_labelled_samples_only():
    """Label -1 (STL-10's unlabelled images) is left out: the scores equal those of the
    labelled subset alone, computed by scikit-learn and a brute-force ACC."""
    from itertools import permutations

    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    rng = np.random.default_rng(4)
    y_true = rng.integers(0, 3, 60)
    y_pred = (y_true + (rng.random(60) < 0.3) * rng.integers(1, 3, 60)) % 3
    y_true[rng.random(60) < 0.5] = -1
    known = y_true >= 0
    res = evaluate(y_true, y_pred)
    assert set(res) == {"nmi", "acc", "ari"} and known.sum() < 60
    t, p = y_true[known], y_pred[known]
    assert res["nmi"] == pytest.approx(normalized_mutual_info_score(t, p), abs=1e-12)
    assert res["ari"] == pytest.approx(adjusted_rand_score(t, p), abs=1e-12)
    acc = max(np.mean([perm[c] == y for c, y in zip(p, t)]) for perm in permutations(range(3)))
    assert res["acc"] == pytest.approx(acc, abs=1e-12)
    with pytest.raises(ValueError, match="no sample has a known label"):
        evaluate([-1, -1], [0, 1])
