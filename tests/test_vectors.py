"""CoNR on vectors: the input routing, the neighbour views, the estimator and `conr cluster --embeddings`."""
from __future__ import annotations

import contextlib
import io
import json

import numpy as np
import pytest
import torch
from sklearn.datasets import make_blobs
from sklearn.metrics import adjusted_rand_score
from sklearn.neighbors import NearestNeighbors

import conr
from conr.cli import main
from conr.data.vectors import VectorData
from conr.data.vectors import input_kind, read_embeddings, read_embeddings_named
from conr.engine.vectors import NeighbourViews, ViewConfig


def _blobs(n=120, d=32, k=4, seed=0):
    X, y = make_blobs(n_samples=n, n_features=d, centers=k, cluster_std=2.0, random_state=seed)
    return X.astype(np.float32), y


# ------------------------------------------------------------------ which path

@pytest.mark.parametrize("X, kind", [
    (np.random.default_rng(0).integers(0, 256, (5, 64)).astype(np.uint8), "images"),   # 8x8 pixels
    (np.random.default_rng(0).uniform(0, 1, (5, 3 * 64)), "images"),                   # 3 planes of 8x8
    (np.random.default_rng(0).normal(size=(5, 64)), "vectors"),                        # negative: no pixels
    (np.random.default_rng(0).uniform(0, 1, (5, 20)), "vectors"),                      # no square width
    (np.random.default_rng(0).uniform(0, 1, (5, 16)), "vectors"),                      # 4x4: too small to be sure
    (np.zeros((5, 8, 8), np.uint8), "images"),
    (np.zeros((5, 8, 8, 3), np.uint8), "images"),
    ([[0.5, -1.0], [2.0, 3.0]], "vectors"),
    ("some/folder", "images"),
])
def test_input_kind(X, kind):
    assert input_kind(X)[0] == kind


def test_input_kind_explicit_and_sparse():
    import scipy.sparse as sp

    assert input_kind(np.zeros((4, 64)), "vectors")[0] == "vectors"
    assert input_kind(np.zeros((4, 20)), image_shape=(4, 5))[0] == "images"
    with pytest.raises(ValueError, match="input='pixels'"):
        input_kind(np.zeros((4, 20)), "pixels")
    with pytest.raises(TypeError, match="sparse input is not supported.*toarray"):
        input_kind(sp.eye(4, format="csr"))


# ------------------------------------------------------------------ data and views

def test_vector_data_mean_std_matches_numpy():
    X, _ = _blobs(n=50, d=6)
    X[:, 2] = 3.0  # a constant feature: std 1, so it standardises to 0 instead of dividing by 0
    mean, std = VectorData(torch.from_numpy(X), torch.full((50,), -1)).mean_std()
    np.testing.assert_allclose(mean, X.astype(np.float64).mean(0), rtol=1e-6)
    expect = X.astype(np.float64).std(0, ddof=1)
    expect[2] = 1.0
    np.testing.assert_allclose(std, expect, rtol=1e-5)


def test_neighbours_match_sklearn_brute_force():
    X, _ = _blobs(n=200, d=8, seed=3)
    mean, std = X.mean(0), X.std(0, ddof=1)
    views = NeighbourViews(torch.from_numpy(X), mean, std, ViewConfig(knn=5), chunk=37)  # several chunks merged
    got = views.neighbours(torch.from_numpy(X[:40])).numpy()
    ref = NearestNeighbors(n_neighbors=5, algorithm="brute").fit((X - mean) / std)
    want = ref.kneighbors((X[:40] - mean) / std, return_distance=False)
    assert (np.sort(got, 1) == np.sort(want, 1)).mean() > 0.99  # ties of equal distance may differ


