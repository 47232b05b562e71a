"""The trainer's clustering: the per-epoch step (k-means on the whole dataset's features,
or stage 2's seed from the final stage) and the final clustering a run reports. Both read
and set the trainer's public state (pseudo_labels, centers, cluster_epoch, last_features,
partition)."""
from __future__ import annotations

import time

import torch
from torch import Tensor

from ..cluster.kmeans import kmeans
from ..cluster.policy import refresh_epochs
from .distributed import broadcast_object, sync_buffers
from ..errors import NonFiniteLossError
from ..ops.metrics import evaluate
from . import checkpoint

__all__ = ["cluster_step", "final_clustering"]


@torch.no_grad()
def cluster_step(trainer) -> dict:
    """k-means on the whole dataset's features -> pseudo-labels, centres, scores.

    With several processes: buffers are made identical, features are extracted
    in shards and all-gathered, k-means runs on rank 0 and its labels, centres
    and scores are broadcast, so every rank holds the same pseudo-labels."""
    c = trainer.cfg.cluster
    start = time.perf_counter()
    sync_buffers(trainer.method)
    feats = trainer.extract_features()
    if not torch.isfinite(feats).all():
        raise NonFiniteLossError(f"features became NaN/inf at epoch {trainer.epoch}; the model diverged "
                                 f"(lower train.lr); the last good checkpoint is kept")
    payload = None
    if trainer.centers is not None and trainer.centers.shape[0] != c.n_clusters:
        trainer.stage2_seeded = False  # K changed (estimated after stage 1): seed again with the new K
    # whether the epoch after the current one starts stage 2 of a two-stage method (not while K is provisional:
    # it is estimated after stage 1, and the seed is made with it)
    seeding = (c.stage2_seed == "final" and not trainer.stage2_seeded and not trainer.k_provisional
               and trainer.method.in_stage2(trainer.epoch + 1))
    carrying = c.stage2_seed == "final" and trainer.stage2_seeded and trainer.centers is not None
    refreshing = carrying and trainer.epoch in refresh_epochs(trainer.method.stage2_start() or 0,
                                                              trainer.cfg.train.epochs, c.stage2_refreshes)
    signal = not seeding and not carrying and _warmup_signal_due(trainer)
    if trainer.dist.is_main:
        if seeding:  # stage 2 starts from the best label-free partition there is (conr/cluster/final.py)
            from ..cluster.stage import seed_partition

            seed = seed_partition(trainer, feats)
            result, source, trainer.seed_candidates, trainer.seed_candidate_labels = seed
        elif carrying:
            from ..cluster.stage import carry_partition, seed_partition

            result = carry_partition(feats, trainer.pseudo_labels, c.n_clusters, c.stage2_update_iters, c.metric)
            if refreshing:  # the final stage chooses afresh, the carried partition among its candidates
                result, source, _, _ = seed_partition(trainer, feats, carried=result.labels)
        else:
            result = kmeans(feats, c.n_clusters, metric=c.metric, max_iter=c.max_iter, tol=c.tol,
                            n_init=c.n_init, seed=trainer.cfg.train.seed)
        warmup = _warmup_signal(trainer, result.labels) if signal else {}
        if warmup.get("warmup_ended") and c.stage2_seed == "final" and not trainer.stage2_seeded \
                and not trainer.k_provisional:  # stage 2 starts after this epoch: seeded now, as at a planned start
            from ..cluster.stage import seed_partition

            seeding = True
            seed = seed_partition(trainer, feats, kmeans_labels=result.labels)
            result, source, trainer.seed_candidates, trainer.seed_candidate_labels = seed
        record = {"kmeans_iters": result.n_iter, "cluster_seconds": time.perf_counter() - start,
                  "feature_std": float(feats.std(dim=0).mean()), **warmup}  # ~1/sqrt(D) healthy, ~0 collapsed
        if seeding:
            record["stage2_seed"] = source
        elif refreshing:
            record["stage2_refresh"] = source
        data = trainer.data
        if data.n_labelled:  # scored over the labelled images only (STL-10: its 13k of 113k)
            record.update(evaluate(data.labels, result.labels.cpu()), scored=data.n_labelled)
        payload = (result.labels, result.centers, record)
    if trainer.dist.enabled:
        if payload is not None:
            payload = (payload[0].cpu(), payload[1].cpu(), payload[2])
        payload = broadcast_object(payload)
    labels, centers, record = payload
    if record.get("warmup_ended"):  # every process moves stage 2 where rank 0's signal ended the warm-up
        from .warmup_end import move_stage2

        move_stage2(trainer, trainer.epoch)
        trainer.warmup_ended = trainer.epoch
    trainer.pseudo_labels, trainer.centers = labels.to(trainer.device), centers.to(trainer.device)
    trainer.cluster_epoch = trainer.epoch
    trainer.stage2_seeded = trainer.stage2_seeded or "stage2_seed" in record  # rank 0's seed, on every process
    trainer.last_features = feats
    return record


