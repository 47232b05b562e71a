"""The manifold step's Gaussian mixture started from other partitions (conr/cluster/manifold.py
``cluster_gaussians``, ``partition_start``, ``fit_gmm_posterior``): checked against scikit-learn's own estimators and a
hand-made case whose answer is known."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
from sklearn.covariance import empirical_covariance
from sklearn.cluster import KMeans
from sklearn.metrics import adjusted_rand_score
from sklearn.mixture import GaussianMixture

from conr.cluster.manifold import REG_COVAR, cluster_gaussians, fit_gmm_posterior, gmm_posterior, partition_start


def parallel_lines(n=200, seed=0):
    """Three parallel lines 10 long and 1 apart (noise 0.05 across them): k-means, and so the
    mixture's own starts, cut them across (a lower sum of squares), while one full-covariance
    component a line fits far better (a likelihood higher by about 1.6 nats a point)."""
    rng = np.random.default_rng(seed)
    x = np.concatenate([np.c_[rng.uniform(0, 10, n), rng.normal(y0, 0.05, n)] for y0 in (0.0, 1.0, 2.0)])
    return x, np.repeat(np.arange(3), n)


def fitted(x, k, seed, **init):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return GaussianMixture(k, covariance_type="full", random_state=seed, reg_covar=REG_COVAR,
                               **({"n_init": 5} if not init else init)).fit(x)


def test_cluster_gaussians_are_each_clusters_mean_and_inverse_covariance():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(60, 3))
    labels = np.repeat([0, 1, 2], [10, 20, 30])
    full = cluster_gaussians(x, labels, 3)
    for j, members in enumerate((x[:10], x[10:30], x[30:])):
        np.testing.assert_allclose(full["means_init"][j], members.mean(0))
        np.testing.assert_allclose(np.linalg.inv(full["precisions_init"][j]),
                                   empirical_covariance(members) + REG_COVAR * np.eye(3), rtol=1e-8, atol=1e-10)


def test_a_start_is_the_partitions_clusters_or_k_means_from_their_centres():
    """A partition's own clusters; refined, scikit-learn's own start with the centres taken
    from the partition: a partition that straddles two groups is first moved to the groups
    by k-means, as the mixture's own start would be."""
    rng = np.random.default_rng(2)
    x = np.concatenate([rng.normal(c, 0.3, size=(40, 2)) for c in ((0, 0), (5, 0), (0, 5))])
    truth = np.repeat([0, 1, 2], 40)
    rough = truth.copy()
    rough[:8] = 1                                               # a fifth of group 0 put with group 1
    own = partition_start(x, rough, 3)
    np.testing.assert_allclose(own["weights_init"], np.bincount(rough) / len(x))
    np.testing.assert_allclose(own["means_init"], cluster_gaussians(x, rough, 3)["means_init"])
    start = partition_start(x, rough, 3, refine=True)
    centres = np.stack([x[rough == j].mean(0) for j in range(3)])
    reference = KMeans(3, init=centres, n_init=1).fit_predict(x)
    assert adjusted_rand_score(truth, reference) == 1.0
    np.testing.assert_allclose(start["weights_init"], np.bincount(reference) / len(x))
    gauss = cluster_gaussians(x, reference, 3)
    np.testing.assert_allclose(start["means_init"], gauss["means_init"])
    np.testing.assert_allclose(start["precisions_init"], gauss["precisions_init"])


def test_no_start_from_a_partition_that_leaves_a_cluster_empty_or_does_not_fit():
    x = np.random.default_rng(0).normal(size=(12, 2))
    assert partition_start(x, np.repeat([0, 2], 6), 3) is None      # cluster 1 has no member
    assert partition_start(x, np.repeat([0, 1], 6), 2) is not None
    assert partition_start(x, np.zeros(5, dtype=int), 2) is None    # another length
    assert partition_start(x, np.repeat([0, 3], 6), 2) is None      # a label beyond K - 1


def test_the_mixtures_own_starts_cut_parallel_lines_and_a_start_from_the_lines_keeps_them():
    x, truth = parallel_lines()
    for seed in range(3):
        own = gmm_posterior(x, 3, 5, seed, "full").argmax(1)
        assert adjusted_rand_score(truth, own) < 0.1                       # cut across, as k-means does
        proba, kept = fit_gmm_posterior(x, 3, 5, seed, "full", starts=[truth])
        assert kept == 0 and adjusted_rand_score(truth, proba.argmax(1)) == 1.0


