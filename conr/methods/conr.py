"""CoNR: BYOL up to epoch t0, then group-aware concordance with contextually
affinitive neighbourhoods and the progressive boundary filter (spec 2-4)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ..boundary import boundary_ratio, keep_mask
from ..losses import full_precision, neighborhood_loss
from ..neighbors import check_neighborhood_sizes, conaff_neighbors, euclidean_neighbors
from .base import StepContext, register_method
from .byol import BYOL

__all__ = ["CoNR", "batch_neighbors"]


def batch_neighbors(feats: Tensor, mode: str, k: int, k1: int, k2: int) -> Tensor:
    """[B, k] neighbourhood of each sample inside the batch: ConAff, Euclidean, or itself only."""
    if mode == "conaff":
        return conaff_neighbors(feats, k, k1, k2)
    if mode == "euclidean":
        return euclidean_neighbors(feats, k)
    if mode == "self":
        return torch.arange(feats.shape[0], device=feats.device).unsqueeze(1)
    raise ValueError(f"unknown neighbourhood {mode!r}; choose conaff, euclidean or self")


@register_method("conr")
class CoNR(BYOL):
    description = "CoNR: BYOL warm-up, then ConAff neighbourhoods + progressive boundary filtering"

    @staticmethod
    def validate_config(cfg) -> None:
        s = cfg.stage2
        if s.start_epoch >= cfg.train.epochs:
            from ..config import ConfigError

            raise ConfigError(f"stage2.start_epoch={s.start_epoch} leaves no stage-2 epoch in train.epochs="
                              f"{cfg.train.epochs}; lower start_epoch or use method=byol")
        if s.neighborhood != "self":
            check_neighborhood_sizes(cfg.train.batch_size, k=s.k,
                                     k1=s.k1 if s.neighborhood == "conaff" else None,
                                     k2=s.k2 if s.neighborhood == "conaff" else None)

    def in_stage2(self, epoch: int) -> bool:
        return epoch > self.cfg.stage2.start_epoch

    def needs_clusters(self, epoch: int) -> bool:
        return self.in_stage2(epoch) and self.cfg.stage2.boundary_filter

    def uses_keep_fraction(self) -> bool:
        return self.cfg.stage2.boundary_filter

    def crop_scale(self, epoch: int):
        return tuple(self.cfg.stage2.crop_scale) if self.in_stage2(epoch) else None

    def lr_multipliers(self, epoch: int) -> dict[str, float]:
        if not self.in_stage2(epoch):
            return super().lr_multipliers(epoch)
        s = self.cfg.stage2
        return {"online": s.lr_factor, "predictor": s.predictor_lr_factor}

    def _group_direction(self, xa: Tensor, xb: Tensor, ctx: StepContext) -> Tensor:
        pred = self.net.predictor(self.net.project(xa))
        target = self.net.target(xb, ctx.shuffle_bn)
        return self._group_loss(pred, target, ctx)

    @full_precision
    def _group_loss(self, pred: Tensor, target: Tensor, ctx: StepContext) -> Tensor:
        """Neighbourhoods, boundary filter and loss of one view order: float32 under autocast too."""
        s = self.cfg.stage2
        all_pred = ctx.gather_with_grad(F.normalize(pred.float(), dim=1))
        all_target = ctx.gather(target)
        neighbors = batch_neighbors(all_target, s.neighborhood, s.k, s.k1, s.k2)
        keep = None
        if s.boundary_filter:
            labels = ctx.gather(ctx.pseudo_labels[ctx.indices])
            ratios = boundary_ratio(all_target, ctx.centers, labels, s.ratio_variant)
            keep = keep_mask(ratios, ctx.keep_fraction, s.keep_rule)
            ctx.stats["kept"] = keep.float().mean()
        if ctx.true_labels is not None and s.neighborhood != "self":
            truth = ctx.gather(ctx.true_labels[ctx.indices])
            others = neighbors != torch.arange(neighbors.shape[0], device=neighbors.device).unsqueeze(1)
            same = (truth[neighbors] == truth.unsqueeze(1)) & others
            ctx.stats["purity"] = same.sum() / others.sum().clamp_min(1)
        return s.loss_scale * neighborhood_loss(all_pred, all_target, neighbors, keep)

    def training_loss(self, view1: Tensor, view2: Tensor, ctx: StepContext) -> Tensor:
        if not self.in_stage2(ctx.epoch):
            return super().training_loss(view1, view2, ctx)
        loss = self._group_direction(view1, view2, ctx)
        if self.cfg.train.symmetric:
            loss = 0.5 * (loss + self._group_direction(view2, view1, ctx))
        return loss
