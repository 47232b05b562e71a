"""The final stage and the stage-2 seed of a training run: what the trainer calls.

:func:`build_final_stage` is the one place a run's :class:`~conr.cluster.final.FinalStage`
is made (before training, where a time budget times its input candidates, or by the
trainer when it needs one). :func:`final_partition` runs the candidates on the run's
features and its input, then (``cluster.self_label_epochs``) the self-labelling stage from
the chosen candidate, and lets the same rule choose again with the self-labelled partition
among the candidates. :func:`seed_partition` is the same choice, without self-labelling,
where CoNR's stage 2 starts. Both return their results; the trainer keeps them.
"""
from __future__ import annotations

import time
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor

from ..encoders.directions import feature_directions
from ..ops.metrics import evaluate
from .final import Candidate, FinalStage, consensus_candidate
from .kmeans import KMeansResult
from .manifold import pixel_vectors
from .partition import Partition, cluster_means, labels_result
from .policy import (CHOICE_RULE, CONSENSUS, FEATURES_VOTE, MAX_INPUT_ROWS, WARMUP, WARMUP_WEIGHTS, consensus_allowance, seed_rule,
                     warmup_voters)
from .self_label import margin_confidence, self_label

__all__ = ["build_final_stage", "input_rows", "final_stage_for", "features_consensus", "SeedChoice", "seed_partition", "carry_partition",
           "final_partition"]


def input_rows(data, seed: int = 0, geometry: str = "auto") -> np.ndarray:
    """The input's rows as the final stage clusters them: an ImageData's pixels in [0, 1], a
    VectorData's vectors (a user's, or an encoder's features on the photo path) as they come;
    any of them through PCA where wide (:func:`~conr.cluster.manifold.pixel_vectors`).
    ``geometry`` (``cluster.input_geometry``): ``auto`` / ``as_given`` as above, or
    ``directions``: compared as the views' neighbours are searched
    (:func:`~conr.encoders.directions.feature_directions`: square root, unit rows).

    An encoder's features were read by direction from 2026-12-03 (the encoder's own UMAP + GMM
    is better that way: 5 seeds, ACC as given -> directions, COIL-20 0.928 -> 0.957, ORL 0.736
    -> 0.796, ``benchmarks/encoder_input.py``) to 2026-12-05, when whole runs of the encoder
    path read them as they come (3 seeds; docs/results.md, "The encoder's features as they
    come, in whole runs"): photos10x200 0.484 -> 0.539 and photos6x500 0.567 -> 0.615 (held
    back; both had been under the encoder's own UMAP + GMM, 0.521 and 0.602), CIFAR-10 0.496 ->
    0.519, COIL-20 0.970 -> 0.968, ORL 0.802 -> 0.775. On the same trained features
    the reading lifts the joint candidate (``benchmarks/input_geometry.py``); why is not
    settled (docs/final-stage.md, "The input's geometry on the same features")."""
    if getattr(data, "kind", "images") == "vectors":
        rows = data.images.cpu().numpy()
        if geometry == "directions":
            rows = feature_directions(rows)
        return pixel_vectors(rows, seed=seed, scale=False)
    return pixel_vectors(data.images.cpu().numpy(), seed=seed)


def build_final_stage(data, cluster_cfg, seed: int, log=None, minutes: float | None = None) -> FinalStage:
    """The final stage of a run on ``data`` (ImageData or VectorData) with the settings of
    ``cluster_cfg`` (a config's ``cluster`` section): its input is a candidate where
    ``final_pixels`` is on and the rows are in memory and at most
    :data:`~conr.cluster.policy.MAX_INPUT_ROWS`; ``minutes``: a time budget, which bounds the
    layouts of a consensus (:func:`~conr.cluster.policy.consensus_allowance`)."""
    c = cluster_cfg
    inputs = None
    if c.final_pixels and not getattr(data, "streamed", False) and len(data) <= MAX_INPUT_ROWS:
        inputs = input_rows(data, seed, c.input_geometry)
    name = getattr(data, "representation", "pixels") if getattr(data, "kind", "images") == "vectors" else "pixels"
    return FinalStage(inputs, c.n_clusters, seed=seed, rule=c.final_rule, log=log, consensus_runs=c.consensus_runs,
                      consensus_seconds=consensus_allowance(minutes), input_name=name, mixture_starts=c.mixture_starts,
                      joint_graph=c.joint_graph, warmup_share=WARMUP_WEIGHTS[c.warmup_weight])


