"""Per-GPU BatchNorm on one device: training-mode statistics over consecutive groups
of the batch (``train.bn_group_size``).

The official CIFAR-10 run normalised over the 128 samples of each of its 4 GPUs (no
SyncBN). :class:`GroupBatchNorm` with ``group_size=128`` makes one process with batch
512 normalise exactly so: group r (samples r·128 .. r·128+127) is what rank r held.
Forward and backward are ``F.batch_norm`` on the groups laid side by side as channels,
the same kernel each rank runs. Running statistics: each group updates its own copy
(as each rank does) and the copies are averaged, which is what the ranks' buffers
become at the end of the epoch (``conr.engine.distributed.sync_buffers``) — the update is
linear, so averaging every step or once per epoch gives the same buffers. Eval mode
is plain BatchNorm. Same parameters, buffers and state-dict keys as ``nn.BatchNorm*d``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["GroupBatchNorm", "convert_group_batchnorm"]


class GroupBatchNorm(nn.modules.batchnorm._BatchNorm):
    """BatchNorm whose training-mode statistics are those of each consecutive group of
    ``group_size`` samples (a batch of group_size or fewer is one group)."""

    def __init__(self, num_features: int, group_size: int, eps: float = 1e-5, momentum: float | None = 0.1,
                 affine: bool = True, track_running_stats: bool = True):
        super().__init__(num_features, eps, momentum, affine, track_running_stats)
        if group_size < 2:
            raise ValueError(f"bn_group_size={group_size} must be >= 2 (BatchNorm needs two samples per group)")
        self.group_size = int(group_size)

    def _check_input_dim(self, x: Tensor) -> None:
        if x.dim() < 2:
            raise ValueError(f"expected at least a 2-d input (N, C, ...), got {x.dim()}-d")

    def forward(self, x: Tensor) -> Tensor:
        n, g = x.shape[0], self.group_size
        if not self.training or n <= g:
            return super().forward(x)
        self._check_input_dim(x)
        if n % g:
            raise ValueError(f"a batch of {n} samples does not split into BatchNorm groups of {g}; make "
                             f"train.bn_group_size divide the per-process batch (train.batch_size / processes)")
        groups, c, rest = n // g, x.shape[1], x.shape[2:]
        # [G·g, C, ...] -> [g, G·C, ...]: group r's channels are columns r·C .. r·C + C - 1
        wide = x.reshape(groups, g, c, *rest).transpose(0, 1).reshape(g, groups * c, *rest)
        factor = 0.0
        running_mean = running_var = None
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
            factor = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
            running_mean = self.running_mean.repeat(groups)
            running_var = self.running_var.repeat(groups)
        weight = self.weight.repeat(groups) if self.affine else None
        bias = self.bias.repeat(groups) if self.affine else None
        y = F.batch_norm(wide, running_mean, running_var, weight, bias, True, factor, self.eps)
        if self.track_running_stats:
            with torch.no_grad():  # each group's copy updated as one rank's; their mean kept
                self.running_mean.copy_(running_mean.view(groups, c).mean(0))
                self.running_var.copy_(running_var.view(groups, c).mean(0))
        return y.reshape(g, groups, c, *rest).transpose(0, 1).reshape(x.shape)


def replace_batchnorm(module: nn.Module, build, kind: type) -> nn.Module:
    """Replace every BatchNorm of ``module`` that is not already a ``kind`` by
    ``build(bn)`` (a fresh ``kind``), handing over the same Parameter and buffer objects
    (optimiser parameter lists stay valid) and the train/eval mode."""
    if isinstance(module, nn.modules.batchnorm._BatchNorm) and not isinstance(module, kind):
        new = build(module)
        if module.affine:
            new.weight, new.bias = module.weight, module.bias
        if module.track_running_stats:
            new.running_mean, new.running_var = module.running_mean, module.running_var
            new.num_batches_tracked = module.num_batches_tracked
        new.training = module.training
        return new
    for name, child in module.named_children():
        new_child = replace_batchnorm(child, build, kind)
        if new_child is not child:
            setattr(module, name, new_child)
    return module


def convert_group_batchnorm(module: nn.Module, group_size: int) -> nn.Module:
    """Replace every BatchNorm of ``module`` by :class:`GroupBatchNorm`, keeping the same
    Parameter and buffer objects (optimiser parameter lists stay valid)."""
    return replace_batchnorm(module, lambda bn: GroupBatchNorm(bn.num_features, group_size, bn.eps, bn.momentum,
                                                                bn.affine, bn.track_running_stats), GroupBatchNorm)
