"""The schedules of a run, pure functions of the step or the epoch: the learning rate
(warm-up, then a cosine) and the boundary filter's keep fraction."""
from __future__ import annotations

import math

from ..ops.boundary import relaxed_fraction

__all__ = ["LR_SCHEDULES", "lr_at", "keep_fraction"]

LR_SCHEDULES = ("official_cosine", "cosine_to_zero")


def lr_at(iteration: int, total: int, warmup: int, base: float, schedule: str = "official_cosine") -> float:
    """The learning rate of the 0-based ``iteration`` of a run of ``total`` iterations,
    ``warmup`` of them a linear warm-up, stepped every iteration (spec 2).

    Warm-up: ``base·(iteration + 1)/warmup``. After it, with ``e = (iteration + 1)/iters``
    the epochs done (fractional, the official code's n_iter counted from 1), W the warm-up
    and T all epochs:

    * ``official_cosine`` (default, the official CoNR / ProPos code):
      ``0.5·base·(1 + cos(π·(e − W)/T))``, i.e. ``(iteration + 1 − warmup)/total``: the
      cosine divides by all epochs, not T − W, so it never reaches 0;
    * ``cosine_to_zero``: ``0.5·base·(1 + cos(π·(iteration − warmup)/(total − warmup)))``,
      0 at the last iteration.
    """
    if warmup > 0 and iteration < warmup:
        return base * (iteration + 1) / warmup
    if schedule == "official_cosine":
        return base * 0.5 * (1.0 + math.cos(math.pi * min(1.0, (iteration + 1 - warmup) / max(1, total))))
    if schedule == "cosine_to_zero":
        span = max(1, total - warmup)
        return base * 0.5 * (1.0 + math.cos(math.pi * min(1.0, (iteration - warmup) / span)))
    raise ValueError(f"unknown LR schedule {schedule!r}; choose one of {', '.join(LR_SCHEDULES)} "
                     f"(config key train.lr_schedule)")


def keep_fraction(stage2, epoch: int) -> float:
    """The share of each cluster the boundary filter keeps at ``epoch`` (``stage2``: the
    config's stage2 section): 1 without the filter, fr0 without relaxation, else relaxed."""
    if not stage2.boundary_filter:
        return 1.0
    if not stage2.relax:
        return stage2.fr0
    return relaxed_fraction(epoch, stage2.start_epoch, stage2.t_end, stage2.fr0)