def final_stage_for(trainer) -> FinalStage:
    """The trainer's FinalStage (built once: the input's candidates are made once a run), for
    its current K and rule."""
    stage = trainer.final_stage
    c = trainer.cfg.cluster
    if (stage is None or (stage.inputs is not None) != c.final_pixels or stage.rule != c.final_rule
            or stage.mixture_starts != c.mixture_starts or stage.joint_graph != c.joint_graph):
        stage = build_final_stage(trainer.data, c, trainer.cfg.train.seed, log=trainer.log)
    elif stage.n_clusters != c.n_clusters:
        stage = stage.with_k(c.n_clusters)
    stage.warmup_share = WARMUP_WEIGHTS[c.warmup_weight]   # a weight of the vote only: nothing made depends on it
    trainer.final_stage = stage
    return stage


def candidate_table(data, cands: list[Candidate], chosen: str) -> list[dict]:
    """The candidate table; with ground truth, each row also carries its scores (for
    reports and benchmarks; the rule never sees them)."""
    rows = []
    for c in cands:
        row = c.row()
        if data.n_labelled:
            row.update({f"true_{k}": round(float(v), 4)
                        for k, v in evaluate(data.labels, torch.as_tensor(c.labels)).items()})
        row["chosen"] = c.name == chosen
        rows.append(row)
    return rows


def features_consensus(cands: list[Candidate], n_clusters: int, seed: int = 0) -> Candidate:
    """``consensus/features``: the weighted vote (:func:`~conr.cluster.final.consensus_candidate`) of
    ``cands`` (the candidates on the features), the seed of ``cluster.seed_rule=features_consensus``;
    the one candidate itself where there is only one."""
    if len(cands) == 1:
        return cands[0]
    made = consensus_candidate(cands, n_clusters, seed)
    return Candidate("consensus", "features", made.labels, made.seconds)


class SeedChoice(NamedTuple):
    """Stage 2's seed: the chosen partition (``result``), the chosen candidate's name
    (``source``), the candidate table it was chosen from (``table``) and every candidate's
    labels by name (``labels``: kept with the run's partition, so that seeds can be replayed)."""
    result: KMeansResult
    source: str
    table: list[dict]
    labels: dict


def seed_partition(trainer, feats: Tensor, carried: Tensor | None = None,
                   kmeans_labels: Tensor | None = None) -> SeedChoice:
    """Stage 2's first pseudo-labels: the final stage's choice (by the run's
    :func:`~conr.cluster.policy.seed_rule`: one candidate, or under ``features_consensus`` the vote of
    the candidates on the features, :func:`features_consensus`) on the warm-up's features
    (k-means of them given as one candidate: ``kmeans_labels`` where the caller has just made
    it with the run's settings); centres are the cluster means of the unit features. With
    ``carried`` (a refresh inside stage 2, ``cluster.stage2_refreshes``), the carried
    partition is the given candidate instead of k-means. Returns a :class:`SeedChoice`."""
    c = trainer.cfg.cluster
    from .kmeans import kmeans

    if carried is None:
        if kmeans_labels is None:
            kmeans_labels = kmeans(feats, c.n_clusters, metric=c.metric, max_iter=c.max_iter, tol=c.tol,
                                   n_init=c.n_init, seed=trainer.cfg.train.seed).labels
        given = {"kmeans": kmeans_labels.cpu().numpy()}
    else:
        given = {"seeded_kmeans": carried.cpu().numpy()}
    rule = seed_rule(c.final_rule, c.seed_rule)
    best, cands = final_stage_for(trainer).run(feats.cpu().numpy(), given=given,
                                               rule=CHOICE_RULE if rule == FEATURES_VOTE else rule)
    if rule == FEATURES_VOTE:   # the vote of the features' own candidates, made beside the others
        best = features_consensus([cand for cand in cands if cand.representation == "features"], c.n_clusters,
                                  trainer.cfg.train.seed)
        cands = cands + [best]
    table = candidate_table(trainer.data, cands, best.name)
    return SeedChoice(labels_result(feats, torch.as_tensor(best.labels), c.n_clusters), best.name, table,
                      {cand.name: torch.as_tensor(cand.labels) for cand in cands})