def test_the_neighbour_table_matches_sklearn_and_the_batch_search():
    X, _ = _blobs(n=300, d=8, seed=4)
    mean, std = X.mean(0), X.std(0, ddof=1)
    views = NeighbourViews(torch.from_numpy(X), mean, std, ViewConfig(knn=6, geometry="standardised"), chunk=53)
    table = views.table().numpy()
    assert (table[:, 0] == np.arange(300)).all()  # each row its own first neighbour
    want = NearestNeighbors(n_neighbors=6, algorithm="brute").fit((X - mean) / std).kneighbors(
        (X - mean) / std, return_distance=False)
    assert (np.sort(table, 1) == np.sort(want, 1)).mean() > 0.99
    rows = torch.tensor([5, 17, 250])
    gen_a, gen_b = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    by_table = views.for_rows(rows)(torch.from_numpy(X[rows.numpy()]), gen_a)
    by_search = views(torch.from_numpy(X[rows.numpy()]), gen_b)  # the same draws from the same neighbours
    assert torch.allclose(by_table, by_search)


def test_the_cosine_table_square_roots_non_negative_rows():
    rng = np.random.default_rng(6)
    X = rng.gamma(0.5, 1.0, (200, 12)).astype(np.float32)  # non-negative, a few large values (pooled activations)
    views = NeighbourViews(torch.from_numpy(X), X.mean(0), X.std(0), ViewConfig(knn=5))
    rooted = np.sqrt(X) / np.linalg.norm(np.sqrt(X), axis=1, keepdims=True)
    want = NearestNeighbors(n_neighbors=5, metric="cosine", algorithm="brute").fit(rooted).kneighbors(
        rooted, return_distance=False)
    assert (np.sort(views.table().numpy(), 1) == np.sort(want, 1)).mean() > 0.99
    signed = X - X.mean(0)  # negative values: unit rows as they are
    got = NeighbourViews(torch.from_numpy(signed), signed.mean(0), signed.std(0), ViewConfig(knn=5)).table().numpy()
    want = NearestNeighbors(n_neighbors=5, metric="cosine", algorithm="brute").fit(signed).kneighbors(
        signed, return_distance=False)
    assert (np.sort(got, 1) == np.sort(want, 1)).mean() > 0.99


def test_approximate_neighbours_beyond_the_exact_limit():
    from conr.ops.knn import approximate_neighbors, knn_table

    X, _ = _blobs(n=1500, d=40, seed=5)
    z = torch.from_numpy((X - X.mean(0)) / X.std(0))
    exact = knn_table(z, 10).numpy()
    approx = knn_table(z, 10, exact_rows=1000).numpy()  # past the limit: NN-descent on 128 components at most
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(exact, approx)])
    assert recall > 0.9 and (approx[:, 0] == np.arange(1500)).all()
    idx, dist = approximate_neighbors(X, 5)
    assert idx.shape == (1500, 5) and (dist[:, 0] == 0).all() and (np.diff(dist, axis=1) >= -1e-5).all()


def test_views_are_standardised_neighbours_without_noise():
    X, _ = _blobs(n=60, d=5)
    mean, std = X.mean(0), X.std(0, ddof=1)
    views = NeighbourViews(torch.from_numpy(X), mean, std, ViewConfig(knn=3, noise=0.0, dropout=0.0))
    x = torch.from_numpy(X[:10])
    v = views(x, torch.Generator().manual_seed(0)).numpy()
    nn = NearestNeighbors(n_neighbors=3).fit((X - mean) / std).kneighbors((X[:10] - mean) / std,
                                                                           return_distance=False)
    z = (X - mean) / std
    for i in range(10):
        assert any(np.allclose(v[i], z[j], atol=1e-5) for j in nn[i])


@pytest.mark.parametrize("n, k, expected", [
    (400, 40, 5),      # ORL: 10 faces a person -> the 5 nearest
    (1440, 20, 10),    # COIL-20: 72 views an object -> the cap
    (2000, 100, 10),   # 20 a cluster: half is the cap itself
    (1000, 100, 5),
    (50, 10, 2),       # 5 a cluster: the row and its nearest, never fewer
    (30, 30, 2),
])
def test_views_come_from_at_most_half_a_cluster(n, k, expected):
    from conr.auto.resolve import view_neighbors, vector_settings

    assert view_neighbors(n, k) == expected
    cfg, _, reasons = vector_settings({}, n, k=k)
    assert cfg.augment.view_neighbors == expected and f"its {expected} nearest rows" in reasons["augment.view_neighbors"]


