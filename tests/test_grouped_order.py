"""Tests of conr.ops.grouped_order: an epoch order whose batches hold clusters in runs."""
from __future__ import annotations

import pytest
import torch

from conr.ops.grouped_order import grouped_permutation


def runs_of(order: list[int], labels: list[int]) -> list[list[int]]:
    """Maximal stretches of ``order`` whose labels are equal (a slow reference)."""
    out: list[list[int]] = []
    for i in order:
        if out and labels[out[-1][-1]] == labels[i]:
            out[-1].append(i)
        else:
            out.append([i])
    return out


@pytest.mark.parametrize("group", [1, 2, 3, 10, 50])
def test_every_index_once_and_runs_of_one_cluster(group):
    labels = torch.randint(0, 7, (203,), generator=torch.Generator().manual_seed(group))
    order = grouped_permutation(labels, group, torch.Generator().manual_seed(1))
    assert sorted(order.tolist()) == list(range(203))          # a permutation: each sample once an epoch
    if group == 1:
        return
    sizes = torch.bincount(labels).tolist()
    # each cluster is cut into ceil(size / group) pieces and the pieces are shuffled: the order
    # changes label at most once a piece (a shuffle of 203 in 7 clusters changes ~174 times)
    pieces = sum(-(-s // group) for s in sizes if s)
    assert len(runs_of(order.tolist(), labels.tolist())) <= pieces


def test_hand_made_two_clusters_of_four_in_runs_of_two():
    labels = torch.tensor([0, 1, 0, 1, 0, 1, 0, 1])
    for seed in range(20):
        order = grouped_permutation(labels, 2, torch.Generator().manual_seed(seed)).tolist()
        # positions 0-1, 2-3, 4-5, 6-7 each hold two members of one cluster
        assert all(labels[order[i]] == labels[order[i + 1]] for i in (0, 2, 4, 6)), order


def test_batches_hold_far_more_members_of_a_cluster_than_a_shuffle():
    # 40 clusters of 10 in batches of 256, as ORL: a shuffle gives ~6.4 of a cluster present
    labels = torch.arange(40).repeat_interleave(10)
    g = torch.Generator().manual_seed(0)

    def members_per_cluster(order):
        batch = labels[order[:256]]
        counts = torch.bincount(batch, minlength=40)
        return counts[counts > 0].float().mean().item()

    shuffled = members_per_cluster(torch.randperm(400, generator=g))
    grouped = members_per_cluster(grouped_permutation(labels, 10, g))
    assert shuffled < 7.5
    assert grouped >= 9.0          # whole clusters, but for the one the batch cuts


def test_group_below_one_is_refused():
    with pytest.raises(ValueError, match="at least 1"):
        grouped_permutation(torch.zeros(4, dtype=torch.long), 0)


def test_conr_groups_only_in_stage_2():
    from conr.config import load_config
    from conr.methods import build_method

    tiny = ["data.image_size=8", "model.backbone=small_cnn", "model.width=4", "model.hidden_dim=16",
            "model.proj_dim=8", "train.batch_size=16", "train.epochs=4", "train.device=cpu",
            "stage2.start_epoch=2", "stage2.k=3", "stage2.k1=3", "cluster.n_clusters=4"]
    labels = torch.arange(4).repeat_interleave(12)
    plain = build_method(load_config(None, tiny), 3)
    grouped = build_method(load_config(None, tiny + ["stage2.group_members=6"]), 3)
    for epoch in (1, 2):   # the warm-up: the same shuffle as the baseline, with or without the setting
        a = grouped.epoch_order(epoch, labels, 48, torch.Generator().manual_seed(epoch))
        b = torch.randperm(48, generator=torch.Generator().manual_seed(epoch))
        assert torch.equal(a, b)
    order = grouped.epoch_order(3, labels, 48, torch.Generator().manual_seed(3))
    assert sorted(order.tolist()) == list(range(48))
    assert all(len(set(labels[order[i:i + 6]].tolist())) == 1 for i in range(0, 48, 6))
    # the grouping needs the pseudo-labels, so stage 2 clusters for it even without the boundary filter
    unfiltered = build_method(load_config(None, tiny + ["stage2.boundary_filter=false"]), 3)
    grouped_unfiltered = build_method(load_config(None, tiny + ["stage2.boundary_filter=false",
                                                                "stage2.group_members=6"]), 3)
    assert not unfiltered.needs_clusters(3) and grouped_unfiltered.needs_clusters(3)
    assert not grouped_unfiltered.needs_clusters(2)
    shuffled = plain.epoch_order(3, labels, 48, torch.Generator().manual_seed(3))
    assert torch.equal(shuffled, torch.randperm(48, generator=torch.Generator().manual_seed(3)))
