"""SimSiam (projector + predictor, D = −cos with stop-gradient, symmetric) and its
ConNR* plug-in of CoNR paper App. A.2 (spec section 5): after stage2.start_epoch
the stop-gradient target of each prediction is the ConAff neighbourhood of the
other view's projection instead of the projection alone."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import ConfigError
from ..losses import simsiam_loss, simsiam_neighborhood_loss
from ..models import build_backbone
from .base import Method, StepContext
from .registry import register_method
from .stage2 import ConNRPlugin

__all__ = ["SimSiam", "SimSiamConNR", "simsiam_projector", "simsiam_predictor"]


def simsiam_projector(in_dim: int, hidden_dim: int, out_dim: int, layers: int = 2) -> nn.Sequential:
    """SimSiam's projection MLP: every Linear followed by BN, ReLU on all but the last
    (2 layers in the paper's CIFAR setting, 3 on ImageNet)."""
    if layers not in (2, 3):
        raise ValueError(f"simsiam.proj_layers={layers}: the projector has 2 or 3 layers")
    mods: list[nn.Module] = [nn.Linear(in_dim, hidden_dim, bias=False), nn.BatchNorm1d(hidden_dim), nn.ReLU(inplace=True)]
    if layers == 3:
        mods += [nn.Linear(hidden_dim, hidden_dim, bias=False), nn.BatchNorm1d(hidden_dim), nn.ReLU(inplace=True)]
    mods += [nn.Linear(hidden_dim, out_dim, bias=False), nn.BatchNorm1d(out_dim)]
    return nn.Sequential(*mods)


def simsiam_predictor(dim: int, hidden_dim: int) -> nn.Sequential:
    """SimSiam's bottleneck prediction MLP: Linear-BN-ReLU-Linear, no BN on the output."""
    return nn.Sequential(nn.Linear(dim, hidden_dim, bias=False), nn.BatchNorm1d(hidden_dim), nn.ReLU(inplace=True),
                         nn.Linear(hidden_dim, dim))


@register_method("simsiam")
class SimSiam(Method):
    description = "SimSiam: projector + predictor, D = -cos with stop-gradient, symmetric (baseline)"

    def __init__(self, cfg, in_channels: int):
        super().__init__()
        self.cfg = cfg
        m, s = cfg.model, cfg.simsiam
        kwargs = {"width": m.width} if m.width is not None else {}
        self.encoder, feat_dim = build_backbone(m.backbone, in_channels=in_channels, **kwargs)
        self.projector = simsiam_projector(feat_dim, s.proj_hidden_dim, s.proj_dim, s.proj_layers)
        self.predictor = simsiam_predictor(s.proj_dim, s.pred_hidden_dim)

    @staticmethod
    def validate_config(cfg) -> None:
        s = cfg.simsiam
        if s.proj_layers not in (2, 3):
            raise ConfigError(f"simsiam.proj_layers={s.proj_layers} must be 2 (CIFAR) or 3 (ImageNet)")
        for key in ("proj_hidden_dim", "proj_dim", "pred_hidden_dim"):
            if getattr(s, key) < 1:
                raise ConfigError(f"simsiam.{key}={getattr(s, key)} must be >= 1")

    def project(self, x: Tensor) -> Tensor:
        return self.projector(self.encoder(x))

    def _views(self, view1: Tensor, view2: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        z1, z2 = self.project(view1), self.project(view2)
        return z1, z2, self.predictor(z1), self.predictor(z2)

    def training_loss(self, view1: Tensor, view2: Tensor, ctx: StepContext) -> Tensor:
        z1, z2, p1, p2 = self._views(view1, view2)
        loss = simsiam_loss(p1, z2)
        if self.cfg.train.symmetric:
            loss = 0.5 * loss + 0.5 * simsiam_loss(p2, z1)
        return loss

    @torch.no_grad()
    def features(self, x: Tensor) -> Tensor:
        return F.normalize(self.project(x).float(), dim=1)

    def feature_network(self) -> nn.Module:
        return nn.Sequential(self.encoder, self.projector)

    def param_groups(self) -> list[dict]:
        return [
            {"name": "online", "params": list(self.encoder.parameters()) + list(self.projector.parameters())},
            {"name": "predictor", "params": list(self.predictor.parameters())},
        ]

    def lr_multipliers(self, epoch: int) -> dict[str, float]:
        return {"online": 1.0, "predictor": self.cfg.train.predictor_lr_mult}

    def fixed_lr_groups(self) -> frozenset[str]:
        return frozenset({"predictor"}) if self.cfg.simsiam.fix_predictor_lr else frozenset()


@register_method("simsiam_connr")
class SimSiamConNR(ConNRPlugin, SimSiam):
    description = "SimSiam, then ConNR*: D(p1, stopgrad z2^j) averaged over the ConAff neighbourhood of z2"

    @staticmethod
    def validate_config(cfg) -> None:
        SimSiam.validate_config(cfg)
        ConNRPlugin.validate_stage2(cfg)

    def _group_direction(self, p: Tensor, z: Tensor, ctx: StepContext) -> Tensor:
        all_p = ctx.gather_with_grad(p.float())
        all_z = ctx.gather(F.normalize(z.detach().float(), dim=1))
        neighbors, keep = self.stage2_neighbors(all_z, ctx)
        return simsiam_neighborhood_loss(all_p, all_z, neighbors, keep)

    def training_loss(self, view1: Tensor, view2: Tensor, ctx: StepContext) -> Tensor:
        if not self.in_stage2(ctx.epoch):
            return super().training_loss(view1, view2, ctx)
        z1, z2, p1, p2 = self._views(view1, view2)
        loss = self._group_direction(p1, z2, ctx)
        if self.cfg.train.symmetric:
            loss = 0.5 * loss + 0.5 * self._group_direction(p2, z1, ctx)
        return self.cfg.stage2.loss_scale * loss
