"""The final stage (conr/cluster/): candidates, the label-free rule, the stage-2 seed,
self-labelling, the flip rule, and one score per run.

The rule is checked on hand-made sets where one algorithm is clearly right and the
others clearly wrong (the truth known by construction); the flip rule on synthetic
shapes that are or are not mirror-symmetric.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.metrics import adjusted_rand_score

from conr.cluster.final import FinalStage, choose, cluster_representation, normalized_cut, score_candidates
from conr.cluster.manifold import pixel_vectors, umap_neighbors
from conr.cluster.partition import Partition
from conr.cluster.policy import MANIFOLD_MARGIN
from conr.cluster.self_label import confident_members, margin_confidence
from conr.data.mirror import MIRROR_OVERLAP_MIN, mirror_overlap


def rings(n: int = 600, seed: int = 0):
    """Two concentric rings: k-means cuts them in half, a graph or a manifold follows them."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    r = np.where(y == 0, 1.0, 3.0) + rng.normal(0, 0.1, n)
    t = rng.uniform(0, 2 * np.pi, n)
    return np.c_[r * np.cos(t), r * np.sin(t)].astype(np.float32), y


def big_and_two_small(gap: float = 1.5, seed: int = 0):
    """One broad group of 2,000 and two tight groups of 60 side by side: k-means and the
    Gaussian mixture split the broad group and merge the small pair; the k-NN graph keeps
    the small pair apart."""
    rng = np.random.default_rng(seed)
    parts = [rng.normal(0, 1.0, (2000, 2)), np.array([8, 0]) + rng.normal(0, 0.25, (60, 2)),
             np.array([8, gap]) + rng.normal(0, 0.25, (60, 2))]
    return np.concatenate(parts).astype(np.float32), np.repeat([0, 1, 2], [2000, 60, 60])


def pair_beside_big_group(seed: int = 0):
    """One broad group of 1,000 and, 12 apart, two groups of 100 as broad, 4 apart: spectral
    clustering of the 10-NN graph halves the big group and merges the pair (a lower
    normalised cut than the truth's, so its objective, not its solver, merges them), UMAP +
    GMM does the same; k-means, whose round clusters this is, is right."""
    rng = np.random.default_rng(seed)
    parts = [rng.normal(0, 1.0, (1000, 2)), np.array([12, 0]) + rng.normal(0, 1.0, (100, 2)),
             np.array([12, 4]) + rng.normal(0, 1.0, (100, 2))]
    return np.concatenate(parts).astype(np.float32), np.repeat([0, 1, 2], [1000, 100, 100])


def _scored(x, k):
    cands, emb = cluster_representation(x, "pixels", k, seed=0)
    score_candidates(cands, {"pixels": emb}, {"pixels": x}, k, seed=0)
    return cands


@pytest.mark.slow  # UMAP on 600-2,120 points: 4-16 s a case
@pytest.mark.parametrize("make,k,right,wrong", [(rings, 2, ("spectral", "umap_gmm"), ("kmeans",)),
                                                (big_and_two_small, 3, ("spectral",), ("kmeans",)),
                                                (pair_beside_big_group, 3, ("kmeans",), ("spectral", "umap_gmm"))])
def test_rule_chooses_the_right_candidate_on_hand_made_sets(make, k, right, wrong):
    x, y = make()
    cands = _scored(x, k)
    by_algo = {c.algorithm: adjusted_rand_score(y, c.labels) for c in cands}
    assert max(by_algo[a] for a in wrong) < 0.4               # the case is hard for these algorithms ...
    assert max(by_algo[a] for a in right) > 0.95              # ... and solved by the right one
    best = choose(cands)                                      # the default rule, no labels
    assert adjusted_rand_score(y, best.labels) > 0.95, {c.name: c.scores for c in cands}


@pytest.mark.slow  # UMAP on 1,797 points (~15 s)
def test_rule_takes_umap_gmm_where_it_alone_is_right():
    """scikit-learn's 8 x 8 digits (known labels): on the pixels UMAP + GMM is ahead of
    spectral and k-means by a clear margin (ARI 0.91 against 0.76 and 0.67 here), and
    the default rule takes it. Silhouette alone does not tell the two apart: it gives
    UMAP + GMM 0.761-0.775 and spectral 0.761-0.764 (2026-12-05, two processes of the same
    code, and 2026-12-06, a fresh install: the UMAP layout differs between them), a gap under
    the manifold step's head start, which settles it."""
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    cands = _scored((x / 16.0).astype(np.float32), 10)
    by_algo = {c.algorithm: adjusted_rand_score(y, c.labels) for c in cands}
    assert by_algo["umap_gmm"] > max(by_algo["spectral"], by_algo["kmeans"]) + 0.05
    assert choose(cands).algorithm == "umap_gmm"
    silhouette = {c.algorithm: c.scores["silhouette_umap"] for c in cands}
    assert abs(silhouette["umap_gmm"] - silhouette["spectral"]) < MANIFOLD_MARGIN
    assert silhouette["umap_gmm"] - silhouette["kmeans"] > 0.01


@pytest.mark.parametrize("seed", [0, 1])
def test_spectral_merges_the_pair_because_its_cut_prefers_it(seed):
    from conr.cluster.final import _knn_graph
    from conr.cluster.spectral import spectral_labels

    x, y = pair_beside_big_group(seed)
    labels = spectral_labels(x, 3, seed=0)
    pair = labels[y > 0]
    assert np.bincount(pair).max() == len(pair)                  # the two small groups share one cluster
    graph = _knn_graph(x, 10)
    assert normalized_cut(graph, labels) < normalized_cut(graph, y)   # ... at a lower normalised cut


def test_normalized_cut_against_a_hand_count():
    from scipy.sparse import csr_matrix

    # a path 0-1-2-3 with unit weights; clusters {0,1} and {2,3}: one cut edge,
    # vol({0,1}) = 1 + 2 = 3, vol({2,3}) = 3 -> ncut = 1/3 + 1/3
    w = np.zeros((4, 4))
    for a, b in ((0, 1), (1, 2), (2, 3)):
        w[a, b] = w[b, a] = 1.0
    assert normalized_cut(csr_matrix(w), np.array([0, 0, 1, 1])) == pytest.approx(2 / 3)
    assert normalized_cut(csr_matrix(w), np.array([0, 1, 0, 1])) == pytest.approx(3 / 3 + 3 / 3)


def test_umap_neighbours_follow_the_group_size():
    assert umap_neighbors(400, 40) == 5        # 10 faces a person: a small neighbourhood
    assert umap_neighbors(10_000, 10) == 20    # groups of a thousand: N2D's 20
    assert 5 <= umap_neighbors(1440, 20) <= 20


def test_pixel_vectors_reduce_long_rows_only():
    small = np.random.default_rng(0).integers(0, 256, (60, 1, 8, 8), dtype=np.uint8)
    big = np.random.default_rng(0).integers(0, 256, (60, 3, 32, 32), dtype=np.uint8)
    assert pixel_vectors(small).shape == (60, 64) and pixel_vectors(small).max() <= 1.0
    assert pixel_vectors(big).shape == (60, 50)



def test_the_input_geometry_reads_vectors_as_they_come_or_by_direction():
    """Hand-made: two groups that differ in direction, each with norms spread 1..20 (as an
    encoder's pooled activations are). On the rows as they are, k-means splits by norm; read
    by direction (``cluster.input_geometry=directions``: unit rows; no square root here, the
    noise makes some values negative; tests/test_directions.py checks the root) k-means finds
    the two directions. By default (``auto``) the final stage reads an encoder's features as
    they come, as it does a user's own vectors."""
    from sklearn.cluster import KMeans

    from conr.cluster.stage import input_rows
    from conr.data.vectors import VectorData

    rng = np.random.default_rng(0)
    y = np.repeat([0, 1], 100)
    directions = np.array([[1.0, 0.8, 0.0], [0.8, 1.0, 0.0]])                  # 13 degrees apart
    rows = (directions[y] + rng.normal(0, 0.03, (200, 3))) * rng.uniform(1, 20, (200, 1))
    rows = rows.astype(np.float32)

    def split(x):
        return adjusted_rand_score(y, KMeans(2, n_init=10, random_state=0).fit_predict(x))

    encoder = VectorData(images=torch.from_numpy(rows), labels=torch.from_numpy(y), representation="encoder")
    given = VectorData(images=torch.from_numpy(rows), labels=torch.from_numpy(y))
    assert split(rows) < 0.5                                       # by norm, on the rows as they are
    unit = input_rows(encoder, geometry="directions")
    np.testing.assert_allclose(np.linalg.norm(unit, axis=1), 1.0, rtol=1e-5)
    assert split(unit) > 0.95                                      # by direction
    np.testing.assert_allclose(input_rows(given, geometry="directions"), unit, rtol=1e-5)
    for data in (encoder, given):                                  # auto and as_given: as they come
        np.testing.assert_array_equal(input_rows(data), rows)
        np.testing.assert_array_equal(input_rows(data, geometry="as_given"), rows)