def _warmup_signal_due(trainer) -> bool:
    """Whether this clustering step measures the warm-up's signal (``stage2.warmup_end:
    signal``): a two-stage method inside its warm-up (the next epoch too), after at least one
    epoch, with K known, the warm-up not ended yet, and the input's UMAP layout at hand (the
    final stage's input candidates, made before training)."""
    stage = trainer.final_stage
    return (trainer.cfg.stage2.warmup_end == "signal" and hasattr(trainer.method, "in_stage2")
            and trainer.epoch > 0 and not trainer.method.in_stage2(trainer.epoch + 1)
            and not trainer.k_provisional and trainer.warmup_ended is None
            and stage is not None and stage.inputs is not None and stage.n_clusters == trainer.cfg.cluster.n_clusters)


def _warmup_signal(trainer, labels: Tensor) -> dict:
    """The signal of this stage-1 step (conr/engine/warmup_end.py), appended to the run's
    values; ``warmup_ended`` where the warm-up ends after this epoch."""
    from .warmup_end import away_value, should_end

    _, embedding = trainer.final_stage.input_candidates()
    if embedding is None:
        return {}
    value = away_value(embedding, labels.cpu().numpy(), seed=trainer.cfg.train.seed)
    trainer.warmup_values.append(value)
    ended = should_end(trainer.warmup_values)
    if ended:
        trainer.log(f"epoch {trainer.epoch}: the warm-up's features fell away from the "
                    f"{trainer.final_stage.input_name}' layout (silhouette {value:.3f}, best "
                    f"{max(trainer.warmup_values[:-1]):.3f}): stage 2 starts now (stage2.warmup_end=signal; "
                    f"stage2.start_epoch={trainer.epoch} repeats it)")
    return {"warmup_away": round(value, 4), **({"warmup_ended": True} if ended else {})}


def final_clustering(trainer, feats: Tensor) -> tuple[Tensor, Tensor]:
    """The labels and centres a run reports, kept as ``trainer.partition`` and in the
    checkpoint: the last k-means pseudo-labels (``cluster.final: kmeans``), a spectral
    clustering of the features' k-NN graph (``spectral``, conr/cluster/spectral.py), or the
    final stage's choice among candidates on the features and the pixels, then the
    self-labelling stage (``auto``, conr/cluster/)."""
    from ..cluster.partition import Partition

    final = trainer.cfg.cluster.final
    main = trainer.dist.is_main
    partition = Partition(labels=trainer.pseudo_labels.cpu(), centers=trainer.centers.cpu(), source="kmeans")
    if final == "spectral" and main:
        from ..cluster.spectral import spectral_clustering

        result = spectral_clustering(feats, trainer.cfg.cluster.n_clusters, seed=trainer.cfg.train.seed)
        partition = Partition(labels=result.labels, centers=result.centers, source="spectral/features",
                              assign="nearest_image")
    elif final == "auto" and main:
        from ..cluster.stage import final_partition

        partition = final_partition(trainer, feats)
    trainer.partition = partition
    if final != "kmeans" and main:
        trainer.final_arrays = (partition.labels, partition.centers, feats.cpu().float())
        checkpoint.rewrite(trainer)
    return partition.labels, partition.centers
