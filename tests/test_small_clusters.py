"""Small clusters: where a cluster expects fewer than SMALL_CLUSTER_MEMBERS images or rows, the
automatic settings keep stage 2's neighbours within a pseudo-cluster (stage2.same_cluster), on
images and vectors alike, again when K is estimated after stage 1, and never over a user's choice."""
from __future__ import annotations

import torch

from conr.auto.record import RunRecord
from conr.auto.resolve import vector_settings
from conr.auto.settings import auto_settings, within_clusters
from conr.cluster.policy import SELF_LABEL_MIN_MEMBERS, SMALL_CLUSTER_MEMBERS
from conr.data.survey import survey_images


def test_a_cluster_is_small_below_forty_expected_members():
    """Hand-made cases around the boundary: 400 faces of 40 people (10 each) and 220 views of 20
    objects are small; 1,797 digits of 10, 1,440 views of 20 objects (72 each) and exactly 40 a
    cluster are not."""
    assert SMALL_CLUSTER_MEMBERS == 40 == SELF_LABEL_MIN_MEMBERS   # one regime for both rules
    for n, k, small in [(400, 40, True), (220, 20, True), (2000, 100, True), (1599, 40, True),
                        (1600, 40, False), (1440, 20, False), (1797, 10, False), (10_000, 10, False)]:
        got, why = within_clusters(n, k)
        assert got is small, (n, k)
        assert f"expects {n / k:.0f} members" in why
        assert ("left out" in why) is small


def test_image_settings_keep_neighbours_within_pseudo_clusters_only_for_small_clusters():
    faces = survey_images(torch.zeros(400, 1, 16, 16, dtype=torch.uint8))
    raw, why = auto_settings(faces, 40)
    assert raw["stage2"]["same_cluster"] is True and "fewer than 40" in why["stage2.same_cluster"]
    assert raw["cluster"]["self_label_epochs"] == 0                 # the same regime: no cluster head
    digits = survey_images(torch.zeros(1797, 1, 16, 16, dtype=torch.uint8))
    raw, why = auto_settings(digits, 10)
    assert raw["stage2"]["same_cluster"] is False and "every in-batch neighbour" in why["stage2.same_cluster"]
    assert raw["cluster"]["self_label_epochs"] > 0


def test_vector_settings_follow_the_same_rule_and_a_users_choice_stands():
    cfg, auto, reasons = vector_settings({}, 400, k=40)
    assert cfg.stage2.same_cluster is True and auto["stage2"]["same_cluster"] is True
    assert "stage2.same_cluster" in reasons
    cfg, _, _ = vector_settings({}, 1440, k=20)
    assert cfg.stage2.same_cluster is False
    cfg, _, reasons = vector_settings({"stage2": {"same_cluster": False}}, 400, k=40)
    assert cfg.stage2.same_cluster is False and "stage2.same_cluster" not in reasons
    cfg, _, _ = vector_settings({"stage2": {"same_cluster": True}}, 1440, k=20)
    assert cfg.stage2.same_cluster is True


def test_an_estimated_k_decides_again_whether_clusters_are_small():
    """Made with the provisional K = 10 (40 members of 400: not small), the record once K = 40 is
    estimated keeps the neighbours within pseudo-clusters (10 members), and says why; a user's
    choice stands, and a record that does not know N leaves the setting alone."""
    selection = {"k": 40, "criterion": "silhouette", "k_range": [2, 50], "table": []}
    cfg, auto, reasons = vector_settings({}, 400, k=10)
    assert cfg.stage2.same_cluster is False
    record = RunRecord(input_kind="vectors", input_reason="an array", user={}, automatic=auto, reasons=reasons,
                       config=cfg, n_rows=400)
    assert record.neighbourhood_for(40)["same_cluster"] is True
    estimated = record.with_k(selection)
    assert estimated.config.stage2.same_cluster is True
    assert "K = 40 as estimated" in estimated.reasons["stage2.same_cluster"]
    assert "fewer than 40" in estimated.reasons["stage2.same_cluster"]
    unknown = RunRecord(input_kind="vectors", input_reason="an array", user={}, automatic=auto, reasons=reasons,
                        config=cfg).with_k(selection)
    assert unknown.config.stage2.same_cluster is False and "same_cluster" not in unknown.neighbourhood_for(40)
    user = {"stage2": {"same_cluster": False}}
    cfg, auto, reasons = vector_settings(user, 400, k=10)
    mine = RunRecord(input_kind="vectors", input_reason="an array", user=user, automatic=auto, reasons=reasons,
                     config=cfg, n_rows=400).with_k(selection)
    assert mine.config.stage2.same_cluster is False
    # the neighbourhood's sizes follow the estimated K as before, beside it
    assert (estimated.config.stage2.k, estimated.config.stage2.k1) == (3, 3)
