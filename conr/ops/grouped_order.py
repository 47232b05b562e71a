"""An epoch's order in which a batch holds its clusters in groups.

CoNR's neighbourhood lives inside the batch (spec 4a). Where a random batch holds only a few
members of each cluster (40 faces of 10 in a batch of 256: ~6 of each; 10 digits in a batch
of 64: ~6 of each), a sample's k nearest in the batch are mostly strangers. Ordering the epoch
by the pseudo-labels the boundary filter already uses, in runs of ``group`` members of one
cluster, gives each sample ``group - 1`` likely neighbours in its batch while every sample is
still seen once an epoch (``stage2.group_members``; measured level on ORL and left off:
docs/results.md, "Neighbours of one pseudo-cluster")."""
from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["grouped_permutation"]


def grouped_permutation(labels: Tensor, group: int, generator: torch.Generator | None = None) -> Tensor:
    """A permutation of ``range(len(labels))`` made of runs of up to ``group`` indices that
    share a label: each cluster's members are shuffled and cut into runs of ``group`` (its last
    run shorter), and the runs are shuffled. ``group`` 1 is a plain shuffle."""
    if group < 1:
        raise ValueError(f"group must be at least 1, got {group}")
    labels = labels.detach().cpu().long()
    n = labels.numel()
    if group == 1 or n == 0:
        return torch.randperm(n, generator=generator)
    shuffled = torch.randperm(n, generator=generator)
    # a stable sort by label keeps the shuffled order inside each cluster
    members = shuffled[torch.sort(labels[shuffled], stable=True).indices]
    sizes = torch.bincount(labels).tolist()
    runs = [run for cluster in members.split([s for s in sizes if s]) for run in cluster.split(group)]
    order = torch.randperm(len(runs), generator=generator).tolist()
    return torch.cat([runs[i] for i in order])