def test_the_trainer_draws_views_from_the_configured_neighbours():
    """The setting reaches the views: each row's view is one of its ``view_neighbors`` nearest
    rows by direction (sklearn's brute-force cosine neighbours, the row itself first), and a
    user's value wins over the rule; a value under 1 names the key."""
    from conr.auto.resolve import vector_settings
    from conr.config_checks import validate_config
    from conr.errors import ConfigError
    from conr.engine.vectors import VectorTrainer

    X, _ = _blobs(n=40, d=6, k=2)
    X = np.abs(X)  # non-negative: compared after a square root, as an encoder's features are
    data = VectorData(images=torch.from_numpy(X), labels=torch.full((40,), -1))
    user = {"train": {"epochs": 2, "device": "cpu", "batch_size": 16}, "cluster": {"final": "kmeans"},
            "run": {"progress": False}}
    cfg, _, _ = vector_settings(user, len(X), k=4)   # 10 a cluster -> 5
    trainer = VectorTrainer(cfg, data, run_dir=None, write=False, log=lambda *a: None)
    table = trainer.augmenter(0).table().numpy()
    assert table.shape == (40, 5)
    unit = np.sqrt(X) / np.linalg.norm(np.sqrt(X), axis=1, keepdims=True)
    nn = NearestNeighbors(n_neighbors=5, metric="cosine", algorithm="brute").fit(unit).kneighbors(
        unit, return_distance=False)
    assert all(set(table[i]) == set(nn[i]) for i in range(40))
    cfg, _, _ = vector_settings({**user, "augment": {"view_neighbors": 3}}, len(X), k=4)
    assert cfg.augment.view_neighbors == 3
    cfg.augment.view_neighbors = 0
    with pytest.raises(ConfigError, match="augment.view_neighbors=0"):
        validate_config(cfg)


@pytest.mark.parametrize("n,k,batch,expected", [
    (400, 40, 256, 3),     # ORL through the encoder: ~6.4 faces of a person in a batch
    (1440, 20, 256, 6),    # COIL-20: ~12.8 views of an object in a batch
    (10000, 10, 256, 10),  # CIFAR-10: 25.6 of a class, capped at the paper's 10
    (2000, 100, 256, 1),   # 100 palm classes of 20: 2.6 in a batch, the sample alone
    (12, 3, 12, 2),        # a batch of all 12 rows
])
def test_vector_runs_size_the_neighbourhood_to_a_cluster_in_a_batch(n, k, batch, expected):
    """Vectors (an encoder's features included) follow the images' rule: CoNR's neighbourhood
    (self included) is half the members a cluster expects in a batch, within 1..10, so that a
    sample's neighbours can be its own cluster's; the paper's fixed 10 gave a face of ORL at
    most ~5 of its own among 10."""
    from conr.auto.resolve import vector_settings
    from conr.auto.settings import auto_settings
    from conr.data.survey import survey_images

    cfg, _, reasons = vector_settings({}, n, k=k)
    assert cfg.train.batch_size == batch
    s = cfg.stage2
    assert (s.k, s.k1, s.k2) == (expected, expected, min(2, expected))
    members = batch / k
    assert s.k <= max(1, members) and "members of a cluster in a batch" in reasons["stage2.k"]
    # the same batch and K give images the same neighbourhood
    raw, _ = auto_settings(survey_images(torch.zeros(n, 1, 16, 16, dtype=torch.uint8)), k, batch_size=batch)
    assert raw["stage2"]["k"] == s.k
    # a user's choice still wins
    cfg, _, _ = vector_settings({"stage2": {"k": 5, "k1": 8}}, n, k=k)
    assert (cfg.stage2.k, cfg.stage2.k1) == (5, 8)


def _half_a_cluster(batch, k):
    """The rule written out by hand: half of batch / K, rounded, within 1..10."""
    return max(1, min(10, int(round(batch / k / 2))))


