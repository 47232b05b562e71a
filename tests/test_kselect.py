"""Choosing K without labels (conr/kselect.py): synthetic blobs of known K, hand-made
cases whose scores are known exactly, the digits, and the estimator / conr cluster
path that trains stage 2 with the estimated K."""
from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.cluster import KMeans
from sklearn.datasets import load_digits, make_blobs
from sklearn.metrics import silhouette_score

from conr.cluster.kselect import CRITERIA, best_k, default_k_range, estimate_k, k_scores, parse_k


def _blobs(k: int, seed: int, n: int = 400, dim: int = 16):
    # centres far from the origin in different directions: distinct after L2 normalisation too
    return make_blobs(n_samples=n, n_features=dim, centers=k, cluster_std=0.6, center_box=(-10, 10),
                      random_state=seed)


@pytest.mark.parametrize("k", [3, 5, 8])
def test_every_criterion_finds_the_k_of_separated_blobs(k):
    x, _ = _blobs(k, seed=k)
    table = k_scores(x, (2, 12), seed=0)
    for name in CRITERIA:
        assert best_k(table, name) == k, (name, [round(r[name], 3) for r in table])
    chosen, rows = estimate_k(x, (2, 12), seed=0)
    assert chosen == k and [r["k"] for r in rows] == list(range(2, 13))


def test_silhouette_matches_sklearn_on_the_same_partition():
    # independent reference: sklearn's own KMeans + silhouette_score (cosine) on the unit vectors
    x, _ = _blobs(4, seed=1, n=300)
    u = x / np.linalg.norm(x, axis=1, keepdims=True)
    table = k_scores(x, (4, 4), seed=0, criteria=("silhouette",))
    labels = KMeans(n_clusters=4, n_init=10, random_state=0).fit_predict(u)
    assert table[0]["silhouette"] == pytest.approx(silhouette_score(u, labels, metric="cosine"), abs=1e-6)


def test_eigengap_of_disconnected_groups_is_known():
    # K tight groups far apart: the kNN graph has exactly K components, so the Laplacian has
    # K zero eigenvalues; the (K+1)-th is the smallest non-zero one of a group's own graph
    rng = np.random.default_rng(0)
    dirs = np.eye(12)[:6] * 10
    x = np.concatenate([d + rng.normal(0, 0.01, (30, 12)) for d in dirs])
    table = k_scores(x, (2, 10), seed=0, criteria=("eigengap",))
    gaps = {r["k"]: r["eigengap"] for r in table}
    assert max(gaps, key=gaps.get) == 6
    assert gaps[6] > 0.1 and all(gaps[k] < 1e-6 for k in (2, 3, 4, 5))


def test_stability_is_one_for_identical_points_per_cluster():
    # every sample equals its cluster's centre: any subsample splits identically (ARI 1) at K=4
    x = np.repeat(np.eye(8)[:4] * 5 + 1, 25, axis=0)
    table = k_scores(x, (3, 5), seed=0, criteria=("stability",))
    assert {r["k"]: round(r["stability"], 6) for r in table}[4] == 1.0


def test_digits_pixels_give_about_ten():
    # raw 8x8 pixels of the bundled digits (10 classes); benchmarks/kselect.py: 9 here, 10 on BYOL features
    x = load_digits().data
    k, table = estimate_k(x, (2, 20), seed=0)
    assert 8 <= k <= 12, [(r["k"], round(r["silhouette"], 3)) for r in table]
    scores = {r["k"]: r["silhouette"] for r in table}
    assert scores[10] > max(scores[2], scores[3], scores[20])


def test_parse_k_forms_and_errors():
    assert parse_k(None) == parse_k("auto") == parse_k(" AUTO ") == "auto"
    assert parse_k("7") == parse_k(7) == 7
    assert parse_k("5..30") == parse_k((5, 30)) == (5, 30)
    for bad in ("1", 1, "30..5", "1..4", "five", "5-30", (3,)):
        with pytest.raises(ValueError):
            parse_k(bad)
    assert default_k_range(400) == (2, 50) and default_k_range(100) == (2, 20) and default_k_range(6) == (2, 2)


def test_estimate_k_rejects_bad_features():
    with pytest.raises(ValueError, match="2-D"):
        estimate_k(np.zeros(10), (2, 3))
    with pytest.raises(ValueError, match="NaN"):
        estimate_k(np.full((10, 2), np.nan), (2, 3))
    with pytest.raises(ValueError, match="criterion"):
        estimate_k(np.ones((10, 2)), (2, 3), criterion="elbow")


@pytest.mark.slow  # trains the estimator
def test_estimator_estimates_k_and_trains_stage_2_with_it(tmp_path):
    import conr
    from conr.estimator import K_SELECTION_FILE
    from test_cluster_report import TINY_EST, _array

    X, _ = _array(48)
    run = tmp_path / "run"
    model = conr.CoNR(n_clusters=(2, 5), run_dir=str(run), **TINY_EST).fit(X)
    sel = model.k_selection_
    k = sel["k"]
    assert sel["criterion"] == "silhouette" and sel["k_range"] == [2, 5] and 2 <= k <= 5
    assert [r["k"] for r in sel["table"]] == [2, 3, 4, 5]
    assert k == max(sel["table"], key=lambda r: r["silhouette"])["k"]
    # stage 2 and the final clustering used the chosen K, and the run folder records it
    assert model.n_clusters_ == k and model.cluster_centers_.shape[0] == k
    assert model.config_.cluster.n_clusters == k
    assert json.loads((run / K_SELECTION_FILE).read_text())["k"] == k
    assert f"n_clusters: {k}" in (run / "config.yaml").read_text()
    loaded = conr.CoNR.from_checkpoint(run)
    assert loaded.cluster_centers_.shape[0] == k and loaded.k_selection_["k"] == k
    # resuming keeps the recorded K instead of estimating again
    again = conr.CoNR(n_clusters="auto", run_dir=str(run), resume=True, **TINY_EST).fit(X)
    assert again.n_clusters_ == k


@pytest.mark.slow  # two budgeted fits
def test_an_estimated_k_gets_the_final_stages_reserve_as_a_given_k():
    """Without --k, the final stage's input candidates are made and timed before training
    with the provisional K, so the budget reserves the final stage as it does for a given K."""
    import conr
    from test_cluster_report import _array

    X, _ = _array(48)
    kw = dict(image_size=16, batch_size=16, minutes=0.4, encoder="none", seed=0,
              overrides=["model.width=8", "model.hidden_dim=64", "model.proj_dim=32", "train.threads=1"])
    given = conr.CoNR(n_clusters=3, **kw).fit(X)
    estimated = conr.CoNR(n_clusters=(2, 4), **kw).fit(X)
    assert given.budget_["reserved_seconds"] > 0 and estimated.budget_["reserved_seconds"] > 0
    assert estimated.k_selection_["k"] == estimated.n_clusters_
