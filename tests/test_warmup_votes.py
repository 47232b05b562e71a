"""The warm-up's candidates in the ending's vote (cluster.warmup_votes,
conr.cluster.policy.warmup_voters): which of them vote and when, their half of the vote
(cluster.warmup_weight, conr.cluster.policy.shared_weights) by hand, and a small CoNR run on vectors
whose ending is the weighted consensus of the end's candidates and the warm-up's, checked against
conr.cluster.consensus made by hand from the labels the run kept."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.datasets import make_blobs
from sklearn.metrics import adjusted_rand_score

from conr.cluster.policy import WARMUP_VOTERS, warmup_voters


def test_only_the_warm_ups_features_candidates_vote_and_only_in_a_vote():
    seed = {name: np.arange(6) % 2 for name in (*WARMUP_VOTERS, "kmeans/pixels", "umap_gmm/joint")}
    voters = warmup_voters(seed, "consensus")
    assert sorted(voters) == ["kmeans", "spectral", "umap_gmm"]          # the input's and the joint one left out
    assert warmup_voters(seed, "away") == {}                             # a rule that chooses one candidate
    assert warmup_voters(seed, "consensus", votes=False) == {}           # cluster.warmup_votes=false
    assert warmup_voters({}, "consensus") == {}                          # no stage 2, no seed


def test_the_setting_is_checked():
    from conr.config import ConfigError, load_config

    assert load_config().cluster.warmup_votes is True
    assert load_config(None, ["cluster.warmup_votes=false"]).cluster.warmup_votes is False
    with pytest.raises(ConfigError, match="did you mean 'cluster.warmup_votes'"):
        load_config(None, ["cluster.warmup_vote=false"])
    with pytest.raises(ConfigError, match="cluster.warmup_votes expects true/false"):
        load_config(None, ["cluster.warmup_votes=maybe"])


def test_shared_weights_by_hand():
    from conr.cluster.policy import shared_weights

    # the end's three weigh 1, 1, 1 and the warm-up's two 1, 2: each side holds half, in its own proportions
    assert shared_weights([1, 1, 1, 1, 2], [0, 0, 0, 1, 1], 0.5) == pytest.approx([1 / 6, 1 / 6, 1 / 6, 1 / 6, 2 / 6])
    assert shared_weights(None, [0, 1, 1, 1], 0.5) == pytest.approx([0.5, 1 / 6, 1 / 6, 1 / 6])   # None: equal votes
    assert shared_weights([1, 2, 3], [0, 0, 1], None) == [1, 2, 3]          # count: each by its own weight
    assert shared_weights([1, 2, 3], [1, 1, 1], 0.5) == [1, 2, 3]          # one side only: nothing to share
    assert shared_weights([1, 2, 0], [0, 0, 1], 0.5) == [1, 2, 0]          # a side with no weight: unchanged
    assert shared_weights(None, [0, 0], 0.5) is None


def test_half_the_vote_outweighs_an_error_the_end_shares():
    """Six of the end's eight candidates carry the seed's error (five images of the second cluster
    moved into the third), two and the warm-up's three do not. Counted one by one the error wins
    (six against five, and the six agree most); with the warm-up holding half the vote the truth wins."""
    from conr.cluster.final import Candidate, consensus_candidate, weighted_vote

    truth = np.repeat([0, 1, 2], 10)
    moved = truth.copy()
    moved[15:20] = 2
    end = [moved] * 6 + [truth] * 2
    marks = [False] * 8 + [True] * 3
    labelings = end + [truth] * 3
    assert adjusted_rand_score(weighted_vote(labelings, 3, 0), moved) == 1.0
    assert adjusted_rand_score(weighted_vote(labelings, 3, 0, warmup=marks, warmup_share=0.5), truth) == 1.0
    cands = [Candidate("kmeans", "features" if not m else "warmup", lab) for lab, m in zip(labelings, marks)]
    assert adjusted_rand_score(consensus_candidate(cands, 3).labels, truth) == 1.0               # the default: half
    assert adjusted_rand_score(consensus_candidate(cands, 3, warmup_share=None).labels, moved) == 1.0   # count


def test_the_weight_setting_is_checked():
    from conr.config import ConfigError, load_config

    assert load_config().cluster.warmup_weight == "half"
    assert load_config(None, ["cluster.warmup_weight=count"]).cluster.warmup_weight == "count"
    with pytest.raises(ConfigError, match="cluster.warmup_weight='third' is not one of 'half', 'count'"):
        load_config(None, ["cluster.warmup_weight=third"])


def _run(votes: bool, **cluster):
    """A small CoNR run on three blobs of vectors, with the vector path's automatic settings
    (the final stage, stage 2 seeded by it, the consensus ending)."""
    from conr.auto.resolve import vector_settings
    from conr.cluster.stage import build_final_stage
    from conr.data.vectors import VectorData
    from conr.engine.vectors import VectorTrainer

    x, y = make_blobs(n_samples=150, centers=3, n_features=8, cluster_std=2.5, random_state=0)
    data = VectorData(images=torch.from_numpy(x.astype(np.float32)), labels=torch.as_tensor(y))
    user = {"method": "conr", "train": {"epochs": 10, "seed": 0, "device": "cpu", "batch_size": 32},
            "cluster": {"n_clusters": 3, "consensus_runs": 1, "warmup_votes": votes, **cluster},
            "run": {"progress": False}}
    cfg, _, _ = vector_settings(user, len(data), k=3)
    assert cfg.cluster.final == "auto" and cfg.cluster.stage2_seed == "final" and cfg.cluster.final_rule == "consensus"
    stage = build_final_stage(data, cfg.cluster, 0)
    stage.prepare()
    trainer = VectorTrainer(cfg, data, final_stage=stage, write=False, log=lambda *a: None)
    trainer.fit()
    return trainer


@pytest.mark.slow  # two small trainings with their final stages
def test_the_ending_is_the_vote_of_the_end_and_the_warm_up():
    from conr.cluster.consensus import agreement, consensus_partition
    from conr.cluster.policy import shared_weights, vote_weights

    trainer = _run(votes=True)
    part = trainer.partition
    names = [r["name"] for r in part.candidates]
    assert [n for n in names if n.endswith("/warmup")] == ["kmeans/warmup", "spectral/warmup", "umap_gmm/warmup"]
    for algorithm in ("kmeans", "spectral", "umap_gmm"):   # the very labels stage 2's seed was chosen among
        assert torch.equal(part.candidate_labels[f"{algorithm}/warmup"],
                           part.seed_candidate_labels[f"{algorithm}/features"])
    assert part.source == "consensus/candidates"
    voting = [n for n in names if n != "consensus/candidates"]
    voters = [part.candidate_labels[n].numpy() for n in voting]
    weights = shared_weights(vote_weights(agreement(voters)), [n.endswith("/warmup") for n in voting], 0.5)
    assert sum(w for w, n in zip(weights, voting) if n.endswith("/warmup")) == pytest.approx(sum(weights) / 2)
    by_hand = consensus_partition(voters, 3, seed=0, weights=weights)
    assert adjusted_rand_score(by_hand, part.labels.numpy()) == 1.0

    without = _run(votes=False).partition
    assert not any(r["name"].endswith("/warmup") for r in without.candidates)
    assert without.seed_candidate_labels.keys() == part.seed_candidate_labels.keys()   # the same warm-up


def test_the_features_vote_seed_is_the_vote_of_the_features_candidates_alone():
    """cluster.seed_rule=features_consensus: the vote of the candidates on the features (two hold
    the truth, one moves half a cluster: the vote is the truth); one candidate alone is itself; the
    name is a seed rule only."""
    from conr.cluster.final import Candidate
    from conr.cluster.policy import RULES, SEED_RULES, seed_rule
    from conr.cluster.stage import features_consensus
    from conr.config import ConfigError, load_config

    truth = np.repeat([0, 1, 2], 10)
    moved = np.repeat([0, 1, 2], [10, 15, 5])
    made = features_consensus([Candidate("kmeans", "features", truth), Candidate("spectral", "features", (truth + 1) % 3),
                               Candidate("umap_gmm", "features", moved)], 3)
    assert made.name == "consensus/features" and adjusted_rand_score(truth, made.labels) == 1.0
    one = Candidate("kmeans", "features", moved)
    assert features_consensus([one], 3) is one
    assert seed_rule("consensus", "features_consensus") == "features_consensus"
    assert "features_consensus" in SEED_RULES and "features_consensus" not in RULES
    assert load_config(None, ["cluster.seed_rule=features_consensus"]).cluster.seed_rule == "features_consensus"
    with pytest.raises(ConfigError, match="cluster.final_rule"):
        load_config(None, ["cluster.final_rule=features_consensus"])


@pytest.mark.slow  # a small training with its final stage
def test_a_run_seeded_by_the_features_vote():
    """The seed's table holds the vote of the warm-up's candidates on the features, chosen; its
    labels are conr.cluster.consensus's of those candidates' labels, made by hand."""
    from conr.cluster.consensus import agreement, consensus_partition
    from conr.cluster.policy import vote_weights

    trainer = _run(votes=True, seed_rule="features_consensus")
    chosen = [r["name"] for r in trainer.seed_candidates if r["chosen"]]
    assert chosen == ["consensus/features"]
    labels = trainer.seed_candidate_labels
    voters = [labels[n].numpy() for n in ("kmeans/features", "spectral/features", "umap_gmm/features")]
    by_hand = consensus_partition(voters, 3, seed=0, weights=vote_weights(agreement(voters)))
    assert adjusted_rand_score(by_hand, labels["consensus/features"].numpy()) == 1.0
