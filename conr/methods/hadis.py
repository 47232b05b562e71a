"""HaDis (spec section 6), on the BYOL network of ProPos:

    loss = L_BYOL(pred(q + σ·ε), t) + hsd_weight · L_HSD + w · L_proto

- diffused sampling alignment: Gaussian noise σ on the online projection q before
  the predictor (σ = 0 during the warm-up epochs);
- hardness-aware self-distillation between the teacher t = target(b) and the
  student s = pred(q̃), both L2-normalised (:func:`~conr.losses.hsd_loss`);
- prototypical contrast between the per-batch pseudo-cluster centres of the online
  projections and of the target projections (:func:`~conr.losses.prototype_loss`),
  off during the warm-up;
- optionally (CIFAR-20) the data resampled with weights ∝ 1 / pseudo-cluster size.

Every term is symmetrised over the two view orders when train.symmetric is set.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import ConfigError
from ..losses import byol_loss, hsd_loss, prototype_loss
from .base import StepContext
from .byol import BYOL
from .registry import register_method

__all__ = ["HaDis"]


@register_method("hadis")
class HaDis(BYOL):
    description = ("HaDis: BYOL with latent noise + hardness-aware self-distillation + "
                   "prototypical contrast over pseudo-clusters")

    @staticmethod
    def validate_config(cfg) -> None:
        h, t = cfg.hadis, cfg.train
        if h.latent_std < 0:
            raise ConfigError(f"hadis.latent_std={h.latent_std} must be >= 0")
        for key in ("hsd_weight", "proto_weight"):
            if getattr(h, key) < 0:
                raise ConfigError(f"hadis.{key}={getattr(h, key)} must be >= 0")
        for key in ("hsd_temperature", "proto_temperature"):
            if getattr(h, key) <= 0:
                raise ConfigError(f"hadis.{key}={getattr(h, key)} must be > 0")
        if h.warmup_epochs is not None and not 0 <= h.warmup_epochs <= t.epochs:
            raise ConfigError(f"hadis.warmup_epochs={h.warmup_epochs} must lie in [0, train.epochs={t.epochs}] "
                              f"(or be null to follow train.warmup_epochs)")

    # ---------------------------------------------------------------- schedule
    @property
    def warmup_epochs(self) -> int:
        h = self.cfg.hadis
        return self.cfg.train.warmup_epochs if h.warmup_epochs is None else h.warmup_epochs

    def in_warmup(self, epoch: int) -> bool:
        return epoch <= self.warmup_epochs

    def needs_clusters(self, epoch: int) -> bool:
        h = self.cfg.hadis
        return h.resample or (h.proto_weight > 0 and not self.in_warmup(epoch))

    def sampling_weights(self, epoch: int, pseudo_labels: Tensor | None) -> Tensor | None:
        """Weights ∝ 1 / (size of the image's pseudo-cluster), as ProPos' data_resample."""
        if not self.cfg.hadis.resample or pseudo_labels is None:
            return None
        labels = pseudo_labels.long()
        counts = torch.bincount(labels, minlength=self.cfg.cluster.n_clusters).to(torch.float64)
        return (labels.numel() / counts)[labels]

    # -------------------------------------------------------------------- loss
    def _direction(self, xa: Tensor, xb: Tensor, ctx: StepContext, warm: bool) -> tuple[Tensor, Tensor, Tensor]:
        h = self.cfg.hadis
        q = self.net.project(xa)
        noisy = q if warm or h.latent_std == 0 else q + torch.randn_like(q) * h.latent_std
        pred = self.net.predictor(noisy)
        target = self.net.target(xb, ctx.shuffle_bn)
        zero = pred.new_zeros(()).float()
        byol = byol_loss(pred, target)
        hsd = zero
        if h.hsd_weight > 0:
            student = ctx.gather_with_grad(F.normalize(pred.float(), dim=1))
            hsd = hsd_loss(ctx.gather(target), student, h.hsd_temperature)
        proto = zero
        if h.proto_weight > 0 and not warm:
            if ctx.pseudo_labels is None:
                raise RuntimeError("the HaDis prototype term needs the pseudo-labels of the last clustering "
                                   "step, but the trainer passed none")
            labels = ctx.gather(ctx.pseudo_labels[ctx.indices])
            all_q = ctx.gather_with_grad(F.normalize(q.float(), dim=1))
            proto = prototype_loss(all_q, ctx.gather(target), labels, self.cfg.cluster.n_clusters,
                                   h.proto_temperature, h.absent_logit)
        return byol, hsd, proto

    def training_loss(self, view1: Tensor, view2: Tensor, ctx: StepContext) -> Tensor:
        h = self.cfg.hadis
        warm = self.in_warmup(ctx.epoch)
        terms = self._direction(view1, view2, ctx, warm)
        if self.cfg.train.symmetric:
            other = self._direction(view2, view1, ctx, warm)
            terms = tuple(0.5 * (a + b) for a, b in zip(terms, other))
        byol, hsd, proto = terms
        ctx.stats["byol"] = byol.detach()
        ctx.stats["hsd"] = hsd.detach()
        ctx.stats["proto"] = proto.detach()
        return byol + h.hsd_weight * hsd + h.proto_weight * proto