def test_the_joint_candidate_is_made_from_the_joint_rows():
    """Hand-made: the features hold three groups; the input's candidates read noise, and the
    joint rows are the features' own rows, scaled. The joint candidate's graph is made from the joint
    rows: the share of neighbours it reports is the brute-force share between the features and
    the joint rows (sklearn's exact k-NN), not the noise's, and with_k keeps them."""
    from sklearn.neighbors import NearestNeighbors

    from conr.cluster.final import FinalStage, unit_rows
    from conr.cluster.manifold import umap_neighbors

    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(3), 40)
    centres = rng.normal(0, 1, (3, 6)) * 4
    feats = unit_rows((centres[y] + rng.normal(0, 1, (120, 6))).astype(np.float32))
    joint = (5 * feats + rng.normal(0, 0.01, (120, 6))).astype(np.float32)   # the features' own neighbours
    noise = rng.normal(0, 1, (120, 6)).astype(np.float32)
    stage = FinalStage(noise, 3, seed=0, consensus_runs=1, input_name="encoder", joint_inputs=joint)
    made = stage.joint_candidate(feats)
    nn = umap_neighbors(120, 3)

    def table(x):
        return NearestNeighbors(n_neighbors=nn).fit(x).kneighbors(x, return_distance=False)

    a, b = table(feats)[:, 1:], table(joint)[:, 1:]
    expected = np.mean([len(set(r) & set(s)) / (nn - 1) for r, s in zip(a, b)])
    assert made.shared == pytest.approx(expected, abs=0.02)
    noise_share = np.mean([len(set(r) & set(s)) / (nn - 1) for r, s in zip(a, table(noise)[:, 1:])])
    assert made.shared > 0.8 and noise_share < 0.3
    assert adjusted_rand_score(y, made.labels) > 0.9
    assert stage.with_k(4).joint_inputs is stage.joint_inputs


def test_partition_round_trip_and_centres():
    feats = torch.nn.functional.normalize(torch.randn(30, 4), dim=1)
    labels = torch.arange(30) % 3
    p = Partition.from_labels(feats, labels, 3, source="umap_gmm/pixels", assign="nearest_image")
    for c in range(3):  # centres: the plain mean of each cluster's unit features
        assert torch.allclose(p.centers[c], feats[labels == c].mean(0), atol=1e-6)
    p.candidate_labels = {"umap_gmm/pixels": labels, "kmeans/pixels": (labels + 1) % 3}
    q = Partition.from_dict(p.to_dict())
    assert torch.equal(q.labels, p.labels) and q.source == p.source and q.assign == "nearest_image"
    assert set(q.candidate_labels) == set(p.candidate_labels) and "candidate_labels" not in q.summary()
    assert torch.equal(q.candidate_labels["kmeans/pixels"].long(), (labels + 1) % 3)
    with pytest.raises(ValueError, match="assign"):
        Partition(labels=labels, centers=p.centers, assign="nearest")


def test_confident_members_and_margin():
    x = np.array([[0.0], [0.1], [0.9], [10.0], [10.2], [5.5]], dtype=np.float32)
    labels = np.array([0, 0, 0, 1, 1, 1])
    conf = margin_confidence(x, labels, 2)
    # brute force: 1 - d_own / d_next to the two cluster means
    means = np.array([x[labels == 0].mean(), x[labels == 1].mean()])
    d = np.abs(x[:, 0:1] - means[None])
    expect = 1 - d[np.arange(6), labels] / d[np.arange(6), 1 - labels]
    assert np.allclose(conf, np.clip(expect, 0, 1), atol=1e-5)
    keep = confident_members(labels, conf, share=0.5)
    assert set(keep) == {0, 1, 3, 4}  # the two most confident of each cluster (ceil(0.5 * 3) = 2)