def test_an_estimated_k_resizes_the_neighbourhood_the_rules_sized():
    """K unknown: the settings are made with the provisional K (10), so the record made once K
    is estimated sizes stage 2's neighbourhood for it, unless the user set one of its sizes."""
    from conr.auto.record import RunRecord
    from conr.auto.resolve import vector_settings

    selection = {"k": 40, "criterion": "silhouette", "k_range": [2, 50], "table": []}
    cfg, auto, reasons = vector_settings({}, 400, k=10)
    assert (cfg.stage2.k, cfg.stage2.k1) == (10, 10)          # 25.6 of a cluster in 256: capped at 10
    record = RunRecord(input_kind="vectors", input_reason="an array", user={}, automatic=auto,
                       reasons=reasons, config=cfg).with_k(selection)
    expected = _half_a_cluster(256, 40)
    s = record.config.stage2
    assert expected == 3 and (s.k, s.k1, s.k2) == (3, 3, 2) and record.config.cluster.n_clusters == 40
    assert "K = 40 as estimated" in record.reasons["stage2.k"]
    user = {"stage2": {"k1": 8}}
    cfg, auto, reasons = vector_settings(user, 400, k=10)
    mine = RunRecord(input_kind="vectors", input_reason="an array", user=user, automatic=auto,
                     reasons=reasons, config=cfg).with_k(selection)
    assert (mine.config.stage2.k, mine.config.stage2.k1) == (cfg.stage2.k, 8)   # the user's choice stands


@pytest.mark.slow  # trains an MLP on 400 vectors
def test_a_vector_run_with_k_estimated_trains_stage_2_with_the_neighbourhood_of_that_k(tmp_path):
    import conr

    X, _ = make_blobs(n_samples=400, n_features=16, centers=40, cluster_std=0.5, center_box=(-10, 10),
                      random_state=0)
    run = tmp_path / "run"
    model = conr.CoNR(n_clusters=(5, 60), input="vectors", epochs=6, seed=0, device="cpu",
                      run_dir=str(run)).fit(X.astype(np.float32))
    k = model.n_clusters_
    assert k == model.k_selection_["k"] >= 20                 # far from the provisional 10
    batch = model.config_.train.batch_size
    expected = _half_a_cluster(batch, k)
    assert model.config_.stage2.k == model.config_.stage2.k1 == expected < 10
    assert model.trainer_.method.cfg.stage2.k == expected     # what stage 2 trained with
    # 400 rows in >= 20 clusters expect <= 20 members: small clusters, neighbours kept within them
    assert model.config_.stage2.same_cluster is model.trainer_.method.cfg.stage2.same_cluster is True
    written = (run / "config.yaml").read_text()
    assert f"n_clusters: {k}" in written and f"k: {expected}" in written


def test_the_joint_graph_is_the_intersection_unless_the_user_asks_for_the_union():
    """Vector runs keep the config's intersection (the union cost CIFAR-10 3.9 points); a
    user's union reaches the run's config."""
    from conr.auto.resolve import vector_settings
    from conr.config import Config

    cfg, _, _ = vector_settings({}, 400, k=40)
    assert cfg.cluster.joint_graph == Config().cluster.joint_graph == "intersection"
    cfg, _, _ = vector_settings({"cluster": {"joint_graph": "union"}}, 400, k=40)
    assert cfg.cluster.joint_graph == "union"


def test_mlp_backbone_registered():
    from conr.models import build_backbone

    net, dim = build_backbone("mlp", in_channels=7)
    assert dim == 128 and net(torch.randn(4, 7)).shape == (4, 128)


# ------------------------------------------------------------------ estimator

@pytest.mark.slow  # trains the estimator
def test_estimator_clusters_vectors_and_predicts_new_ones():
    X, y = _blobs()
    Xnew, ynew = X[::3] + np.random.default_rng(1).normal(0, 0.1, X[::3].shape).astype(np.float32), y[::3]
    est = conr.CoNR(n_clusters=4, epochs=20, batch_size=32, device="cpu").fit(X)
    assert est.input_kind_ == "vectors" and est.n_features_in_ == 32
    assert adjusted_rand_score(y, est.labels_) > 0.9
    assert adjusted_rand_score(ynew, est.predict(Xnew)) > 0.9
    f = est.transform(Xnew)
    assert f.shape == (len(Xnew), est.features_.shape[1])
    np.testing.assert_allclose(np.linalg.norm(f, axis=1), 1.0, atol=1e-5)
    with pytest.raises(ValueError, match="cluster\\(X\\) re-clusters images"):
        est.cluster(X)