def test_the_fit_of_the_highest_likelihood_is_kept_whatever_the_start():
    x, truth = parallel_lines(seed=3)
    cut = (x[:, 0] > 5).astype(int) + (x[:, 0] > 7.5)                      # cut across: worse than the own starts
    shuffled = np.random.default_rng(0).permutation(truth)                   # no structure at all
    seed = 2
    own = fitted(x, 3, seed)
    starts = [shuffled, cut, truth]
    fits = {None: own}
    for i, s in enumerate(starts):
        for refine in (False, True):
            g = fitted(x, 3, seed, **partition_start(x, s, 3, seed=seed, refine=refine))
            if g.score(x) > fits.get(i, own).score(x):
                fits[i] = g
    best = max(fits, key=lambda i: fits[i].score(x))
    proba, kept = fit_gmm_posterior(x, 3, 5, seed, "full", starts=starts)
    assert best == 2 and kept == best
    np.testing.assert_allclose(proba, fits[best].predict_proba(x), atol=1e-6)
    # with only worse starts the mixture's own fit stays, as without starts
    proba, kept = fit_gmm_posterior(x, 3, 5, seed, "full", starts=[cut])
    assert kept is None
    np.testing.assert_allclose(proba, own.predict_proba(x), atol=1e-6)


def test_no_starts_where_the_clusters_are_too_small_for_full_covariances():
    x, truth = parallel_lines()
    own = gmm_posterior(x, 3, 5, 0, "diag")
    proba, kept = fit_gmm_posterior(x, 3, 5, 0, "diag", starts=[truth])
    assert kept is None
    np.testing.assert_allclose(proba, own)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reference = GaussianMixture(3, covariance_type="diag", n_init=5, random_state=0, reg_covar=REG_COVAR).fit(x)
    np.testing.assert_allclose(proba, reference.predict_proba(x), atol=1e-6)


def test_the_final_stage_starts_its_mixtures_from_the_other_partitions_only_when_asked():
    from conr.cluster.final import FinalStage

    rng = np.random.default_rng(0)
    centres = rng.normal(scale=6.0, size=(4, 8))
    feats = np.concatenate([c + rng.normal(size=(40, 8)) for c in centres]).astype(np.float32)
    pixels = (feats @ rng.normal(size=(8, 12))).astype(np.float32)
    for starts in (True, False):
        _, cands = FinalStage(pixels, 4, seed=0, consensus_runs=1, mixture_starts=starts).run(feats)
        manifold = [c for c in cands if c.algorithm == "umap_gmm"]
        assert {c.representation for c in manifold} == {"features", "pixels", "joint"}
        assert all(c.started in (0, 1) and c.row()["started"] == c.started for c in manifold)
        if not starts:
            assert all(c.started == 0 for c in manifold)


def test_the_option_reaches_the_final_stage():
    import torch

    from conr.cluster.stage import build_final_stage
    from conr.config import load_config
    from conr.errors import ConfigError

    class Images:  # the little of ImageData the final stage reads
        kind = "images"
        images = torch.zeros(6, 1, 4, 4, dtype=torch.uint8)

        def __len__(self):
            return 6

    for value, expected in (("false", False), ("true", True)):
        cfg = load_config("digits", [f"cluster.mixture_starts={value}"])
        assert build_final_stage(Images(), cfg.cluster, seed=0).mixture_starts is expected
    assert load_config("digits").cluster.mixture_starts is True
    with pytest.raises(ConfigError, match="mixture_starts expects true/false"):
        load_config("digits", ["cluster.mixture_starts=maybe"])


def test_the_report_says_where_a_started_mixture_was_kept():
    from conr.outputs.report import _final_stage_section

    rows = [{"name": "umap_gmm/joint", "layouts": 5, "started": 3, "joint": 0.7, "chosen": True},
            {"name": "umap_gmm/features", "layouts": 1, "started": 0, "joint": 0.6}]
    page = "".join(_final_stage_section({"candidates": rows, "source": "umap_gmm/joint", "rule": "joint"}))
    assert "umap_gmm/joint: in 3 of its 5 UMAP layouts" in page
    assert "umap_gmm/features: in" not in page