def three_directions(per_class: int = 200, seed: int = 0):
    """Three groups on the three axes of R^3 (unit rows apart by direction, as the head sees
    them), and a seed partition that gives group 1 the third of group 0 nearest to it: the
    wedge a mixture's component cuts off a neighbour when their boundary is misplaced."""
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(3), per_class)
    x = (np.eye(3)[y] * 4 + rng.normal(0, 0.5, (3 * per_class, 3))).astype(np.float32)
    seed_labels = y.copy()
    zero = np.flatnonzero(y == 0)
    toward_one = zero[np.argsort(x[zero, 0] - x[zero, 1])][: per_class // 3]   # nearest group 1's axis
    seed_labels[toward_one] = 1
    return x, y, seed_labels


def _self_labelled(x, labels, k):
    """Self-labelling (conr/cluster/self_label.py) from ``labels``, on the rows as the
    'images': a linear feature network, light noise as the training views."""
    from conr.cluster.self_label import self_label

    torch.manual_seed(0)
    net = torch.nn.Linear(x.shape[1], 8)
    images = torch.as_tensor(x)

    def views(batch, gen):
        return batch + 0.05 * torch.randn(batch.shape, generator=gen)

    new, conf = self_label(net, images, labels, margin_confidence(x, labels, k), k, views, lambda b: b,
                           epochs=30, batch_size=64, seed=0)
    return new


def _criteria_embedding(x, k):
    """The UMAP embedding the final stage measures silhouette in (cluster_representation's)."""
    from conr.cluster.manifold import manifold_dims, umap_embedding

    return umap_embedding(x, manifold_dims(len(x), k), n_neighbors=umap_neighbors(len(x), k), seed=0)


@pytest.mark.slow  # UMAP on 600 points, twice
def test_rule_keeps_the_self_labelled_partition_where_it_corrects_its_seed():
    """The head learns from each seed cluster's confident half, which excludes the wedge (its
    members lie nearer group 0's mean than their own cluster's), and so labels the wedge
    back to group 0. The default rule, which gives the seed (the joint candidate) its head
    start, takes the self-labelled partition on silhouette alone; the pixels' candidate,
    wrong in another way, is not taken either."""
    from conr.cluster.final import Candidate
    from conr.cluster.policy import CHOICE_RULE, JOINT

    x, y, seed_labels = three_directions()
    assert adjusted_rand_score(y, seed_labels) < 0.75                          # the seed is wrong ...
    new = _self_labelled(x, seed_labels, 3)
    assert adjusted_rand_score(y, new) > 0.98                                  # ... and self-labelling right
    pixels = np.where(np.arange(len(y)) % 7 == 0, (y + 2) % 3, y)              # another error: a seventh scattered
    seed = Candidate("umap_gmm", "joint", seed_labels)
    cands = [seed, Candidate("kmeans", "pixels", pixels), Candidate("self_label", JOINT, new)]
    view = x @ np.random.default_rng(1).normal(size=(3, 3)).astype(np.float32)  # a second representation
    reps = {"features": x, "pixels": view}
    score_candidates(cands, {k: _criteria_embedding(v, 3) for k, v in reps.items()}, reps, 3)
    best = choose(cands, CHOICE_RULE)
    assert best.algorithm == "self_label", {c.name: c.scores for c in cands}
    assert best.scores["joint"] > seed.scores["joint"]        # the head start the seed had was not enough


@pytest.mark.slow  # UMAP on 600 points
def test_rule_keeps_the_seed_where_self_labelling_learned_its_merge():
    """A seed that merges groups 1 and 2 and splits group 0 teaches the head that merge: its
    partition is no better than the seed's, and the seed keeps its head start."""
    from conr.cluster.final import Candidate
    from conr.cluster.policy import CHOICE_RULE, JOINT

    x, y, _ = three_directions()
    seed_labels = np.where(y == 2, 1, y)
    zero = np.flatnonzero(y == 0)
    seed_labels[zero[x[zero, 2] > np.median(x[zero, 2])]] = 2            # group 0 halved to keep K clusters
    new = _self_labelled(x, seed_labels, 3)
    assert adjusted_rand_score(y, new) < 0.7                                # the head learned the merge
    seed = Candidate("umap_gmm", "joint", seed_labels)
    cands = [seed, Candidate("self_label", JOINT, new)]
    score_candidates(cands, {"features": _criteria_embedding(x, 3)}, {"features": x}, 3)
    assert choose(cands, CHOICE_RULE) is seed, {c.name: c.scores for c in cands}


def _glyphs(symmetric: bool, n_classes: int = 6, per_class: int = 40, size: int = 16, seed: int = 0):
    """Blocky random glyphs, shifted by up to 2 px, with noise; mirror-symmetric or not."""
    rng = np.random.default_rng(seed)
    images = []
    for _ in range(n_classes):
        g = (rng.random((6, 6)) < 0.45).astype(np.float32)
        if symmetric:
            g[:, 3:] = g[:, :3][:, ::-1]
        else:
            g[:, 3:] = 0.0
            g[:, 0] = 1.0  # a bar on the left: the mirror puts it on the right, where no glyph has one
        big = np.kron(g, np.ones((2, 2), dtype=np.float32))
        for _ in range(per_class):
            im = np.zeros((size, size), dtype=np.float32)
            dy, dx = rng.integers(0, size - 12 + 1, 2) if symmetric else (rng.integers(0, 5), rng.integers(0, 2))
            im[dy:dy + 12, dx:dx + 12] = big
            images.append(np.clip(im + rng.normal(0, 0.05, im.shape), 0, 1))
    return (np.stack(images)[:, None] * 255).astype(np.uint8)


def test_flip_rule_on_symmetric_and_asymmetric_shapes():
    sym = mirror_overlap(_glyphs(symmetric=True))
    asym = mirror_overlap(_glyphs(symmetric=False))
    assert sym >= MIRROR_OVERLAP_MIN > asym, (sym, asym)


def test_flip_rule_sets_the_views():
    from conr.data.survey import ImageSurvey
    from conr.auto.settings import auto_settings

    no_flip, why = auto_settings(ImageSurvey(500, [16], grey=True, mirror_overlap=0.02), 10)
    assert no_flip["augment"]["hflip_p"] == 0.0 and no_flip["cluster"]["flip_average"] is False
    assert no_flip["augment"]["rotation"] > 0 and "augment.hflip_p" in why
    flip, _ = auto_settings(ImageSurvey(500, [32], grey=False, mirror_overlap=0.3), 10)
    assert flip["augment"]["hflip_p"] == 0.5 and flip["cluster"]["flip_average"] is True


@pytest.mark.slow  # UMAP
def test_final_stage_reuses_pixel_candidates_and_adds_extra():
    x, y = rings(300)
    stage = FinalStage(x, 2, seed=0)
    first, _ = stage.input_candidates()
    again, _ = stage.input_candidates()
    assert first is again  # computed once a run
    feats = np.c_[x, np.ones(len(x))]
    from conr.cluster.final import Candidate

    truth = Candidate("truth", "given", y.astype(np.int64))
    best, cands = stage.run(feats, extra=[truth])
    assert {c.name for c in cands} >= {"kmeans/features", "umap_gmm/pixels", "truth/given"}
    assert all("silhouette_umap" in c.scores for c in cands)
    assert adjusted_rand_score(y, best.labels) > 0.95


@pytest.mark.slow  # UMAP consensus layouts
def test_layouts_follow_the_rule_and_the_time_allowed():
    """Under the joint rule the features' own UMAP + GMM cannot be chosen: one layout lists it
    (the one the criteria need), while the pixels' and the joint consensus make the stage's
    count; a pixel consensus with no time to spare makes one, and so do the later ones."""
    x, _ = rings(200)
    feats = np.c_[x, np.ones(len(x))]
    layouts = lambda cands: {c.name: c.layouts for c in cands if c.algorithm == "umap_gmm"}  # noqa: E731
    _, cands = FinalStage(x, 2, seed=0, consensus_runs=3).run(feats)
    assert layouts(cands) == {"umap_gmm/features": 1, "umap_gmm/pixels": 3, "umap_gmm/joint": 3}
    _, cands = FinalStage(x, 2, seed=0, rule="manifold", consensus_runs=3).run(feats)
    assert layouts(cands)["umap_gmm/features"] == 3   # a rule that may choose it gets the consensus
    short = FinalStage(x, 2, seed=0, consensus_runs=3, consensus_seconds=0.0)
    _, cands = short.run(feats)
    assert short.consensus_runs == 1 and set(layouts(cands).values()) == {1}
    assert all(row.get("layouts") == 1 for row in (c.row() for c in cands) if row["algorithm"] == "umap_gmm")


def test_budget_records_and_repeat_pins_the_layouts():
    from conr.auto.budget import BudgetPlan
    from conr.auto.record import RunRecord
    from conr.cluster.policy import consensus_allowance
    from conr.cli import build_parser
    from conr.commands.cluster import repeat_command
    from conr.config import ConfigError, load_config

    assert consensus_allowance(None) is None and consensus_allowance(10) == pytest.approx(25.0)  # 1/3 of 600 s, / 8
    cfg = load_config("digits", ["cluster.final=auto"])
    args = build_parser().parse_args(["cluster", "photos", "--k", "10"])
    plan = BudgetPlan(minutes=10.0, epochs=cfg.train.epochs, reserved_seconds=1.0, estimate_seconds=60.0,
                      max_epoch_minutes=15.0, consensus_runs=1)
    record = RunRecord(input_kind="images", input_reason="a folder path", user={}, automatic={}, reasons={},
                       config=cfg, budget=plan)
    assert "cluster.consensus_runs=1" in repeat_command(args, Path("photos"), Path("out"), record, cfg.train.epochs)
    assert plan.record()["consensus_runs"] == 1
    with pytest.raises(ConfigError, match="consensus_runs"):
        load_config("digits", ["cluster.consensus_runs=0"])


# --------------------------------------------------------------------------- in a training run

TINY = ["model.width=8", "model.hidden_dim=64", "model.proj_dim=32", "train.batch_size=128",
        "train.epochs=3", "stage2.start_epoch=1", "stage2.t_end=3", "cluster.eval_every=1",
        "cluster.n_init=1", "run.progress=false", "run.tensorboard=false", "train.warmup_epochs=1",
        "data.subset=400", "train.threads=1"]


def test_the_seed_reaches_stage_2(monkeypatch):
    """stage2_seed=final: the first stage-2 epoch trains with the final stage's choice
    (here made to be the ground truth), its centres the cluster means of the features,
    and the next clusterings carry it on: by default its labels (stage 2 never learns from labels
    worse than its seed), centred on the current features."""
    from conr.cluster import final as final_mod
    from conr.config import load_config
    from conr.engine import Trainer

    cfg = load_config("digits", TINY + ["cluster.stage2_seed=final", "cluster.final=kmeans"])
    assert cfg.cluster.stage2_update_iters == 0   # the default: stage 2 learns from its seed's labels, not worse ones
    trainer = Trainer(cfg, write=False, log=lambda *a: None)
    truth = trainer.data.labels.numpy().astype(np.int64)
    seen = {}

    def fake_run(self, features, given=None, extra=None, rule=None):
        seen["given"], seen["rule"] = given, rule
        cand = final_mod.Candidate("oracle", "test", truth.copy())
        cand.scores = {rule: 1.0}
        return cand, [cand]

    monkeypatch.setattr(final_mod.FinalStage, "run", fake_run)
    monkeypatch.setattr(final_mod.FinalStage, "input_candidates", lambda self: ([], None))
    contexts = []
    step = trainer.train_step

    def spy(v1, v2, ctx):
        contexts.append((ctx.epoch, ctx.pseudo_labels.clone() if ctx.pseudo_labels is not None else None,
                         None if ctx.centers is None else ctx.centers.clone()))
        return step(v1, v2, ctx)

    trainer.train_step = spy
    trainer.fit(until_epoch=2)
    assert "kmeans" in seen["given"]  # the training's own k-means is one of the candidates
    assert cfg.cluster.final_rule == "consensus" and seen["rule"] == "away"   # the seed is one candidate, chosen
    epoch2 = [c for c in contexts if c[0] == 2]
    assert epoch2 and torch.equal(epoch2[0][1].cpu(), torch.as_tensor(truth))   # stage 2 trains with the seed
    feats = trainer.extract_features().cpu()
    assert trainer.stage2_seeded and trainer.history[0]["stage2_seed"] == "oracle/test"
    # later clusterings carry the seed on: its labels, centred on the current features
    assert torch.equal(trainer.pseudo_labels.cpu(), torch.as_tensor(truth))
    expect = torch.stack([feats[torch.as_tensor(truth) == c].mean(0) for c in range(10)])
    assert torch.allclose(trainer.centers.cpu(), expect, atol=1e-5)
    assert epoch2[0][2].shape == (10, feats.shape[1])


def test_refresh_epochs_against_a_hand_count():
    """cluster.stage2_refreshes: evenly spaced inside stage 2, never its last epoch."""
    from conr.cluster.policy import refresh_epochs

    # stage 2 = epochs 61..100 (40 epochs): thirds of it... quarters for 3 refreshes
    assert refresh_epochs(61, 100, 3) == {70, 80, 90}
    assert refresh_epochs(61, 100, 1) == {80}
    assert refresh_epochs(61, 100, 0) == set()
    assert refresh_epochs(2, 3, 1) == {2}        # two stage-2 epochs: after the first
    assert refresh_epochs(10, 10, 2) == set()    # one stage-2 epoch: the final stage follows it anyway


def test_a_refresh_chooses_stage_2_labels_afresh(monkeypatch):
    """stage2_refreshes=1: after the refresh epoch the final stage chooses again on the
    current features, with the carried partition as its given candidate; the next epoch
    trains with its choice. Hand-made: the seed is the truth with a third of the labels
    rotated, the refresh's choice the truth."""
    from conr.cluster import final as final_mod
    from conr.config import load_config
    from conr.engine import Trainer

    cfg = load_config("digits", TINY + ["cluster.stage2_seed=final", "cluster.final=kmeans",
                                        "cluster.stage2_update_iters=0", "cluster.stage2_refreshes=1"])
    trainer = Trainer(cfg, write=False, log=lambda *a: None)
    truth = trainer.data.labels.numpy().astype(np.int64)
    worse = truth.copy()
    worse[::3] = (worse[::3] + 1) % 10
    given = []

    def fake_run(self, features, given_=None, rule=None):
        given.append({k: v.copy() for k, v in given_.items()})
        cand = final_mod.Candidate("oracle", "refresh" if "seeded_kmeans" in given_ else "seed",
                                   (truth if "seeded_kmeans" in given_ else worse).copy())
        cand.scores = {rule: 1.0}
        return cand, [cand]

    monkeypatch.setattr(final_mod.FinalStage, "run",
                        lambda self, f, given=None, extra=None, rule=None: fake_run(self, f, given, rule))
    monkeypatch.setattr(final_mod.FinalStage, "input_candidates", lambda self: ([], None))
    labels_by_epoch = {}
    step = trainer.train_step

    def spy(v1, v2, ctx):
        if ctx.pseudo_labels is not None:
            labels_by_epoch.setdefault(ctx.epoch, ctx.pseudo_labels.clone().cpu())
        return step(v1, v2, ctx)

    trainer.train_step = spy
    trainer.fit()
    assert [sorted(g) for g in given] == [["kmeans"], ["seeded_kmeans"]]
    assert np.array_equal(given[1]["seeded_kmeans"], worse)  # the carried partition (labels kept) competed
    assert torch.equal(labels_by_epoch[2], torch.as_tensor(worse))  # stage 2 starts from the seed
    assert torch.equal(labels_by_epoch[3], torch.as_tensor(truth))  # and trains on with the refresh's choice
    assert trainer.history[0]["stage2_seed"] == "oracle/seed"
    assert trainer.history[1]["stage2_refresh"] == "oracle/refresh" and "stage2_refresh" not in trainer.history[2]


@pytest.mark.slow  # trains, then the final stage
def test_final_stage_without_the_pixels():
    """cluster.final_pixels=false (the demo's setting until 2026-12-05; now the demo weighs the
    pixels as `conr cluster` does): only the features' partitions are candidates."""
    from conr.commands.demo import demo_config
    from conr.config import load_config
    from conr.engine import Trainer

    assert demo_config("runs", "demo-x", []).cluster.final_pixels is True
    assert demo_config("runs", "demo-x", ["cluster.final_pixels=false"]).cluster.final_pixels is False
    cfg = load_config("digits", TINY + ["cluster.final=auto", "cluster.final_pixels=false", "data.subset=200"])
    trainer = Trainer(cfg, write=False, log=lambda *a: None)
    trainer.fit()
    from conr.cluster.policy import CONSENSUS

    names = [c["name"] for c in trainer.partition.candidates]
    assert CONSENSUS in names and all(n.endswith("/features") for n in names if n != CONSENSUS), names
    assert trainer.partition.source == CONSENSUS   # the default's vote, of the features' partitions alone


@pytest.mark.slow  # trains through `conr cluster`
@pytest.mark.parametrize("encoder", ["none", "efficientnet_lite0"])
def test_one_run_one_score(tmp_path, encoder, monkeypatch):
    """conr cluster's report and assignments, conr eval and conr predict on the same images
    all carry the run's partition, trained from scratch or on the embedded encoder's
    features (which eval and predict extract again, from the feature cache)."""
    import csv

    from conr.cli import main
    from test_cluster_report import TINY as CLI_TINY
    from test_cluster_report import make_folder

    monkeypatch.setenv("CONR_CACHE_DIR", str(tmp_path / "cache"))
    folder = make_folder(tmp_path / "photos", per_class=6)
    out = tmp_path / "out"
    assert main(["cluster", str(folder), "--k", "3", "--out", str(out), "--encoder", encoder] + CLI_TINY) == 0
    with open(out / "assignments.csv", newline="") as fh:
        assigned = {r["path"]: int(r["cluster"]) for r in csv.DictReader(fh)}
    ckpt = torch.load(out / "run" / "checkpoint.pt", weights_only=True)
    partition = ckpt["partition"]
    assert partition["source"] and partition["candidates"]
    # every candidate's labels are kept beside the table, the chosen one's equal to the run's
    assert set(partition["candidate_labels"]) == {c["name"] for c in partition["candidates"]}
    assert np.array_equal(partition["candidate_labels"][partition["source"]].numpy(), partition["labels"].numpy())
    # the report names the source and lists every candidate
    html = (out / "report.html").read_text()
    assert "Final stage" in html and all(c["name"] in html for c in partition["candidates"])
    # conr eval scores the same labels (and saves them)
    labels_file = tmp_path / "labels.npy"
    assert main(["eval", str(out / "run"), "--json", "--labels", str(labels_file)]) == 0
    assert np.array_equal(np.load(labels_file), partition["labels"].numpy())
    # conr predict on the training images gives every image its own cluster back
    pred_csv = tmp_path / "pred.csv"
    assert main(["predict", str(out), str(folder), "--out", str(pred_csv)]) == 0
    with open(pred_csv, newline="") as fh:
        predicted = {r["path"]: int(r["cluster"]) for r in csv.DictReader(fh)}
    assert predicted == assigned


def test_carried_partition_moves_by_lloyd_iterations():
    """cluster.stage2_update_iters: the carried labels move by Lloyd iterations on the
    current features (scikit-learn's count: assign to the carried means, then each
    iteration new means and a new assignment; cosine: nearest unit mean), checked
    against a hand loop; 0 iterations keep them."""
    from conr.cluster.stage import carry_partition

    rng = np.random.default_rng(0)
    feats = torch.as_tensor(rng.normal(size=(300, 8)), dtype=torch.float32)
    labels = torch.as_tensor(rng.integers(0, 4, 300))
    kept = carry_partition(feats, labels, 4, iters=0)
    assert torch.equal(kept.labels.cpu(), labels)
    x = feats.numpy() / np.linalg.norm(feats.numpy(), axis=1, keepdims=True)
    lab = labels.numpy()
    for _ in range(2):  # the assignment to the carried means, then one iteration
        means = np.stack([x[lab == c].mean(0) for c in range(4)])
        lab = (x @ (means / np.linalg.norm(means, axis=1, keepdims=True)).T).argmax(1)
    assert (lab != labels.numpy()).any()
    moved = carry_partition(feats, labels, 4, iters=1)
    assert np.array_equal(moved.labels.cpu().numpy(), lab)
    assert torch.allclose(moved.centers, torch.as_tensor(np.stack([x[lab == c].mean(0) for c in range(4)])),
                          atol=1e-5)


@pytest.mark.slow  # UMAP's fuzzy graphs: numba compiles them on first use (~10-15 s)
def test_intersection_keeps_links_both_graphs_hold():
    """On the fuzzy intersection of two neighbour graphs, links both graphs hold weigh
    more than links one graph holds (here: the same points, half of them moved in the
    second representation)."""
    import scipy.sparse as sp

    from conr.cluster.manifold import fuzzy_graph, intersect_graphs

    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 5)).astype(np.float32)
    moved = x.copy()
    moved[:200] = rng.normal(size=(200, 5))
    ga, gb = fuzzy_graph(x, 10), fuzzy_graph(moved, 10)
    joint = intersect_graphs(ga, gb).tocoo()
    both = np.asarray(ga.multiply(gb.astype(bool)).astype(bool)[joint.row, joint.col]).ravel()
    assert both.any() and (~both).any()
    assert joint.data[both].mean() > 2 * joint.data[~both].mean()
    with pytest.raises(ValueError, match="same samples"):
        intersect_graphs(ga, sp.csr_matrix((3, 3)))


