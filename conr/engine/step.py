"""The pieces of one training step that are functions of the config and the step's
position: the view recipe of a crop scale, the per-epoch random generators, the
method's step context (with its multi-process helpers) and the learning rates of the
optimiser's groups."""
from __future__ import annotations

from functools import partial

import torch
from torch import Tensor

from ..data import AugmentConfig, BatchAugment
from .distributed import ShuffleBN, all_gather_nograd, all_gather_with_grad
from ..methods import StepContext

__all__ = ["make_views", "epoch_generators", "step_context", "set_learning_rates"]


def make_views(cfg, scale: tuple, mean, std) -> BatchAugment:
    """The augmentation of the config's ``augment`` section with crop ``scale``."""
    a = cfg.augment
    return BatchAugment(AugmentConfig(
        size=cfg.data.image_size, scale=scale, ratio=tuple(a.ratio), hflip_p=a.hflip_p,
        jitter=tuple(a.jitter), jitter_p=a.jitter_p, gray_p=a.gray_p, blur_p=a.blur_p,
        blur_sigma=tuple(a.blur_sigma), rotation=a.rotation, mean=mean, std=std))


def epoch_generators(seed: int, epoch: int, rank: int, device) -> tuple[torch.Generator, torch.Generator]:
    """Data order (shared by all ranks) and augmentation randomness (per rank), both
    functions of (seed, epoch): a resumed epoch replays exactly."""
    order = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    aug = torch.Generator(device=device).manual_seed((seed * 1_000_003 + epoch) * 7919 + rank)
    return order, aug


def step_context(cfg, dist, epoch: int, iteration: int, total: int, indices: Tensor, keep: float,
                 pseudo_labels, centers, true_labels) -> StepContext:
    """What the method's loss sees of the step: where it is, the batch, the clustering, and
    with several processes (or BN groups standing for them) the gathers and ShuffleBN."""
    t = cfg.train
    ctx = StepContext(epoch=epoch, iteration=iteration, total_iterations=total, indices=indices,
                      pseudo_labels=pseudo_labels, centers=centers, true_labels=true_labels, keep_fraction=keep)
    if dist.enabled:
        ctx.world_size = dist.world_size
        ctx.gather = all_gather_nograd
        ctx.gather_with_grad = partial(all_gather_with_grad, grad_scale_mode=t.grad_scale_mode)
        if t.shuffle_bn and not t.sync_bn:  # with SyncBN the target's statistics are global already
            ctx.shuffle_bn = ShuffleBN(seed=t.seed * 1_000_003 + iteration)
    elif t.bn_group_size and t.shuffle_bn:
        # one process, BN groups standing for ranks: shuffle across the groups with the permutation
        # the ranks would share, so the target's BN batches are those of the multi-GPU run
        ctx.shuffle_bn = ShuffleBN(seed=t.seed * 1_000_003 + iteration, local=True)
    return ctx


def set_learning_rates(optimizer, method, epoch: int, lr: float, base_lr: float) -> None:
    """Each parameter group's rate: the schedule's ``lr`` (or ``base_lr`` for the method's
    fixed-rate groups) times the method's multiplier at ``epoch``."""
    mults = method.lr_multipliers(epoch)
    fixed = method.fixed_lr_groups()
    for group in optimizer.param_groups:
        group["lr"] = (base_lr if group["name"] in fixed else lr) * mults[group["name"]]
