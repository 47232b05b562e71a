"""The trainer on vectors (embeddings a user has, or an encoder's features).

The trainer's loop is unchanged; two pieces stand in for the image ones:

- the ``mlp`` backbone (conr/models/mlp.py, D -> 512 -> 128 with BatchNorm + ReLU) takes the
  place of the CNN, under the same BYOL projector / predictor and CoNR stage 2;
- :class:`NeighbourViews` is the "augmentation": a view of a vector is one of its ``knn``
  nearest neighbours in the input space, drawn at random (itself included), plus mild
  Gaussian noise and feature dropout. Embeddings have no crops or colour jitter; their
  nearest neighbours mostly share the class (the premise of SCAN's and TEMI's
  nearest-neighbour positives), so two draws make a positive pair that is more than the
  same point twice, and the noise keeps the network from memorising the N points.
  CoNR's ConAff neighbourhoods and boundary filter then work on the network's features
  in the batch exactly as for images.

:class:`VectorTrainer` is the Trainer with those views and an evaluation input without
image transforms (standardised vectors).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from ..config import AugmentSection
from ..data.vectors import VectorData
from ..encoders.directions import feature_directions
from ..ops.knn import knn_table
from .trainer import Trainer

__all__ = ["ViewConfig", "NeighbourViews", "VectorTrainer", "neighbour_space"]


@dataclass
class ViewConfig:
    knn: int = AugmentSection.view_neighbors  # a view is one of the k nearest rows in the input space (itself
                                              # included); the trainer takes the config's augment.view_neighbors
    geometry: str = "cosine"  # where the neighbours are searched: cosine (unit rows; non-negative ones
                              # square-rooted first) or standardised (the network's input)
    noise: float = 0.1     # Gaussian noise, in units of each feature's standard deviation
    dropout: float = 0.1   # each feature zeroed with this probability (the rest scaled by 1 / (1 - p))


def neighbour_space(vectors: Tensor, geometry: str, standardised: Tensor) -> Tensor:
    """The rows in which the views' neighbours are searched. ``cosine``: the encoder's
    directions (:func:`conr.encoders.directions.feature_directions`: a square root where
    every value is non-negative, then unit rows; the final stage reads the rows as they come:
    :func:`conr.cluster.stage.input_rows`). ``standardised``: the network's own input."""
    if geometry == "standardised":
        return standardised
    return feature_directions(vectors)