@pytest.mark.slow  # UMAP's fuzzy graphs, as above
def test_intersection_weight_leans_towards_one_graph():
    """The mix weight: 0.5 is the default; under it the first graph's own links weigh more,
    over it the second's; a link only one graph holds is weakened, never dropped."""
    from conr.cluster.manifold import fuzzy_graph, intersect_graphs

    rng = np.random.default_rng(0)   # two unrelated neighbour graphs of the same 40 points
    a, b = (fuzzy_graph(rng.normal(size=(40, 2)).astype(np.float32), 5) for _ in range(2))
    only_a = (a.toarray() > 0) & (b.toarray() == 0)
    only_b = (b.toarray() > 0) & (a.toarray() == 0)
    assert only_a.any() and only_b.any()
    got = {w: intersect_graphs(a, b, w).toarray() for w in (0.1, 0.5, 0.9)}
    assert np.array_equal(got[0.5], intersect_graphs(a, b).toarray())
    assert got[0.1][only_a].sum() > got[0.5][only_a].sum() > got[0.9][only_a].sum() > 0
    assert 0 < got[0.1][only_b].sum() < got[0.5][only_b].sum() < got[0.9][only_b].sum()
    for bad in (0.0, 1.0):
        with pytest.raises(ValueError, match="strictly between 0 and 1"):
            intersect_graphs(a, b, bad)


