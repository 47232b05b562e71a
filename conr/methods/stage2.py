"""What every two-stage method shares after its warm-up (spec 4): the in-batch
neighbourhood (ConAff, Euclidean or the sample alone), the boundary filter with
its relaxed keep fraction, the stage-2 crop scale and LR factors. CoNR mixes it
into BYOL, the ConNR* variants into SimSiam and MoCo v2."""
from __future__ import annotations

import torch
from torch import Tensor

from ..ops.boundary import boundary_ratio, keep_mask
from ..ops.grouped_order import grouped_permutation
from ..errors import ConfigError
from ..losses import full_precision
from ..ops.neighbors import (check_neighborhood_sizes, conaff_neighbors, euclidean_neighbors,
                             same_cluster_neighbors)
from .base import StepContext

__all__ = ["ConNRPlugin", "batch_neighbors"]


def batch_neighbors(feats: Tensor, mode: str, k: int, k1: int, k2: int) -> Tensor:
    """[B, k] neighbourhood of each sample inside the batch: ConAff, Euclidean, or itself only."""
    if mode == "conaff":
        return conaff_neighbors(feats, k, k1, k2)
    if mode == "euclidean":
        return euclidean_neighbors(feats, k)
    if mode == "self":
        return torch.arange(feats.shape[0], device=feats.device).unsqueeze(1)
    raise ValueError(f"unknown neighbourhood {mode!r}; choose conaff, euclidean or self")


def _class_share(neighbors: Tensor, others: Tensor, truth: Tensor) -> Tensor:
    """The share of the ``others`` slots of ``neighbors`` [B, k] that hold a sample of the
    anchor's class (``truth`` [B]): a monitor, never part of the loss."""
    right = (truth[neighbors] == truth.unsqueeze(1)) & others
    return right.sum() / others.sum().clamp_min(1)


class ConNRPlugin:
    """The stage switch of CoNR and of the ConNR* variants (mixed in before the
    baseline class): the baseline loss up to stage2.start_epoch, then a
    neighbourhood loss, with the stage-2 crop scale, LR factors, the boundary
    filter and the batch monitors (kept share, neighbour purity)."""

    @staticmethod
    def validate_stage2(cfg) -> None:
        s = cfg.stage2
        if s.start_epoch >= cfg.train.epochs:
            raise ConfigError(f"stage2.start_epoch={s.start_epoch} leaves no stage-2 epoch in train.epochs="
                              f"{cfg.train.epochs}; lower stage2.start_epoch or use the baseline method")
        if s.neighborhood == "self":
            return
        conaff = s.neighborhood == "conaff"
        try:
            check_neighborhood_sizes(cfg.train.batch_size, k=s.k, k1=s.k1 if conaff else None,
                                     k2=s.k2 if conaff else None)
        except ValueError as exc:
            raise ConfigError(f"stage2: {exc}") from None

    def stage2_start(self) -> int:
        """Stage 2 begins after stage2.start_epoch (epochs are 1-based)."""
        return self.cfg.stage2.start_epoch + 1

    def in_stage2(self, epoch: int) -> bool:
        return epoch >= self.stage2_start()

    def needs_clusters(self, epoch: int) -> bool:
        s = self.cfg.stage2
        return self.in_stage2(epoch) and (s.boundary_filter or s.same_cluster or s.group_members > 1)

    def uses_keep_fraction(self) -> bool:
        return self.cfg.stage2.boundary_filter

    def epoch_order(self, epoch: int, pseudo_labels: Tensor | None, n: int, generator: torch.Generator) -> Tensor:
        """Stage 2 with ``stage2.group_members`` > 1 visits the data in runs of that many
        members of one pseudo-cluster (:func:`grouped_permutation`), so that a batch holds
        neighbours for each sample; otherwise the baseline's order."""
        group = self.cfg.stage2.group_members
        if group > 1 and pseudo_labels is not None and self.in_stage2(epoch):
            return grouped_permutation(pseudo_labels, group, generator)
        return super().epoch_order(epoch, pseudo_labels, n, generator)

    def crop_scale(self, epoch: int):
        return tuple(self.cfg.stage2.crop_scale) if self.in_stage2(epoch) else None

    def lr_multipliers(self, epoch: int) -> dict[str, float]:
        base = super().lr_multipliers(epoch)
        if not self.in_stage2(epoch):
            return base
        s = self.cfg.stage2
        factors = {"online": s.lr_factor, "predictor": s.predictor_lr_factor}
        return {name: factors.get(name, s.lr_factor) for name in base}

    @full_precision
    def stage2_neighbors(self, feats: Tensor, ctx: StepContext) -> tuple[Tensor, Tensor | None]:
        """[B, k] neighbourhoods of the gathered L2-normalised ``feats`` and the
        boundary filter's [B] keep mask (None when the filter is off)."""
        s = self.cfg.stage2
        neighbors = batch_neighbors(feats, s.neighborhood, s.k, s.k1, s.k2)
        keep = labels = None
        if s.boundary_filter or s.same_cluster:
            if ctx.pseudo_labels is None or (s.boundary_filter and ctx.centers is None):
                raise RuntimeError("stage2.boundary_filter and stage2.same_cluster need the pseudo-labels of "
                                   "the last clustering step, but the trainer passed none")
            labels = ctx.gather(ctx.pseudo_labels[ctx.indices])
        if s.boundary_filter:
            ratios = boundary_ratio(feats, ctx.centers, labels, s.ratio_variant)
            keep = keep_mask(ratios, ctx.keep_fraction, s.keep_rule)
            ctx.stats["kept"] = keep.float().mean()
        same = s.same_cluster and s.neighborhood != "self"
        truth = (ctx.gather(ctx.true_labels[ctx.indices])   # monitors: neighbours of the sample's class
                 if ctx.true_labels is not None and s.neighborhood != "self" else None)
        if truth is None and not same:
            return neighbors, keep
        own = torch.arange(neighbors.shape[0], device=neighbors.device).unsqueeze(1)
        others = neighbors != own                            # the neighbours but the sample itself
        if truth is not None:
            ctx.stats["purity"] = _class_share(neighbors, others, truth)
        if same:
            before = others.sum().clamp_min(1)
            neighbors = same_cluster_neighbors(neighbors, labels)
            others = neighbors != own
            ctx.stats["same_cluster"] = others.sum() / before
            if truth is not None:
                ctx.stats["purity_same_cluster"] = _class_share(neighbors, others, truth)
        return neighbors, keep
