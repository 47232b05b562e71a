"""Ending the warm-up from the data (``stage2.warmup_end: signal``).

On an encoder's features the warm-up (BYOL on neighbour views) can outstay its use: on
COIL-20 k-means of the head's features peaked at ACC 0.85 after 32 epochs and fell to 0.43
by epoch 384, each row's nearest neighbours still pure, and the longer warm-ups of a
bigger budget made worse stage-2 seeds; on ORL the same warm-up improved the features to
its end and on photos it levelled off (docs/results.md, "A ceiling on the vectors'
epochs"). A fixed length cannot serve both, so at every stage-1 clustering step the
trainer measures :func:`away_value`, the silhouette of that step's k-means partition in the
input's UMAP embedding (the final stage's own layout of the input, made before training;
the ``away`` rule's view of a partition made elsewhere), and :func:`should_end` decides:
stage 2 starts after the first step whose value is below :data:`FALL_SHARE` of the best so
far, once that best is above 0 (a partition that fits the input's layout at all). Where it
never falls that far, the warm-up keeps its planned length. On the traces of six folders it
fired on COIL-20 (at epoch 128 of 384, both seeds) and late on the encoder's 8-px digits,
never on ORL, CIFAR-10 or two held-back photo folders (their lowest value against the best
before it: 0.78).

:func:`move_stage2` moves stage 2 (its start and the end of the boundary filter's
relaxation, which keeps its length) in the trainer's config and its method's; the epochs
and the learning-rate schedule stay the run's.
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np

__all__ = ["FALL_SHARE", "away_value", "should_end", "move_stage2"]

FALL_SHARE = 0.5        # the warm-up ends where the value falls below this share of its best so far


def away_value(embedding: np.ndarray, labels: np.ndarray, seed: int = 0) -> float:
    """The silhouette of ``labels`` in ``embedding`` (the input's UMAP layout) as the final
    stage measures a candidate's (:func:`~conr.cluster.final.sampled_silhouette`: at most
    :data:`~conr.cluster.policy.SILHOUETTE_SAMPLES` rows drawn with ``seed``, the same rows at
    every step); 0 where the labels form fewer than two clusters or one for every row."""
    from ..cluster.final import sampled_silhouette

    labels = np.asarray(labels)
    k = len(np.unique(labels))
    return 0.0 if k < 2 or k >= len(labels) else sampled_silhouette(np.asarray(embedding), labels, seed)


def should_end(values: list[float]) -> bool:
    """Whether the warm-up ends after the last of ``values`` (one per stage-1 clustering
    step, oldest first): the last is below :data:`FALL_SHARE` of the best before it, and
    that best is above 0."""
    if len(values) < 2:
        return False
    best = max(values[:-1])
    return best > 0 and values[-1] < FALL_SHARE * best


def move_stage2(trainer, epoch: int) -> None:
    """Stage 2 of ``trainer``'s run starts after ``epoch`` instead: ``stage2.start_epoch``
    set to it and ``stage2.t_end`` moved by as much (the relaxation keeps its length), in
    the trainer's config and in its method's."""
    s = trainer.cfg.stage2
    shift = s.start_epoch - int(epoch)
    stage2 = replace(s, start_epoch=int(epoch), t_end=max(int(epoch) + 1, s.t_end - shift))
    trainer.cfg = replace(trainer.cfg, stage2=stage2)
    trainer.method.cfg = replace(trainer.method.cfg, stage2=stage2)