def test_rule_prefers_the_joint_candidate_where_the_pixels_are_candidates():
    from conr.cluster.final import Candidate
    from conr.cluster.policy import JOINT, PREFERRED

    lab = np.arange(20) % 2
    cands = [Candidate("umap_gmm", "features", lab), Candidate("umap_gmm", "joint", lab)]
    emb = lab[:, None] * np.ones((1, 2)) + np.random.default_rng(0).normal(0, 0.1, (20, 2))
    score_candidates(cands, {"x": emb.astype(np.float32)}, {"x": emb.astype(np.float32)}, 2)
    by = {c.name: c.scores["manifold"] for c in cands}
    assert by[JOINT] > by[PREFERRED]   # the same partition: the head start goes to the joint one


def test_silhouette_is_kept_per_embedding():
    """The table keeps each candidate's silhouette in every representation's embedding
    (scikit-learn's silhouette_score on all rows), and silhouette_umap is their mean."""
    import json

    from sklearn.metrics import silhouette_score

    from conr.cluster.final import Candidate

    rng = np.random.default_rng(0)
    lab = np.arange(60) % 3
    embs = {"features": (np.eye(3)[lab] + rng.normal(0, 0.2, (60, 3))).astype(np.float32),
            "pixels": rng.normal(0, 1, (60, 2)).astype(np.float32)}   # no structure: near 0
    cands = [Candidate("kmeans", "pixels", lab), Candidate("umap_gmm", "joint", (lab + np.arange(60) // 30) % 3)]
    score_candidates(cands, embs, embs, 3)
    for c in cands:
        expect = {k: silhouette_score(e, c.labels) for k, e in embs.items()}
        assert c.silhouettes == pytest.approx(expect, abs=1e-6)
        assert c.scores["silhouette_umap"] == pytest.approx(np.mean(list(expect.values())), abs=1e-6)
        row = json.loads(json.dumps(c.row()))
        assert row["silhouette_in"] == pytest.approx(expect, abs=1e-4)
    assert cands[0].silhouettes["features"] > 0.5 > abs(cands[0].silhouettes["pixels"])


def test_joint_rule_keeps_the_features_own_candidates_out_where_the_joint_one_is():
    """The default rule lets the pixels' candidates compete with the joint one (a run
    too short to learn) but not the features' own (a choice between representations);
    without a joint candidate it is the manifold rule."""
    from conr.cluster.final import Candidate
    from conr.cluster.policy import CHOICE_RULE, eligible

    assert CHOICE_RULE == "away"   # joint's eligibility, its silhouette judged away from home
    lab = np.zeros(4, dtype=np.int64)
    for rule in ("joint", "away"):
        feats, joint, pix = (Candidate("umap_gmm", r, lab) for r in ("features", "joint", "pixels"))
        feats.scores, joint.scores, pix.scores = {rule: 0.9, "manifold": 0.9}, {rule: 0.5, "manifold": 0.5}, \
            {rule: 0.4, "manifold": 0.4}
        assert choose([feats, joint, pix], rule) is joint
        assert choose([feats, joint, pix], "manifold") is feats
        pix.scores[rule] = 0.6
        assert choose([feats, joint, pix], rule) is pix
        assert choose([feats, pix], rule) is feats          # no joint candidate: nothing left out
        rows = [{"name": "umap_gmm/joint", "representation": "joint"},
                {"name": "x/features", "representation": "features"}]
        assert eligible(rows, rule, lambda r: r["representation"], lambda r: r["name"]) == rows[:1]


def line_and_three_small(n_line: int = 2000, n_small: int = 60, gap: float = 0.8, seed: int = 0):
    """A long thin line of points with three small tight groups beside it: the k-NN graph
    keeps the line whole and the groups apart; UMAP tears the line into pieces."""
    rng = np.random.default_rng(seed)
    t = rng.uniform(0, 30.0, n_line)
    parts = [np.c_[t, np.zeros(n_line)] + rng.normal(0, 0.1, (n_line, 2))]
    parts += [np.array([30.0 * f, gap]) + rng.normal(0, 0.1, (n_small, 2)) for f in (1 / 6, 1 / 2, 5 / 6)]
    return np.concatenate(parts).astype(np.float32), np.repeat([0, 1, 2, 3], [n_line, n_small, n_small, n_small])


@pytest.fixture(scope="module")
def line_case():
    x, y = line_and_three_small()
    return y, _scored(x, 4)


@pytest.mark.slow  # the `line_case` fixture: UMAP on 2,180 points (~13 s)
def test_line_beside_small_groups_is_spectrals_case(line_case):
    y, cands = line_case
    by_algo = {c.algorithm: adjusted_rand_score(y, c.labels) for c in cands}
    assert by_algo["spectral"] > 0.95 and by_algo["umap_gmm"] < 0.5 and by_algo["kmeans"] < 0.5


@pytest.mark.slow  # the `line_case` fixture: UMAP on 2,180 points (~13 s)
@pytest.mark.xfail(strict=True, raises=AssertionError,
                   reason="known limit of the choice rule: silhouette measured in UMAP embeddings favours "
                          "UMAP + GMM's torn line over spectral's exact partition (and the default's consensus "
                          "follows the two wrong candidates, ARI about 0). Preferring a partition that "
                          "cuts no k-NN link would solve it (no saved run has one), but the graph cannot tell "
                          "this line from one piece spanning several classes beside K - 1 small bursts of "
                          "near-duplicates, where that partition is the wrong one")
def test_rule_on_a_line_beside_small_groups(line_case):
    from conr.cluster.policy import CHOICE_RULE

    y, cands = line_case
    assert adjusted_rand_score(y, choose(cands, CHOICE_RULE).labels) > 0.95


# --------------------------------------------------------------------------- many small clusters

def test_manifold_dimensions_and_covariance_follow_the_members_a_cluster_expects():
    from conr.cluster.manifold import covariance_type, manifold_dims

    assert manifold_dims(1797, 10) == 10 and covariance_type(1797, 10, 10) == "full"      # digits: N2D's recipe
    assert manifold_dims(1440, 20) == 20 and covariance_type(1440, 20, 20) == "full"      # COIL-20: 72 a cluster
    assert manifold_dims(400, 40) == 5 and covariance_type(400, 40, 5) == "diag"          # ORL: 10 faces a person
    assert manifold_dims(2000, 100) == 10 and covariance_type(2000, 100, 10) == "diag"    # 100 classes of 20
    assert manifold_dims(30, 10) == 2                                                     # never under 2


def hundred_clusters_of_twenty(seed: int):
    """K = N / 20: 100 Gaussian groups of 20 in 30 dimensions, centres far apart."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(100, 30)) * 6.0
    y = np.repeat(np.arange(100), 20)
    return (centres[y] + rng.normal(size=(2000, 30))).astype(np.float32), y


@pytest.mark.slow  # UMAP
def test_a_hundred_clusters_of_twenty():
    """K = N / 20: UMAP + GMM in K dimensions with full covariances is ill-posed there (a
    component's covariance has more parameters than it has members); with the dimensions
    and covariance following the members a cluster expects, the manifold step finds them."""
    from sklearn.metrics import adjusted_rand_score

    from conr.cluster.manifold import umap_gmm

    x, y = hundred_clusters_of_twenty(seed=0)
    labels, _, emb = umap_gmm(x, 100, seed=0, n_neighbors=5)
    assert emb.shape[1] == 10 and adjusted_rand_score(y, labels) > 0.9


@pytest.mark.slow  # UMAP on 2,000 points, spectral and k-means with K = 100
def test_rule_on_a_hundred_clusters_of_twenty():
    """Many small clusters (K = N / 20), the regime where a full-covariance mixture in K
    dimensions is ill-posed: every candidate stays sound, and the rule's choice (no labels)
    finds the groups."""
    x, y = hundred_clusters_of_twenty(seed=1)
    cands = _scored(x, 100)
    by_algo = {c.algorithm: adjusted_rand_score(y, c.labels) for c in cands}
    assert min(by_algo.values()) > 0.8, by_algo                # no candidate collapses ...
    assert adjusted_rand_score(y, choose(cands).labels) > 0.9   # ... and the rule's choice finds them


# --------------------------------------------------------------------------- the consensus rule

def test_consensus_rule_outvotes_errors_no_single_candidate_avoids():
    """Three candidates, each wrong on a different fifth of the images (hand-made): none is
    right alone; the consensus rule makes their co-association consensus, which is the
    truth, and chooses it. The other rules never choose the consensus candidate, and every
    candidate's value under the consensus rule is its NMI with the consensus."""
    from sklearn.metrics import normalized_mutual_info_score as nmi

    from conr.cluster.final import Candidate, consensus_candidate
    from conr.cluster.policy import CHOICE_RULE, CONSENSUS, RULES

    truth = np.repeat(np.arange(4), 50)
    cands = []
    for i, algo in enumerate(("kmeans", "spectral", "umap_gmm")):
        lab = truth.copy()
        wrong = np.arange(200)[(np.arange(200) % 5) == i]      # a different fifth each
        lab[wrong] = (lab[wrong] + 1) % 4
        cands.append(Candidate(algo, "features", lab))
    made = consensus_candidate(cands, 4, seed=0)
    assert made.name == CONSENSUS and adjusted_rand_score(truth, made.labels) == 1.0
    assert max(adjusted_rand_score(truth, c.labels) for c in cands) < 0.7
    emb = truth[:, None] + np.random.default_rng(0).normal(0, 0.1, (200, 1))
    reps = {"features": emb.astype(np.float32)}
    score_candidates(cands + [made], reps, reps, 4, seed=0)
    assert choose(cands + [made], "consensus") is made
    for c in cands:
        assert c.scores["consensus"] == pytest.approx(nmi(made.labels, c.labels))
    for rule in set(RULES) - {"consensus"}:
        assert choose(cands + [made], rule) is not made
    for c in cands:   # without a consensus made, the rule falls back to one candidate, chosen
        c.scores[CHOICE_RULE] = c.scores["silhouette_umap"]
    assert choose(cands, "consensus") is choose(cands, CHOICE_RULE)


def test_stage_2_is_seeded_by_one_candidate_under_every_rule():
    """A vote is the ending only: under ``consensus`` (the default) stage 2's seed is the choice
    rule's candidate, under the others the rule's own."""
    from conr.cluster.policy import CHOICE_RULE, DEFAULT_RULE, RULES, seed_rule

    assert DEFAULT_RULE == "consensus" and seed_rule(DEFAULT_RULE) == CHOICE_RULE == "away"
    assert all(seed_rule(r) == r for r in RULES if r != "consensus")
    with pytest.raises(ValueError, match="unknown cluster.final_rule 'vote'"):
        seed_rule("vote")


def test_the_seed_rule_can_be_named_apart_from_the_ending():
    """cluster.seed_rule names the rule that chooses stage 2's seed, the consensus included; a
    name that is no rule is refused by the config check with the choices."""
    from conr.cluster.policy import seed_rule
    from conr.config import Config
    from conr.config_checks import validate_config as validate
    from conr.errors import ConfigError

    assert seed_rule("consensus", "consensus") == "consensus"
    assert seed_rule("away", "joint") == "joint" and seed_rule("joint", "auto") == "joint"
    cfg = Config()
    assert cfg.cluster.seed_rule == "auto"
    cfg.cluster.seed_rule = "vote"
    with pytest.raises(ConfigError, match="cluster.seed_rule"):
        validate(cfg)


@pytest.mark.slow  # UMAP's embedding for the criteria
def test_the_final_stage_makes_and_remakes_the_consensus():
    """FinalStage under the consensus rule: its table holds one consensus candidate, made
    of all the others; rescoring with one more candidate (self-labelling) makes it again
    with that one's vote."""
    from conr.cluster.final import Candidate
    from conr.cluster.policy import CONSENSUS

    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(3), 60)
    feats = (np.eye(3)[y] * 4 + rng.normal(0, 0.3, (180, 3))).astype(np.float32)
    stage = FinalStage(None, 3, seed=0, rule="consensus", algorithms=("kmeans", "spectral"))
    best, cands = stage.run(feats)
    assert best.name == CONSENSUS and [c.name for c in cands].count(CONSENSUS) == 1
    assert adjusted_rand_score(y, best.labels) == 1.0
    flipped = Candidate("self_label", best.name, (y + 1) % 3)
    best2, cands2 = stage.rescore(cands + [flipped])
    assert [c.name for c in cands2].count(CONSENSUS) == 1 and best2.name == CONSENSUS
    assert len(cands2) == len(cands) + 1


def two_views_each_blind_to_a_pair(n: int = 120, seed: int = 0):
    """Four groups seen two ways: the features put groups 0 and 1 on one spot (2 and 3
    apart), the input puts 2 and 3 on one spot (0 and 1 apart). Each representation alone
    merges a pair; only a link both hold (the joint graph) keeps all four apart."""
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(4), n)
    feats_at = np.array([[5, 0, 0], [5, 0, 0], [0, 5, 0], [0, 0, 5]], dtype=float)   # unit rows: on the axes
    input_at = np.array([[0, 0], [8, 0], [0, 8], [0, 8]], dtype=float)
    feats = feats_at[y] + rng.normal(0, 0.5, (4 * n, 3))
    inputs = input_at[y] + rng.normal(0, 1.0, (4 * n, 2))
    return feats.astype(np.float32), inputs.astype(np.float32), y


@pytest.mark.slow  # UMAP on both representations and on the two side by side
def test_rule_takes_the_joint_candidate_where_each_representation_merges_a_pair():
    """The two views' noise is independent, so their graphs share few links (4 % of a point's
    11 nearest): an intersection of them would fall apart into pieces, and the joint candidate
    lays the views side by side instead, where all four groups are apart."""
    from conr.cluster.policy import CHOICE_RULE, CONSENSUS

    x_feat, x_in, y = two_views_each_blind_to_a_pair()
    stage = FinalStage(x_in, 4, seed=0, input_name="pixels")      # the default rule: the consensus
    best, cands = stage.run(x_feat)
    by_name = {c.name: adjusted_rand_score(y, c.labels) for c in cands}
    joint = next(c for c in cands if c.name == "umap_gmm/joint")
    assert joint.combined == "concatenation" and joint.shared < 0.1
    assert by_name["umap_gmm/joint"] > 0.9                                    # the case is the joint one's ...
    single = {k: v for k, v in by_name.items() if k not in ("umap_gmm/joint", CONSENSUS)}
    assert max(single.values()) < 0.8                                         # ... and no single view's
    assert best.name == CONSENSUS and by_name[CONSENSUS] > 0.9               # the vote keeps all four apart too
    chosen, _ = stage.rescore([c for c in cands if c.name != CONSENSUS], CHOICE_RULE)
    assert chosen.name == "umap_gmm/joint", {c.name: c.scores for c in cands}   # and one candidate, chosen


def test_the_report_says_when_the_labels_are_the_vote():
    from conr.outputs.report import _final_stage_section

    rows = [{"name": "umap_gmm/joint", "consensus": 0.9, "seconds": 1.0, "chosen": False},
            {"name": "consensus/candidates", "consensus": 1.0, "seconds": 0.1, "chosen": True}]
    page = "".join(_final_stage_section({"candidates": rows, "source": "consensus/candidates", "rule": "consensus"}))
    assert "the candidates' consensus" in page and "weighted by its agreement" in page
    assert "chosen without labels" not in page
    rows[0]["chosen"], rows[1]["chosen"] = True, False    # too few candidates for a vote: one, chosen
    page = "".join(_final_stage_section({"candidates": rows[:1], "source": "umap_gmm/joint", "rule": "consensus"}))
    assert "The labels come from <b>umap_gmm/joint</b>" in page and "the candidates' consensus" not in page


def test_the_report_says_how_the_joint_candidate_was_made():
    from conr.outputs.report import _final_stage_section

    rows = [{"name": "umap_gmm/joint", "joint": 0.5, "seconds": 1.0, "chosen": True, "combined": "concatenation",
             "shared": 0.04}, {"name": "kmeans/features", "joint": 0.3, "seconds": 0.1, "chosen": False}]
    page = "".join(_final_stage_section({"candidates": rows, "source": "umap_gmm/joint", "rule": "joint"}))
    assert "share 4% of a point's neighbours" in page and "side by side" in page
    rows[0].update(combined="intersection", shared=0.55)
    page = "".join(_final_stage_section({"candidates": rows, "source": "umap_gmm/joint", "rule": "joint"}))
    assert "share 55%" in page and "intersection of their neighbour graphs" in page


def test_the_report_lists_stability_where_only_some_candidates_have_it():
    from conr.outputs.report import _final_stage_section

    rows = [{"name": "seeded_kmeans/features", "joint": 0.3, "seconds": 0.1},   # first row: no stability
            {"name": "umap_gmm/features", "joint": 0.5, "stability": 0.912, "seconds": 1.0, "chosen": True}]
    page = "".join(_final_stage_section({"candidates": rows, "source": "umap_gmm/features", "rule": "stability"}))
    assert "<th>stability</th>" in page.replace(" class=\"num\"", "") and "0.912" in page
    assert "the most stable of those" in page


def test_shared_neighbors_against_a_loop_over_sets():
    from conr.cluster.manifold import exact_neighbors, shared_neighbors

    rng = np.random.default_rng(0)
    x = rng.normal(size=(150, 4)).astype(np.float32)
    moved = x + rng.normal(0, 0.5, x.shape).astype(np.float32)
    a, b = exact_neighbors(x, 8)[0], exact_neighbors(moved, 8)[0]
    loop = np.mean([len(set(a[i, 1:]) & set(b[i, 1:])) / 7 for i in range(len(x))])
    assert shared_neighbors(a, b) == pytest.approx(loop)
    assert 0.0 < loop < 1.0
    assert shared_neighbors(a, a) == 1.0
    with pytest.raises(ValueError, match="same k"):
        shared_neighbors(a, b[:, :5])


def test_side_by_side_weighs_each_view_the_same():
    from conr.cluster.manifold import side_by_side

    rng = np.random.default_rng(0)
    wide, narrow = rng.normal(0, 100.0, (50, 30)) + 7, rng.normal(0, 0.01, (50, 2))
    both = side_by_side(wide, narrow)
    assert both.shape == (50, 32) and both.dtype == np.float32
    for part in (both[:, :30], both[:, 30:]):
        np.testing.assert_allclose(part.mean(0), 0.0, atol=1e-5)
        assert (part.astype(np.float64) ** 2).sum(1).mean() == pytest.approx(1.0, rel=1e-5)


def test_the_joint_way_follows_the_shared_links():
    from conr.cluster.policy import JOINT_MIN_SHARED, joint_way

    assert joint_way(0.5) == joint_way(JOINT_MIN_SHARED) == "intersection"
    assert joint_way(0.5, "union") == "union"
    assert joint_way(JOINT_MIN_SHARED / 2) == joint_way(JOINT_MIN_SHARED / 2, "intersection") == "concatenation"
    with pytest.raises(ValueError, match="unknown joint graph"):
        joint_way(0.5, "product")


def test_union_of_graphs_is_the_probabilistic_sum():
    """A hand-made case: links one graph holds keep their weight, links both hold take
    a + b - a * b, links neither holds stay absent."""
    import scipy.sparse as sp

    from conr.cluster.manifold import union_graphs

    a = sp.csr_matrix(np.array([[0, 0.5, 0], [0.5, 0, 0], [0, 0, 0]]))
    b = sp.csr_matrix(np.array([[0, 0.5, 0], [0.5, 0, 0.8], [0, 0.8, 0]]))
    u = union_graphs(a, b).toarray()
    np.testing.assert_allclose(u, [[0, 0.75, 0], [0.75, 0, 0.8], [0, 0.8, 0]])
    assert union_graphs(a, sp.csr_matrix((3, 3))).nnz == 2
    with pytest.raises(ValueError, match="same samples"):
        union_graphs(a, sp.csr_matrix((4, 4)))


@pytest.mark.slow  # UMAP's fuzzy graphs and layouts (numba compiles them on first use)
@pytest.mark.parametrize("graph", ["union", "intersection"])
def test_the_joint_candidate_combines_the_graphs_it_is_told(graph):
    """cluster.joint_graph reaches the joint candidate: two views of three blobs that share
    most neighbours are combined by the configured graph, and the blobs are found."""
    from sklearn.metrics import adjusted_rand_score

    from conr.cluster.final import FinalStage

    rng = np.random.default_rng(0)
    truth = np.repeat(np.arange(3), 60)
    centres = rng.normal(size=(3, 8)) * 6
    x = (centres[truth] + rng.normal(size=(180, 8))).astype(np.float32)
    y = (x + 0.3 * rng.normal(size=x.shape)).astype(np.float32)
    stage = FinalStage(y, 3, seed=0, consensus_runs=1, joint_graph=graph)
    joint = stage.joint_candidate(x / np.linalg.norm(x, axis=1, keepdims=True))
    assert joint.combined == graph
    assert adjusted_rand_score(truth, joint.labels) > 0.9
    with pytest.raises(ValueError, match="unknown joint graph"):
        FinalStage(y, 3, joint_graph="product")


# --------------------------------------------------------------------------- the stability rule

def test_stability_rule_takes_each_representations_first_then_the_most_stable():
    from conr.cluster.policy import CHOICE_RULE, best_by, eligible

    def row(name, joint, stability=None):   # the away value as the joint one, for the choice rule's fallback
        return {"name": name, "representation": name.split("/", 1)[1], "joint": joint, "away": joint,
                **({} if stability is None else {"stability": stability})}

    rows = [row("kmeans/features", 0.30, 0.99),        # the most stable of all, but not the features' first
            row("umap_gmm/features", 0.50, 0.80),
            row("umap_gmm/pixels", 0.60, 0.70),
            row("umap_gmm/joint", 0.65, 0.75),
            row("seeded_kmeans/features", 0.90)]        # no algorithm makes it again: no stability, no choice
    read = dict(name=lambda c: c["name"], representation=lambda c: c["representation"], scores=lambda c: c)
    firsts = [c["name"] for c in eligible(rows, "stability", **read)]
    assert firsts == ["umap_gmm/features", "umap_gmm/pixels", "umap_gmm/joint"]
    assert best_by(rows, "stability", score=lambda c, rule: c[rule], **read)["name"] == "umap_gmm/features"
    unmeasured = [{k: v for k, v in r.items() if k != "stability"} for r in rows]   # falls back on the choice rule
    assert best_by(unmeasured, "stability", score=lambda c, rule: c[rule], **read)["name"] == \
        best_by(unmeasured, CHOICE_RULE, score=lambda c, rule: c[rule], **read)["name"] == "umap_gmm/joint"


def classes_beside_clumps(seed: int = 0):
    """Four classes of 150 in the features (8-d, moderately apart) and, in the input, 40
    tight clumps (20-d) drawn without regard to the classes: UMAP + GMM of the input groups
    the clumps into four, a different four from every seed and subsample."""
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(4), 150)
    feats = rng.normal(0, 1, (4, 8))[y] * 1.5 + rng.normal(0, 1, (600, 8))
    clump = rng.integers(0, 40, 600)
    pixels = rng.normal(0, 1, (40, 20))[clump] * 3 + rng.normal(0, 0.3, (600, 20))
    return feats.astype(np.float32), pixels.astype(np.float32), y


@pytest.fixture(scope="module")
def clumps_case():
    feats, pixels, y = classes_beside_clumps()
    carried = np.arange(600) % 4   # the training's carried labels: no algorithm makes them again
    best, cands = FinalStage(pixels, 4, seed=0, rule="stability", consensus_runs=1).run(
        feats, given={"seeded_kmeans": carried})
    return y, best, cands


@pytest.mark.slow  # the `clumps_case` fixture: UMAP on 600 points, 15 times (~10 s)
def test_stability_rule_where_the_input_has_clumps_unrelated_to_the_classes(clumps_case):
    y, best, cands = clumps_case
    assert "stability" not in next(c for c in cands if c.algorithm == "seeded_kmeans").scores
    cands = [c for c in cands if c.algorithm != "seeded_kmeans"]
    assert all(adjusted_rand_score(y, c.labels) < 0.1 for c in cands if c.representation != "features")
    assert min(adjusted_rand_score(y, c.labels) for c in cands if c.representation == "features") > 0.8
    stab = {c.name: c.scores["stability"] for c in cands}
    assert min(stab[n] for n in stab if n.endswith("/features")) > 0.9          # the classes come back
    assert stab["umap_gmm/pixels"] < 0.5 and stab["umap_gmm/joint"] < 0.5      # the clumps' grouping does not
    assert best.representation == "features" and adjusted_rand_score(y, best.labels) > 0.8


@pytest.mark.slow  # the `clumps_case` fixture
@pytest.mark.xfail(strict=True, raises=AssertionError,
                   reason="known limit of the choice rule (away, and joint): where the joint candidate is made the "
                          "features' own candidates do not compete, and every other candidate groups the input's "
                          "clumps; the stability rule solves the case but loses on ORL after training "
                          "(docs/results.md, 'A stability rule, measured'), and so does the default's consensus "
                          "(the test below)")
def test_choice_rule_where_the_input_has_clumps_unrelated_to_the_classes(clumps_case):
    from conr.cluster.policy import CHOICE_RULE

    y, _, cands = clumps_case
    assert adjusted_rand_score(y, choose(cands, CHOICE_RULE).labels) > 0.8


@pytest.mark.slow  # the `clumps_case` fixture
def test_default_consensus_where_the_input_has_clumps_unrelated_to_the_classes(clumps_case):
    """Five of the seven candidates group the input's clumps, each another way, so they agree
    with nobody much; the features' two right ones agree with each other. Weighted by
    agreement (the default) the vote finds the classes. (Whether equal votes fail here depends
    on the UMAP layouts: ARI 0.87 on 2026-12-06's fresh install; the hand-made case below has
    no layouts.)"""
    from conr.cluster.final import consensus_candidate

    y, _, cands = clumps_case
    wrong = [c for c in cands if adjusted_rand_score(y, c.labels) < 0.1]
    assert len(wrong) == 5 and len(cands) == 7
    assert adjusted_rand_score(y, consensus_candidate(cands, 4, seed=0).labels) > 0.8


def test_weighted_vote_against_equal_votes_on_a_hand_made_case():
    """4 classes of 60 and, unrelated to them, 20 clumps of 12 (3 images of each class). Two
    candidates give the classes with 6 errors each; five group the clumps into 4 groups of 5,
    each by another random matching, so each is unrelated to the classes. Equal votes put two
    images of one clump together at least 5 times in 7 and two of one class in another clump
    about 3 times: the classes are lost. The wrong candidates agree with each other little (ARI
    about 0.1), the right two with each other much (0.93), so the default's weights (mean ARI
    with the others, to the 4th power) let the classes win."""
    from conr.cluster.consensus import agreement, consensus_partition
    from conr.cluster.policy import vote_weights

    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(4), 60)
    clump = np.arange(240) % 20
    right = []
    for _ in range(2):
        lab = y.copy()
        flip = rng.choice(240, 6, replace=False)
        lab[flip] = (lab[flip] + 1) % 4
        right.append(lab)
    wrong = [rng.permutation(20)[clump] % 4 for _ in range(5)]
    labelings = right + wrong
    assert all(adjusted_rand_score(y, lab) < 0.1 for lab in wrong)
    ag = agreement(labelings)
    assert min(ag[:2]) > max(ag[2:])                  # the right two agree more than any wrong one
    equal = consensus_partition(labelings, 4, seed=0)
    weighted = consensus_partition(labelings, 4, seed=0, weights=vote_weights(ag))
    assert adjusted_rand_score(y, equal) < 0.5
    assert adjusted_rand_score(y, weighted) > 0.85


