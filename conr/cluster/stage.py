"""The final stage and the stage-2 seed of a training run: what the trainer calls.

:func:`final_partition` runs the candidates of :mod:`conr.cluster.final` on the
run's features and its images' pixels, then (``cluster.self_label_epochs``) the
self-labelling stage from the chosen candidate, and lets the same rule choose
again with the self-labelled partition among the candidates. :func:`seed_partition`
is the same choice, without self-labelling, where CoNR's stage 2 starts.
"""
from __future__ import annotations

import time

import torch
from torch import Tensor

from .kmeans import KMeansResult
from ..ops.metrics import evaluate
from .final import Candidate, FinalStage
from .manifold import pixel_vectors
from .partition import Partition, cluster_means, labels_result
from .self_label import margin_confidence, self_label

__all__ = ["final_stage_for", "seed_partition", "carry_partition", "final_partition", "MAX_PIXEL_IMAGES"]

MAX_PIXEL_IMAGES = 200_000   # beyond this the pixel candidates are skipped (memory and UMAP time)


def final_stage_for(trainer) -> FinalStage:
    """The trainer's FinalStage (built once: the pixel candidates are computed once a run)."""
    stage = trainer.final_stage
    c = trainer.cfg.cluster
    if stage is None or stage.n_clusters != c.n_clusters or stage.rule != c.final_rule or \
            (stage.pixels is not None) != c.final_pixels:
        pixels = stage.pixels if stage is not None and c.final_pixels else None
        if pixels is None and c.final_pixels and not getattr(trainer.data, "streamed", False) and \
                len(trainer.data) <= MAX_PIXEL_IMAGES:
            pixels = pixel_vectors(trainer.data.images.cpu().numpy(), seed=trainer.cfg.train.seed)
        stage = FinalStage(pixels, c.n_clusters, seed=trainer.cfg.train.seed, rule=c.final_rule, log=trainer.log,
                           consensus_runs=c.consensus_runs)
        trainer.final_stage = stage
    return stage


def _with_truth(trainer, cands: list[Candidate]) -> list[dict]:
    """The candidate table; with ground truth, each row also carries its scores (for
    reports and benchmarks; the rule never sees them)."""
    rows = []
    data = trainer.data
    for c in cands:
        row = c.row()
        if data.n_labelled:
            row.update({f"true_{k}": round(float(v), 4)
                        for k, v in evaluate(data.labels, torch.as_tensor(c.labels)).items()})
        rows.append(row)
    return rows


def seed_partition(trainer, feats: Tensor) -> tuple[KMeansResult, str]:
    """Stage 2's first pseudo-labels: the final stage's choice on the warm-up's features
    (k-means of them given as one candidate); centres are the cluster means of the unit
    features. Returns the result and the chosen candidate's name."""
    c = trainer.cfg.cluster
    from .kmeans import kmeans

    km = kmeans(feats, c.n_clusters, metric=c.metric, max_iter=c.max_iter, tol=c.tol, n_init=c.n_init,
                seed=trainer.cfg.train.seed)
    best, cands = final_stage_for(trainer).run(feats.cpu().numpy(), given={"kmeans": km.labels.cpu().numpy()})
    trainer.seed_candidates = _with_truth(trainer, cands)
    for row in trainer.seed_candidates:
        row["chosen"] = row["name"] == best.name
    return labels_result(feats, torch.as_tensor(best.labels), c.n_clusters), best.name


def carry_partition(feats: Tensor, labels: Tensor, n_clusters: int, iters: int = 1,
                    metric: str = "cosine") -> KMeansResult:
    """The seeded partition carried on as the features improve: its centres move to the
    cluster means of the current features, then ``iters`` Lloyd iterations from there
    let the labels follow the features (0: labels kept, only the centres move). A step
    an epoch, not k-means to convergence: the training pulls the features towards the
    partition while the partition moves towards the features. Measured on digits (seed
    0, default budget, a stage-2 seed that had merged two classes: ACC 0.889): with the
    labels kept the run ended at ACC / NMI 0.890 / 0.925, with one iteration an epoch
    at 0.959 / 0.942; ORL with one: 0.663 / 0.839 from a seed of 0.660 / 0.835."""
    carried = labels_result(feats, labels, n_clusters)
    if iters <= 0:
        return carried
    from .kmeans import kmeans

    moved = kmeans(feats, n_clusters, metric=metric, max_iter=iters, init=carried.centers)
    return labels_result(feats, moved.labels, n_clusters)


def final_partition(trainer, feats: Tensor) -> Partition:
    """The run's partition: the final stage's choice, then self-labelling from it."""
    c = trainer.cfg.cluster
    stage = final_stage_for(trainer)
    x = feats.cpu().float().numpy()
    # the training's last pseudo-labels: k-means of the features, or the stage-2 seed carried on by it
    name = "seeded_kmeans" if trainer.stage2_seeded else "kmeans"
    best, cands = stage.run(x, given={name: trainer.pseudo_labels.cpu().numpy()})
    notes = []
    first_choice = best.name  # the rule's choice before self-labelling
    net = trainer.method.feature_network() if c.self_label_epochs > 0 else None
    if c.self_label_epochs > 0 and net is None:
        notes.append(f"self-labelling skipped: method {trainer.cfg.method} exposes no feature network")
    if net is not None and not getattr(trainer.data, "streamed", False):
        start = time.perf_counter()
        rep = x if best.representation == "features" else stage.pixels
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
    rows = _with_truth(trainer, cands)
    for row in rows:
        row["chosen"] = row["name"] == best.name
    labels = torch.as_tensor(best.labels, dtype=torch.long)
    assign = "nearest_center" if best.name in ("kmeans/features", "seeded_kmeans/features") else "nearest_image"
    return Partition(labels=labels, centers=cluster_means(feats, labels, c.n_clusters), source=best.name,
                     assign=assign, rule=c.final_rule, candidates=rows, notes=notes, first_choice=first_choice,
                     seed_candidates=list(getattr(trainer, "seed_candidates", None) or []))