def carry_partition(feats: Tensor, labels: Tensor, n_clusters: int, iters: int = 1,
                    metric: str = "cosine") -> KMeansResult:
    """The seeded partition carried on as the features improve: its centres move to the
    cluster means of the current features, then ``iters`` Lloyd iterations from there
    let the labels follow the features (0: labels kept, only the centres move). A step
    an epoch, not k-means to convergence: the training pulls the features towards the
    partition while the partition moves towards the features (docs/final-stage.md)."""
    carried = labels_result(feats, labels, n_clusters)
    if iters <= 0:
        return carried
    from .kmeans import kmeans

    moved = kmeans(feats, n_clusters, metric=metric, max_iter=iters, init=carried.centers)
    return labels_result(feats, moved.labels, n_clusters)


def final_partition(trainer, feats: Tensor) -> Partition:
    """The run's partition: the final stage's choice, then self-labelling from it. Under the
    ``consensus`` rule the warm-up's candidates on its features vote too (``cluster.warmup_votes``)."""
    c = trainer.cfg.cluster
    stage = final_stage_for(trainer)
    x = feats.cpu().float().numpy()
    # the training's last pseudo-labels: k-means of the features, or the stage-2 seed carried on by it
    name = "seeded_kmeans" if trainer.stage2_seeded else "kmeans"
    warm = [Candidate(algorithm, WARMUP, np.asarray(labels, dtype=np.int64))   # the seed's error is not theirs
            for algorithm, labels in warmup_voters(trainer.seed_candidate_labels, stage.rule, c.warmup_votes).items()]
    best, cands = stage.run(x, given={name: trainer.pseudo_labels.cpu().numpy()}, extra=warm)
    notes = []
    first_choice = best.name  # the rule's choice before self-labelling
    net = trainer.method.feature_network() if c.self_label_epochs > 0 else None
    if c.self_label_epochs > 0 and net is None:
        notes.append(f"self-labelling skipped: method {trainer.cfg.method} exposes no feature network")
    if net is not None and not getattr(trainer.data, "streamed", False):
        start = time.perf_counter()
        rep = x if best.representation == "features" or best.name == CONSENSUS else stage.inputs
        conf = best.confidence if best.confidence is not None else margin_confidence(rep, best.labels, c.n_clusters)
        t = trainer.cfg.train
        try:
            labels, _ = self_label(net, trainer.images, best.labels, conf, c.n_clusters, trainer.augmenter(1),
                                   trainer.eval_input, epochs=c.self_label_epochs,
                                   batch_size=min(t.batch_size, 256), lr=0.05, seed=t.seed, device=trainer.device,
                                   flip_average=c.flip_average, channels_last=t.channels_last, log=trainer.log)
            sl = Candidate("self_label", best.name, labels, time.perf_counter() - start)
            best, cands = stage.rescore(cands + [sl])
        except FloatingPointError as exc:
            notes.append(str(exc))
    labels = torch.as_tensor(best.labels, dtype=torch.long)
    assign = "nearest_center" if best.name in ("kmeans/features", "seeded_kmeans/features") else "nearest_image"
    return Partition(labels=labels, centers=cluster_means(feats, labels, c.n_clusters), source=best.name,
                     assign=assign, rule=c.final_rule, candidates=candidate_table(trainer.data, cands, best.name),
                     notes=notes, first_choice=first_choice, seed_candidates=list(trainer.seed_candidates),
                     candidate_labels={c.name: torch.as_tensor(c.labels) for c in cands},
                     seed_candidate_labels=dict(trainer.seed_candidate_labels))
