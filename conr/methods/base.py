"""What a training method is: networks, a loss per step, parameter groups, and
the features used for clustering."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["Method", "StepContext", "identity", "momentum_output"]


def identity(x: Tensor) -> Tensor:
    return x


@torch.no_grad()
def momentum_output(encoder: nn.Module, head: nn.Module, x: Tensor, shuffle_bn=None) -> Tensor:
    """L2-normalised ``head(encoder(x))`` of a momentum (target / key) branch, in float32.

    ``shuffle_bn`` (conr/distributed.py) wraps the forward so that BatchNorm sees a batch permuted
    across ranks; None runs it directly (BatchNorm in the modules' current mode)."""
    net = lambda y: head(encoder(y))  # noqa: E731
    z = shuffle_bn(net, x) if shuffle_bn is not None else net(x)
    return F.normalize(z.float(), dim=1)


@dataclass
class StepContext:
    """Everything a loss may need besides the two views."""
    epoch: int                               # 1-based epoch being trained
    iteration: int                           # global iteration, 0-based
    total_iterations: int
    indices: Tensor                          # [b] dataset indices of this process's batch
    pseudo_labels: Tensor | None = None      # [N] k-means labels of the whole dataset (last epoch)
    centers: Tensor | None = None            # [K, D] k-means centres (last epoch)
    true_labels: Tensor | None = None        # [N] ground truth, for monitors only (never in the loss)
    keep_fraction: float = 1.0               # boundary filter's kept fraction this epoch
    # distributed helpers (conr/distributed.py); identities in a single process. A loss term computed
    # on gathered tensors is computed identically on every rank; the trainer averages the gradients.
    gather: Callable[[Tensor], Tensor] = identity            # concat over ranks, no gradient
    gather_with_grad: Callable[[Tensor], Tensor] = identity  # concat over ranks, gradient into the own slice
                                                             # (global or per_rank: train.grad_scale_mode)
    shuffle_bn: Callable | None = None       # (module, x) -> module(x) with the batch shuffled over ranks
    world_size: int = 1
    stats: dict = field(default_factory=dict)  # monitors written by the loss (detached tensors)


class Method(nn.Module):
    """Base class. Subclasses build their networks in ``__init__(cfg, in_channels)``."""

    name = "method"
    description = ""

    def training_loss(self, view1: Tensor, view2: Tensor, ctx: StepContext) -> Tensor:
        raise NotImplementedError

    @torch.no_grad()
    def after_step(self, ctx: StepContext) -> None:
        """Called after each optimiser step (e.g. the EMA target update)."""

    @torch.no_grad()
    def features(self, x: Tensor) -> Tensor:
        """L2-normalised features clustered by k-means and used for evaluation."""
        raise NotImplementedError

    def feature_network(self) -> nn.Module | None:
        """The module mapping images to the (not yet normalised) features that
        :meth:`features` returns, with gradients: what the self-labelling stage
        fine-tunes a copy of (conr/cluster/self_label.py). None: the method has none."""
        return None

    def param_groups(self) -> list[dict]:
        """Optimiser parameter groups, each with a ``name``."""
        return [{"name": "all", "params": [p for p in self.parameters() if p.requires_grad]}]

    def lr_multipliers(self, epoch: int) -> dict[str, float]:
        """LR multiplier per parameter group name at ``epoch`` (1-based)."""
        return {g["name"]: 1.0 for g in self.param_groups()}

    def fixed_lr_groups(self) -> frozenset[str]:
        """Parameter groups kept at the base LR (times their multiplier) instead of
        following the warm-up + cosine schedule (e.g. SimSiam's predictor)."""
        return frozenset()

    def crop_scale(self, epoch: int) -> tuple[float, float] | None:
        """Crop-area range of the training views at ``epoch``; None = the config's."""
        return None

    def stage2_start(self) -> int | None:
        """The first (1-based) epoch of stage 2, or None for a method with one stage only.
        The one place the trainer, the estimator's K estimation and the report ask."""
        return None

    def in_stage2(self, epoch: int) -> bool:
        """Whether ``epoch`` (1-based) trains in stage 2."""
        start = self.stage2_start()
        return start is not None and epoch >= start

    def needs_clusters(self, epoch: int) -> bool:
        """Whether the loss at ``epoch`` uses the pseudo-labels of the last clustering step."""
        return False

    def uses_keep_fraction(self) -> bool:
        return False

    def sampling_weights(self, epoch: int, pseudo_labels: Tensor | None) -> Tensor | None:
        """Per-image sampling weights [N] for ``epoch`` (None = uniform shuffling).
        The trainer then draws the epoch's order with replacement in proportion."""
        return None

    def epoch_order(self, epoch: int, pseudo_labels: Tensor | None, n: int, generator: torch.Generator) -> Tensor:
        """The order [n] (CPU) in which ``epoch`` visits the data, cut into batches by the
        trainer: a shuffle, or a draw in proportion to :meth:`sampling_weights`."""
        weights = self.sampling_weights(epoch, pseudo_labels)
        if weights is None:
            return torch.randperm(n, generator=generator)
        return torch.multinomial(weights.double().cpu(), n, replacement=True, generator=generator)
