"""One partition record per run: the labels every output reads.

The report, ``assignments.csv``, ``conr eval``, ``conr plot``, ``conr predict`` and
the estimator's ``labels_`` all read a run's :class:`Partition`, so one run has one
score. It remembers where its labels came from (which candidate of the final stage,
or the per-epoch k-means when a run has no final stage), the centres in feature
space (the mean unit feature of each cluster: boundary ratios and distances are
measured to them), how new images are assigned, and the candidate table the final
stage chose from.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["Partition", "cluster_means", "labels_result", "assign_new", "ASSIGN_RULES"]

ASSIGN_RULES = ("nearest_center", "nearest_image")


def labels_result(features: Tensor, labels: Tensor, n_clusters: int):
    """A partition of ``features`` by ``labels`` in k-means' terms (conr/cluster/kmeans.py's
    KMeansResult): the cluster means of the unit features, and the sum of cosine distances
    to them as the inertia; on ``features``' device."""
    from .kmeans import KMeansResult

    labels = labels.long().to(features.device)
    centers = cluster_means(features, labels, n_clusters).to(features.device)
    x = F.normalize(features.float(), dim=1)
    inertia = float((1.0 - (x * F.normalize(centers, dim=1)[labels]).sum(1)).double().sum())
    return KMeansResult(labels=labels, centers=centers, inertia=inertia, n_iter=0)


def cluster_means(features: Tensor, labels: Tensor, n_clusters: int) -> Tensor:
    """[K, D] mean of each cluster's L2-normalised features (zeros for an empty cluster)."""
    x = F.normalize(features.float().cpu(), dim=1)
    labels = labels.long().cpu()
    counts = torch.bincount(labels, minlength=n_clusters).clamp_min(1).unsqueeze(1).float()
    return torch.zeros(n_clusters, x.shape[1]).index_add_(0, labels, x) / counts


def _labels_by_name(labels: dict) -> dict:
    """{name: labels} as int32 CPU tensors under string names (how a Partition keeps candidates' labels)."""
    return {str(k): torch.as_tensor(v).to(torch.int32).cpu() for k, v in dict(labels).items()}


@dataclass
class Partition:
    """Labels [N] of the training images and their centres [K, D] in feature space.

    ``source``: what made the labels (``kmeans`` for the per-epoch pseudo-labels,
    ``<algorithm>/<representation>`` for a final-stage candidate, ``self_label`` for
    the self-labelling stage). ``assign``: how :meth:`conr.CoNR.predict` places a new
    image: ``nearest_center`` (cosine, as k-means assigns) or ``nearest_image`` (the
    cluster of the nearest training image in feature space: a graph or manifold
    cluster has no single centre). ``candidates``: the final stage's table (one dict
    per candidate: name, criterion value, chosen), empty without a final stage;
    ``candidate_labels``: each of those candidates' labels, by name (a user may take
    another candidate than the rule's; benchmarks replay rules on them);
    ``seed_candidate_labels``: the same for the candidates stage 2's seed was chosen from."""
    labels: Tensor
    centers: Tensor
    source: str = "kmeans"
    assign: str = "nearest_center"
    rule: str | None = None
    candidates: list[dict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    first_choice: str | None = None      # the rule's choice before the self-labelling stage
    seed_candidates: list[dict] = field(default_factory=list)  # the stage-2 seed's table (CoNR)
    candidate_labels: dict = field(default_factory=dict)  # name -> labels [N] of every candidate of the table
    seed_candidate_labels: dict = field(default_factory=dict)  # name -> labels [N] of the seed's candidates

    def __post_init__(self):
        if self.assign not in ASSIGN_RULES:
            raise ValueError(f"assign={self.assign!r}: choose one of {ASSIGN_RULES}")
        self.labels = self.labels.long().cpu()
        self.centers = self.centers.float().cpu()
        self.candidate_labels = _labels_by_name(self.candidate_labels)
        self.seed_candidate_labels = _labels_by_name(self.seed_candidate_labels)

    @property
    def n_clusters(self) -> int:
        return int(self.centers.shape[0])

    @classmethod
    def from_labels(cls, features: Tensor, labels, n_clusters: int, **kwargs) -> "Partition":
        labels = torch.as_tensor(labels).long().cpu()
        return cls(labels=labels, centers=cluster_means(features, labels, n_clusters), **kwargs)

    def to_dict(self) -> dict:
        return {"labels": self.labels, "centers": self.centers, "candidate_labels": dict(self.candidate_labels),
                "seed_candidate_labels": dict(self.seed_candidate_labels), **self.summary()}

    @classmethod
    def from_dict(cls, d: dict) -> "Partition":
        return cls(labels=d["labels"], centers=d["centers"], source=d.get("source", "kmeans"),
                   assign=d.get("assign", "nearest_center"), rule=d.get("rule"),
                   candidates=list(d.get("candidates", [])), notes=list(d.get("notes", [])),
                   first_choice=d.get("first_choice"), seed_candidates=list(d.get("seed_candidates", [])),
                   candidate_labels=dict(d.get("candidate_labels", {})),
                   seed_candidate_labels=dict(d.get("seed_candidate_labels", {})))

    def summary(self) -> dict:
        """What a report or a JSON record shows of it (no tensors)."""
        return {"source": self.source, "assign": self.assign, "rule": self.rule, "n_clusters": self.n_clusters,
                "candidates": list(self.candidates), "notes": list(self.notes), "first_choice": self.first_choice,
                "seed_candidates": list(self.seed_candidates)}


def assign_new(features: Tensor, centers: Tensor, reference: tuple | None = None, metric: str = "cosine") -> Tensor:
    """Clusters of new L2-normalised ``features``: with a ``reference`` (features, labels)
    of the clustered images, the cluster of the nearest one (a graph or manifold
    cluster has no single centre; the clustered images get their own labels back);
    without, the nearest centre (as k-means assigns)."""
    if reference is not None:
        ref_feats, ref_labels = reference
        nearest = torch.cat([(chunk @ ref_feats.float().t()).argmax(1) for chunk in features.float().split(4096)])
        return ref_labels[nearest]
    from .kmeans import assign

    labels, _ = assign(features, centers, metric)
    return labels
