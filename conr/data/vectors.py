"""Vectors (embeddings a user already has) held the way the trainer holds images.

:class:`VectorData` answers the questions :class:`conr.engine.Trainer` asks of an
:class:`~conr.data.base.ImageData` (``images``, ``labels``, ``channels``, ``mean_std``,
``subset``, ...): ``images`` is the float32 [N, D] table and ``channels`` its width D,
which the ``mlp`` backbone takes as its input width.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import torch
from torch import Tensor

from .base import LabelledRows

__all__ = ["VectorData"]


@dataclass
class VectorData(LabelledRows):
    """N vectors of width D (float32) and their labels (-1 where unknown)."""
    images: Tensor                       # float32 [N, D]: named as ImageData's so the trainer reads it unchanged
    labels: Tensor                       # int64 [N]
    classes: list[str] = field(default_factory=list)
    paths: list[str] | None = None
    name: str = "vectors"
    normalization: str = "auto"          # per-feature mean / std, measured
    skipped: list[tuple[str, str]] = field(default_factory=list)
    kind = "vectors"

    def __post_init__(self):
        self.images = torch.as_tensor(self.images)
        if self.images.dim() != 2 or not self.images.is_floating_point():
            raise ValueError(f"vectors must be a float [N, D] table; got {self.images.dtype} "
                             f"{tuple(self.images.shape)}")
        self.images = self.images.float().contiguous()
        self._check_labels("vectors")

    @property
    def channels(self) -> int:
        """The vector width D (the ``mlp`` backbone's input width)."""
        return self.images.shape[1]

    @property
    def n_features(self) -> int:
        return self.images.shape[1]

    def mean_std(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """Per-feature mean and standard deviation (a constant feature gets std 1)."""
        x = self.images.double()
        std = x.std(dim=0) if len(self) > 1 else torch.ones(x.shape[1], dtype=x.dtype)
        std = torch.where(std > 1e-12, std, torch.ones_like(std))
        return tuple(x.mean(dim=0).tolist()), tuple(std.tolist())

    def subset(self, index: Sequence[int] | Tensor) -> "VectorData":
        index = torch.as_tensor(index, dtype=torch.long)
        return VectorData(images=self.images[index], labels=self.labels[index], classes=list(self.classes),
                          paths=[self.paths[i] for i in index.tolist()] if self.paths is not None else None,
                          name=self.name, skipped=list(self.skipped))