class NeighbourViews:
    """Callable like BatchAugment: a batch of raw vectors [b, D] (rows of ``vectors``) ->
    standardised views [b, D]. Each row's ``knn`` nearest rows are found once, for all
    rows (:func:`conr.ops.knn.knn_table`, the first time a batch names its rows:
    :meth:`for_rows`); a batch that does not name them is searched on its own (the two
    views of a batch share one search: the trainer passes the same tensor twice)."""

    def __init__(self, vectors: Tensor, mean, std, cfg: ViewConfig | None = None, chunk: int = 4096, seed: int = 0):
        self.cfg = cfg or ViewConfig()
        self.mean = torch.as_tensor(mean, dtype=torch.float32, device=vectors.device)
        self.std = torch.as_tensor(std, dtype=torch.float32, device=vectors.device)
        self.raw = vectors
        self.z = (vectors.float() - self.mean) / self.std          # what the network sees
        self.sq = (self.z * self.z).sum(1)
        self.k = max(1, min(self.cfg.knn, len(vectors)))
        self.chunk, self.seed = chunk, seed
        self._table: Tensor | None = None
        self._last: tuple[Tensor, Tensor] | None = None

    def table(self) -> Tensor:
        """[N, k] neighbours of every row (made once), in :func:`neighbour_space`."""
        if self._table is None:
            self._table = knn_table(neighbour_space(self.raw, self.cfg.geometry, self.z), self.k, self.chunk,
                                    seed=self.seed)
        return self._table

    @torch.no_grad()
    def neighbours(self, x: Tensor) -> Tensor:
        """[b, k] indices of the k nearest rows (Euclidean, standardised features) of each x."""
        q = (x.float() - self.mean) / self.std
        best_s, best_i = None, None
        for start in range(0, len(self.z), self.chunk):  # bounded memory for large N
            score = 2 * q @ self.z[start:start + self.chunk].t() - self.sq[start:start + self.chunk]
            s, i = score.topk(min(self.k, score.shape[1]), dim=1)
            i = i + start
            if best_s is not None:
                s, pick = torch.cat([best_s, s], 1).topk(self.k, dim=1)
                i = torch.cat([best_i, i], 1).gather(1, pick)
            best_s, best_i = s, i
        return best_i

    def for_rows(self, rows: Tensor):
        """The views of a batch that holds the rows ``rows`` of the data (their neighbours
        read off the table): a callable like the augmenter itself."""
        nn_idx = self.table()[rows.to(self.z.device)]
        return lambda x, generator=None: self.draw(nn_idx, generator)

    @torch.no_grad()
    def __call__(self, x: Tensor, generator=None) -> Tensor:
        if self._last is None or self._last[0] is not x:
            self._last = (x, self.neighbours(x))
        return self.draw(self._last[1], generator)

    @torch.no_grad()
    def draw(self, nn_idx: Tensor, generator=None) -> Tensor:
        """One view of each row: a random one of its neighbours ``nn_idx`` [b, k], with noise and dropout."""
        b, dev = nn_idx.shape[0], nn_idx.device
        pick = torch.randint(nn_idx.shape[1], (b,), generator=generator, device=dev)
        v = self.z[nn_idx[torch.arange(b, device=dev), pick]]
        c = self.cfg
        if c.noise > 0:
            v = v + c.noise * torch.randn(v.shape, generator=generator, device=dev)
        if c.dropout > 0:
            keep = torch.rand(v.shape, generator=generator, device=dev) >= c.dropout
            v = v * keep / (1.0 - c.dropout)
        return v


class VectorTrainer(Trainer):
    """The Trainer on a VectorData: neighbour views instead of image augmentation, and
    features of standardised vectors instead of the image test transform."""

    def __init__(self, cfg, data: VectorData, views: ViewConfig | None = None, **kwargs):
        self.views = views or ViewConfig(knn=cfg.augment.view_neighbors)
        super().__init__(cfg, data=data, **kwargs)

    def augmenter(self, epoch: int) -> NeighbourViews:
        if "views" not in self._aug_cache:
            self._aug_cache["views"] = NeighbourViews(self.images, self.mean, self.std, self.views,
                                                      seed=self.cfg.train.seed)
        return self._aug_cache["views"]

    def step(self, x: Tensor, indices: Tensor, epoch: int, iteration: int, generator: torch.Generator,
             keep: float = 1.0, augment=None):
        """The Trainer's step, with the views of the rows ``indices`` read off the neighbour table."""
        views = augment or self.augmenter(epoch)
        return super().step(x, indices, epoch, iteration, generator, keep,
                            augment=views.for_rows(indices) if isinstance(views, NeighbourViews) else views)

    def eval_input(self, images: Tensor) -> Tensor:
        """Vectors -> the network's evaluation input: standardised with the training's mean and std."""
        mean = torch.as_tensor(self.mean, dtype=torch.float32, device=images.device)
        std = torch.as_tensor(self.std, dtype=torch.float32, device=images.device)
        return (images.float() - mean) / std

    @torch.no_grad()
    def features_of(self, images: Tensor) -> Tensor:
        was_training = self.method.training
        self.method.eval()
        out = []
        for chunk in images.split(self.cfg.cluster.eval_batch_size):
            x = self.eval_input(chunk.to(self.device))
            with self._autocast():
                out.append(self.method.features(x).float())
        self.method.train(was_training)
        return F.normalize(torch.cat(out), dim=1)
