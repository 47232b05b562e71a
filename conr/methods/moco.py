"""MoCo v2 (momentum key encoder, a queue of negative keys, InfoNCE with a
temperature; MLP head) and its ConNR* plug-in of CoNR paper App. A.2 (spec
section 5): after stage2.start_epoch the positives of a query are the ConAff
neighbourhood of its key among the batch keys, the loss averaged over that set,
with the queue's negatives as usual."""
from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import ConfigError
from ..losses import moco_infonce, moco_neighborhood_infonce
from ..models import build_backbone
from .base import Method, StepContext, momentum_output
from .registry import register_method
from .stage2 import ConNRPlugin

__all__ = ["MoCo", "MoCoConNR", "moco_head"]


def moco_head(in_dim: int, hidden_dim: int, out_dim: int) -> nn.Sequential:
    """MoCo v2's projection head: Linear -> ReLU -> Linear (no BatchNorm)."""
    return nn.Sequential(nn.Linear(in_dim, hidden_dim), nn.ReLU(inplace=True), nn.Linear(hidden_dim, out_dim))


@register_method("moco")
class MoCo(Method):
    description = "MoCo v2: momentum key encoder, queue of negatives, InfoNCE with temperature (baseline)"

    def __init__(self, cfg, in_channels: int):
        super().__init__()
        self.cfg = cfg
        m, c = cfg.model, cfg.moco
        kwargs = {"width": m.width} if m.width is not None else {}
        self.encoder_q, feat_dim = build_backbone(m.backbone, in_channels=in_channels, **kwargs)
        self.head_q = moco_head(feat_dim, c.hidden_dim or feat_dim, c.dim)
        self.encoder_k = copy.deepcopy(self.encoder_q)
        self.head_k = copy.deepcopy(self.head_q)
        for p in self.key_parameters():
            p.requires_grad_(False)
        self.register_buffer("queue", F.normalize(torch.randn(c.queue_size, c.dim), dim=1))
        self.register_buffer("queue_ptr", torch.zeros((), dtype=torch.long))
        self._pending: list[Tensor] = []

    @staticmethod
    def validate_config(cfg) -> None:
        c = cfg.moco
        if c.queue_size < 1:
            raise ConfigError(f"moco.queue_size={c.queue_size} must be >= 1 (the queue holds the negatives)")
        if c.temperature <= 0:
            raise ConfigError(f"moco.temperature={c.temperature} must be > 0")
        if not 0.0 <= c.momentum <= 1.0:
            raise ConfigError(f"moco.momentum={c.momentum} must lie in [0, 1]")
        if c.dim < 1 or (c.hidden_dim is not None and c.hidden_dim < 1):
            raise ConfigError(f"moco.dim={c.dim} / moco.hidden_dim={c.hidden_dim} must be >= 1")

    # ------------------------------------------------------------------ networks
    def query_parameters(self):
        return list(self.encoder_q.parameters()) + list(self.head_q.parameters())

    def key_parameters(self):
        return list(self.encoder_k.parameters()) + list(self.head_k.parameters())

    def query(self, x: Tensor) -> Tensor:
        return F.normalize(self.head_q(self.encoder_q(x)), dim=1)

    @torch.no_grad()
    def key(self, x: Tensor, shuffle_bn=None) -> Tensor:
        return momentum_output(self.encoder_k, self.head_k, x, shuffle_bn)

    @torch.no_grad()
    def _enqueue(self, keys: Tensor) -> None:
        size = self.queue.shape[0]
        keys = keys[-size:].to(self.queue.dtype)
        idx = (self.queue_ptr + torch.arange(keys.shape[0], device=keys.device)) % size
        self.queue.index_copy_(0, idx, keys)
        self.queue_ptr.copy_((self.queue_ptr + keys.shape[0]) % size)

    # ---------------------------------------------------------------------- loss
    def _pair(self, xq: Tensor, xk: Tensor, ctx: StepContext) -> tuple[Tensor, Tensor]:
        """Queries of ``xq`` and keys of ``xk``, both gathered; the keys are queued after the step."""
        q = ctx.gather_with_grad(self.query(xq))
        k = ctx.gather(self.key(xk, ctx.shuffle_bn))
        self._pending.append(k)
        return q, k

    def _direction(self, xq: Tensor, xk: Tensor, ctx: StepContext) -> Tensor:
        q, k = self._pair(xq, xk, ctx)
        return moco_infonce(q, k, self.queue, self.cfg.moco.temperature)

    def training_loss(self, view1: Tensor, view2: Tensor, ctx: StepContext) -> Tensor:
        self._pending = []
        loss = self._direction(view1, view2, ctx)
        if self.cfg.train.symmetric:
            loss = 0.5 * (loss + self._direction(view2, view1, ctx))
        return loss

    @torch.no_grad()
    def after_step(self, ctx: StepContext) -> None:
        m = self.cfg.moco.momentum
        torch._foreach_lerp_(self.key_parameters(), self.query_parameters(), 1.0 - m)
        if self._pending:
            self._enqueue(torch.cat(self._pending))
        self._pending = []
        ctx.stats["ema_momentum"] = m

    @torch.no_grad()
    def features(self, x: Tensor) -> Tensor:
        return self.key(x)

    def feature_network(self) -> nn.Module:
        return nn.Sequential(self.encoder_k, self.head_k)

    def param_groups(self) -> list[dict]:
        return [{"name": "online", "params": self.query_parameters()}]

    def lr_multipliers(self, epoch: int) -> dict[str, float]:
        return {"online": 1.0}


@register_method("moco_connr")
class MoCoConNR(ConNRPlugin, MoCo):
    description = "MoCo v2, then ConNR*: InfoNCE with the ConAff neighbourhood of each key as positives"

    @staticmethod
    def validate_config(cfg) -> None:
        MoCo.validate_config(cfg)
        ConNRPlugin.validate_stage2(cfg)

    def _direction(self, xq: Tensor, xk: Tensor, ctx: StepContext) -> Tensor:
        if not self.in_stage2(ctx.epoch):
            return super()._direction(xq, xk, ctx)
        q, k = self._pair(xq, xk, ctx)
        neighbors, keep = self.stage2_neighbors(k, ctx)
        loss = moco_neighborhood_infonce(q, k, self.queue, self.cfg.moco.temperature, neighbors, keep)
        return self.cfg.stage2.loss_scale * loss
