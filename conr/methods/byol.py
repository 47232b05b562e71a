"""BYOL: online encoder -> projector -> predictor regresses the EMA target's
projection of the other view (spec sections 1 and 2)."""
from __future__ import annotations

import copy
import math

import torch
from torch import Tensor, nn

from ..losses import byol_loss
from ..models import build_backbone, init_predictor_, mlp_head
from .base import Method, StepContext, momentum_output
from .registry import register_method

__all__ = ["BYOLNetwork", "BYOL", "ema_momentum"]


def ema_momentum(iteration: int, total_iterations: int, base: float, schedule: str = "cosine") -> float:
    """m(t) = 1 - (1 - base)·(cos(π t / T) + 1) / 2 for the cosine schedule, else ``base``."""
    if schedule == "constant" or total_iterations <= 0:
        return base
    return 1.0 - (1.0 - base) * (math.cos(math.pi * iteration / total_iterations) + 1.0) / 2.0


class BYOLNetwork(nn.Module):
    """Online backbone+projector, predictor, and an EMA copy of backbone+projector."""

    def __init__(self, backbone: str, in_channels: int, hidden_dim: int, proj_dim: int,
                 width: int | None = None):
        super().__init__()
        kwargs = {"width": width} if width is not None else {}
        self.encoder, feat_dim = build_backbone(backbone, in_channels=in_channels, **kwargs)
        self.projector = mlp_head(feat_dim, hidden_dim, proj_dim)
        self.predictor = init_predictor_(mlp_head(proj_dim, hidden_dim, proj_dim))
        self.target_encoder = copy.deepcopy(self.encoder)
        self.target_projector = copy.deepcopy(self.projector)
        for p in self.target_parameters():
            p.requires_grad_(False)
        self.feat_dim = feat_dim

    def online_parameters(self):
        return list(self.encoder.parameters()) + list(self.projector.parameters())

    def target_parameters(self):
        return list(self.target_encoder.parameters()) + list(self.target_projector.parameters())

    def project(self, x: Tensor) -> Tensor:
        return self.projector(self.encoder(x))

    @torch.no_grad()
    def target(self, x: Tensor, shuffle_bn=None) -> Tensor:
        """L2-normalised target projection (BatchNorm in the module's current mode)."""
        return momentum_output(self.target_encoder, self.target_projector, x, shuffle_bn)

    @torch.no_grad()
    def update_target(self, momentum: float) -> None:
        """target <- m · target + (1 - m) · online, parameters only (as the reference code)."""
        torch._foreach_lerp_(self.target_parameters(), self.online_parameters(), 1.0 - momentum)


@register_method("byol")
class BYOL(Method):
    description = "BYOL instance concordance for every epoch (the paper's baseline)"

    def __init__(self, cfg, in_channels: int):
        super().__init__()
        self.cfg = cfg
        m = cfg.model
        self.net = BYOLNetwork(m.backbone, in_channels, m.hidden_dim, m.proj_dim, m.width)

    def _direction(self, xa: Tensor, xb: Tensor, ctx: StepContext) -> Tensor:
        pred = self.net.predictor(self.net.project(xa))
        target = self.net.target(xb, ctx.shuffle_bn)
        return byol_loss(pred, target)

    def training_loss(self, view1: Tensor, view2: Tensor, ctx: StepContext) -> Tensor:
        loss = self._direction(view1, view2, ctx)
        if self.cfg.train.symmetric:
            loss = 0.5 * (loss + self._direction(view2, view1, ctx))
        return loss

    @torch.no_grad()
    def after_step(self, ctx: StepContext) -> None:
        t = self.cfg.train
        m = ema_momentum(ctx.iteration + 1, ctx.total_iterations, t.ema_base, t.ema_schedule)
        self.net.update_target(m)
        ctx.stats["ema_momentum"] = m

    @torch.no_grad()
    def features(self, x: Tensor) -> Tensor:
        return self.net.target(x)

    def feature_network(self) -> nn.Module:
        return nn.Sequential(self.net.target_encoder, self.net.target_projector)

    def param_groups(self) -> list[dict]:
        return [
            {"name": "online", "params": self.net.online_parameters()},
            {"name": "predictor", "params": list(self.net.predictor.parameters())},
        ]

    def lr_multipliers(self, epoch: int) -> dict[str, float]:
        return {"online": 1.0, "predictor": self.cfg.train.predictor_lr_mult}