# --------------------------------------------------------------------------- the away rule

def test_away_silhouette_against_a_hand_count():
    from conr.cluster.policy import away_silhouette

    sil = {"features": 0.8, "pixels": 0.2, "encoder": 0.5}
    assert away_silhouette(sil, "pixels") == pytest.approx((0.8 + 0.5) / 2)   # its own view left out
    assert away_silhouette(sil, "joint") == pytest.approx(0.5)                 # made of none: all three
    assert away_silhouette({"pixels": 0.3}, "pixels") == pytest.approx(0.3)    # no other view: its own


def _two_views(features_noise: float, seed: int = 0):
    """Four classes of 50: clear in the features (up to ``features_noise``); in the input, four
    tight clumps that each hold an equal share of every class (nothing to do with them)."""
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(4), 50)
    clump = np.tile(np.arange(4), 50)                       # each class spread over the four clumps
    feats = np.eye(4)[y] * 2 + rng.normal(0, features_noise, (200, 4))
    pixels = np.eye(4)[clump] * 10 + rng.normal(0, 0.3, (200, 4))
    return y, clump, {"features": feats.astype(np.float32), "pixels": pixels.astype(np.float32)}


def test_away_rule_judges_the_inputs_partition_where_it_was_not_made():
    """The input's tight clumps make its own partition of them look best by the silhouette
    averaged over both views (it is judged at home); the away rule judges it only in the
    features, where it means nothing, and takes the joint candidate, which is right."""
    from conr.cluster.final import Candidate

    y, clump, embs = _two_views(features_noise=0.9)
    joint, clumps = Candidate("umap_gmm", "joint", y), Candidate("kmeans", "pixels", clump)
    score_candidates([joint, clumps], embs, embs, 4)
    assert choose([joint, clumps], "joint") is clumps, {c.name: c.scores for c in (joint, clumps)}
    assert choose([joint, clumps], "away") is joint, {c.name: c.scores for c in (joint, clumps)}


