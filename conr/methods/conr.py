"""CoNR: BYOL up to epoch t0, then group-aware concordance with contextually
affinitive neighbourhoods and the progressive boundary filter (spec 2-4)."""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from ..losses import full_precision, neighborhood_loss
from .base import StepContext
from .byol import BYOL
from .registry import register_method
from .stage2 import ConNRPlugin

__all__ = ["CoNR"]


@register_method("conr")
class CoNR(ConNRPlugin, BYOL):
    description = "CoNR: BYOL warm-up, then ConAff neighbourhoods + progressive boundary filtering"

    @staticmethod
    def validate_config(cfg) -> None:
        ConNRPlugin.validate_stage2(cfg)

    def _group_direction(self, xa: Tensor, xb: Tensor, ctx: StepContext) -> Tensor:
        pred = self.net.predictor(self.net.project(xa))
        target = self.net.target(xb, ctx.shuffle_bn)
        return self._group_loss(pred, target, ctx)

    @full_precision
    def _group_loss(self, pred: Tensor, target: Tensor, ctx: StepContext) -> Tensor:
        """Neighbourhoods, boundary filter and loss of one view order: float32 under autocast too."""
        all_pred = ctx.gather_with_grad(F.normalize(pred.float(), dim=1))
        all_target = ctx.gather(target)
        neighbors, keep = self.stage2_neighbors(all_target, ctx)
        return self.cfg.stage2.loss_scale * neighborhood_loss(all_pred, all_target, neighbors, keep)

    def training_loss(self, view1: Tensor, view2: Tensor, ctx: StepContext) -> Tensor:
        if not self.in_stage2(ctx.epoch):
            return super().training_loss(view1, view2, ctx)
        loss = self._group_direction(view1, view2, ctx)
        if self.cfg.train.symmetric:
            loss = 0.5 * (loss + self._group_direction(view2, view1, ctx))
        return loss