@pytest.mark.slow  # trains twice, each ending in the final stage
def test_vectors_end_in_the_final_stage_and_take_a_time_budget():
    """Vectors get the images' final stage: candidates on the input vectors, on the head's
    features and on both graphs, scored against the truth where it rides along (a
    VectorData's labels); the reported labels are a candidate's, and sound (blobs: ARI
    against the truth, sklearn's). ``minutes`` plans the epochs and reserves the final stage."""
    X, y = _blobs(n=160)
    data = VectorData(images=torch.from_numpy(X), labels=torch.as_tensor(y))
    est = conr.CoNR(n_clusters=4, epochs=6, batch_size=32, device="cpu", seed=0).fit(data)
    cands = {c["name"]: c for c in est.partition_.candidates}
    assert {"umap_gmm/vectors", "umap_gmm/features", "umap_gmm/joint"} <= set(cands), sorted(cands)
    assert all("true_acc" in c for c in cands.values())
    assert sum(c["chosen"] for c in cands.values()) == 1
    assert adjusted_rand_score(y, est.labels_) > 0.9
    budgeted = conr.CoNR(n_clusters=4, minutes=0.4, batch_size=32, device="cpu", seed=0).fit(X)
    assert budgeted.budget_ is not None and budgeted.budget_["reserved_seconds"] > 0
    assert budgeted.config_.train.epochs == budgeted.budget_["epochs"]
    assert budgeted.partition_.candidates and adjusted_rand_score(y, budgeted.labels_) > 0.9


# ------------------------------------------------------------------ files and the command

def test_read_embeddings_formats(tmp_path):
    X, _ = _blobs(n=10, d=3)
    np.save(tmp_path / "a.npy", X)
    np.savetxt(tmp_path / "b.csv", X, delimiter=",", header="x,y,z", comments="")
    np.savetxt(tmp_path / "c.csv", X, delimiter=",")
    np.testing.assert_allclose(read_embeddings(tmp_path / "a.npy"), X)
    np.testing.assert_allclose(read_embeddings(tmp_path / "b.csv"), X, rtol=1e-6)
    np.testing.assert_allclose(read_embeddings(tmp_path / "c.csv"), X, rtol=1e-6)
    with pytest.raises(ValueError, match="unknown format '.txt'"):
        (tmp_path / "d.txt").write_text("1,2\n")
        read_embeddings(tmp_path / "d.txt")
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        (tmp_path / "e.parquet").write_bytes(b"PAR1")
        with pytest.raises(ValueError, match="parquet needs pyarrow"):
            read_embeddings(tmp_path / "e.parquet")


@pytest.mark.parametrize("layout", ["pandas index", "id header", "text names", "quoted names", "numpy header",
                                    "plain"])
def test_read_embeddings_row_names(tmp_path, layout):
    """A first column of row names is kept apart from the vectors, never read as one of their values."""
    X, _ = _blobs(n=6, d=3)
    ids = [f"img_{i}.jpg" for i in range(6)]
    if layout == "numpy header":
        np.savetxt(tmp_path / "t.csv", X, delimiter=",", header="a,b,c")   # "# a,b,c"
    else:
        head = {"pandas index": ",a,b,c", "id header": "id,a,b,c", "text names": None, "quoted names": "file,a,b,c",
                "plain": "a,b,c"}[layout]
        first = {"pandas index": [str(i) for i in range(6)], "id header": [str(100 + i) for i in range(6)],
                 "text names": ids, "quoted names": [f'"a, {i}"' for i in range(6)], "plain": None}[layout]
        lines = ([head] if head else []) + [",".join(([first[i]] if first else []) + [repr(float(v)) for v in row])
                                            for i, row in enumerate(X)]
        (tmp_path / "t.csv").write_text("\n".join(lines) + "\n")
    arr, names = read_embeddings_named(tmp_path / "t.csv")
    np.testing.assert_allclose(arr, X, rtol=1e-6)
    expected = {"pandas index": [str(i) for i in range(6)], "id header": [str(100 + i) for i in range(6)],
                "text names": ids, "quoted names": [f"a, {i}" for i in range(6)]}.get(layout)
    assert names == expected