def test_away_rule_takes_the_inputs_partition_where_it_is_right():
    """Where the classes are clear in both views and the joint candidate merged a pair (and
    split another class), the input's partition is judged in the features and still wins."""
    from conr.cluster.final import Candidate

    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(4), 50)
    embs = {"features": (np.eye(4)[y] * 2 + rng.normal(0, 0.3, (200, 4))).astype(np.float32),
            "pixels": (np.eye(4)[y] * 3 + rng.normal(0, 0.3, (200, 4))).astype(np.float32)}
    merged = np.where(y == 1, 0, y)
    merged[(y == 2) & (np.arange(200) % 2 == 0)] = 1
    joint, pixels = Candidate("umap_gmm", "joint", merged), Candidate("umap_gmm", "pixels", y)
    score_candidates([joint, pixels], embs, embs, 4)
    assert choose([joint, pixels], "away") is pixels, {c.name: c.scores for c in (joint, pixels)}


def test_the_consensus_counts_each_candidates_vote_by_its_agreement():
    """consensus/candidates against a brute-force reference: every pair's adjusted Rand index by a
    loop, each candidate's mean with the others to the power AGREEMENT_POWER as its weight, and
    the weighted consensus of the labels. Three candidates near the truth and two that agree with
    nobody: the two count for almost nothing."""
    from conr.cluster.consensus import consensus_partition
    from conr.cluster.final import Candidate, consensus_candidate
    from conr.cluster.policy import AGREEMENT_POWER, vote_weights

    rng = np.random.default_rng(4)
    truth = np.repeat(np.arange(3), 40)
    near = []
    for _ in range(3):
        lab = truth.copy()
        moved = rng.random(truth.size) < 0.15
        lab[moved] = rng.integers(0, 3, moved.sum())
        near.append(lab)
    labels = near + [rng.integers(0, 3, truth.size) for _ in range(2)]
    cands = [Candidate("kmeans", f"view{i}", lab, 0.0) for i, lab in enumerate(labels)]
    means = [np.mean([adjusted_rand_score(a, b) for j, b in enumerate(labels) if j != i]) for i, a in enumerate(labels)]
    weights = [max(0.0, m) ** AGREEMENT_POWER for m in means]
    got = consensus_candidate(cands, 3, seed=0)
    assert got.name == "consensus/candidates"
    assert adjusted_rand_score(got.labels, consensus_partition(labels, 3, seed=0, weights=weights)) == 1.0
    assert max(weights[3:]) < 0.01 * min(weights[:3])
    assert adjusted_rand_score(truth, got.labels) >= max(adjusted_rand_score(truth, lab) for lab in near)
    assert vote_weights([-0.1, 0.0]) is None                      # nobody agrees: equal votes