def test_parquet_row_name_column():
    from conr.data.vectors import _row_name_column

    assert _row_name_column(["a", "b", "__index_level_0__"], ["f", "f", "i"]) == 2
    assert _row_name_column(["path", "a", "b"], ["O", "f", "f"]) == 0
    assert _row_name_column(["a", "b"], ["f", "f"]) is None
    assert _row_name_column(["p", "q", "a"], ["O", "O", "f"]) is None   # two text columns: left for the error


def test_cli_embeddings_keeps_row_names(tmp_path):
    """A CSV whose first column names its rows: the names come back beside each row's cluster."""
    X, y = _blobs(n=60, d=8, k=3, seed=3)
    lines = ["file," + ",".join(f"f{j}" for j in range(8))] + [
        f"photo_{i}.jpg," + ",".join(repr(float(v)) for v in row) for i, row in enumerate(X)]
    (tmp_path / "named.csv").write_text("\n".join(lines) + "\n")
    with contextlib.redirect_stdout(io.StringIO()):
        rc = main(["cluster", "--embeddings", str(tmp_path / "named.csv"), "--k", "3", "--out", str(tmp_path / "o"),
                   "--device", "cpu", "train.epochs=3"])
    assert rc == 0
    import csv

    with open(tmp_path / "o" / "assignments.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["row", "name", "cluster", "boundary_ratio", "distance"]
    assert [r["name"] for r in rows] == [f"photo_{i}.jpg" for i in range(60)]
    assert adjusted_rand_score(y, [int(r["cluster"]) for r in rows]) > 0.9


def test_read_embeddings_takes_binary_features_as_0_and_1(tmp_path):
    bits = np.random.default_rng(0).random((6, 5)) > 0.5
    np.save(tmp_path / "bits.npy", bits)
    arr = read_embeddings(tmp_path / "bits.npy")
    assert arr.dtype.kind == "f" and np.array_equal(arr, bits.astype(float))


def test_read_embeddings_names_rows_with_gaps(tmp_path):
    X, _ = _blobs(n=10, d=3)
    X[[2, 7], 1] = [np.nan, np.inf]
    np.save(tmp_path / "gaps.npy", X)
    with pytest.raises(ValueError, match=r"2 of 10 rows hold NaN or infinity \(rows 2, 7, counted from 0\)"):
        read_embeddings(tmp_path / "gaps.npy")


def test_vectors_fewer_distinct_rows_than_k_are_refused():
    """Copies of one row cannot be told apart: 50 equal rows into 3 clusters was a random split."""
    rows = np.ones((50, 4), np.float32)
    rows[25:] = 2.0
    with pytest.raises(ValueError, match="only 2 distinct rows among the 50 samples.*n_clusters=3"):
        conr.CoNR(n_clusters=3, input="vectors", epochs=1).fit(rows)
    with pytest.raises(ValueError, match="only 1 distinct row among"):
        conr.CoNR(n_clusters=2, input="vectors", epochs=1).fit(np.zeros((20, 3)))


def test_cli_cluster_embeddings(tmp_path):
    """The README's command on a small generated file."""
    X, y = _blobs(n=90, d=16, k=3, seed=2)
    np.save(tmp_path / "some.npy", X)
    out = tmp_path / "out"
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = main(["cluster", "--embeddings", str(tmp_path / "some.npy"), "--k", "3", "--out", str(out),
                   "--device", "cpu", "train.epochs=10"])
    assert rc == 0, buf.getvalue()
    rows = np.loadtxt(out / "assignments.csv", delimiter=",", skiprows=1)
    assert rows.shape == (90, 4) and (rows[:, 0] == np.arange(90)).all()
    assert adjusted_rand_score(y, rows[:, 1].astype(int)) > 0.9
    assert np.load(out / "features.npy").shape[0] == 90
    summary = json.loads((out / "summary.json").read_text())
    assert summary["k"] == 3 and summary["input_kind"] == "vectors" and summary["epochs"] == 10
