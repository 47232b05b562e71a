"""Process-group helpers for many GPUs / many machines (``torchrun``).

Every helper is the identity in a single process, so the training loop reads the
same with one process or many. The design (see docs/gpu-and-distributed.md, "Many GPUs and machines"):

* Each rank computes the loss of the *gathered* batch; predictions are gathered
  with :func:`all_gather_with_grad`, targets with :func:`all_gather_nograd`.
* After ``backward`` the trainer averages the gradients over ranks with one
  explicit all-reduce (:func:`average_gradients`) instead of wrapping the method in
  DDP: the methods run several forwards of several sub-networks per step (two view
  orders, online and target branches), which DDP's one-forward-per-backward reducer
  does not model, and DDP would also overwrite BatchNorm buffers from rank 0 on
  every forward. With the all-reduce, the distributed autograd below computes
  exactly d(Σ_r L_r)/dθ, and the average is the gradient of (1/W)·Σ_r L_r: for a
  loss computed on the gathered batch (identical on every rank) that is the
  gradient of the global loss, and for a per-rank mean (BYOL) it is the mean over
  the global batch — what one process with the whole batch computes.
* ``grad_scale_mode="per_rank"`` (the official code's behaviour): the gradient of
  the gathered loss flows only into the rank's own slice, so after the average
  the update is 1/world_size of the global loss's gradient.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist
from torch import Tensor, nn

__all__ = [
    "DistInfo", "dist_info", "is_main_process", "init_from_env", "destroy", "all_gather_nograd",
    "all_gather_with_grad", "all_reduce_sum_with_grad", "all_reduce_mean", "average_gradients",
    "sync_buffers", "broadcast_object", "shuffle_permutation", "ShuffleBN", "SyncBatchNorm",
    "convert_sync_batchnorm", "barrier",
]


@dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def dist_info() -> DistInfo:
    if dist.is_available() and dist.is_initialized():
        return DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)))
    return DistInfo()


def is_main_process() -> bool:
    return dist_info().is_main


# ----------------------------------------------------------------- process group
def env_world_size() -> int:
    """WORLD_SIZE as torchrun (or srun + torchrun) sets it; 1 when launched plainly."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        return 1


def init_from_env(device: torch.device, timeout_minutes: float = 30.0) -> tuple[torch.device, bool]:
    """Start the process group from torchrun's environment (RANK, WORLD_SIZE,
    LOCAL_RANK, MASTER_ADDR, MASTER_PORT) when it asks for more than one process.

    Backend NCCL when ``device`` is CUDA (the device becomes ``cuda:LOCAL_RANK``),
    gloo otherwise. A group that already exists (started by the caller) is used as
    it is. Returns ``(device, created)``; ``created`` tells the caller to
    :func:`destroy` the group when done.
    """
    already = dist.is_available() and dist.is_initialized()
    wants = env_world_size() > 1
    if device.type == "cuda" and (already or wants):
        n = torch.cuda.device_count()
        fallback = dist.get_rank() % max(1, n) if already else 0
        local_rank = int(os.environ.get("LOCAL_RANK", fallback))
        if local_rank >= n:
            raise RuntimeError(f"LOCAL_RANK={local_rank} but this node has {n} CUDA device(s); start at most "
                               f"{n} processes per node (torchrun --nproc_per_node {n})")
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    if already or not wants:
        return device, False
    if not dist.is_available():
        raise RuntimeError("WORLD_SIZE > 1 but this PyTorch build has no torch.distributed")
    missing = [k for k in ("RANK", "MASTER_ADDR", "MASTER_PORT") if k not in os.environ]
    if missing:
        raise RuntimeError(f"WORLD_SIZE={env_world_size()} but {', '.join(missing)} not set; launch with "
                           f"torchrun (see README, 'Many GPUs and machines')")
    backend = "nccl" if device.type == "cuda" else "gloo"
    kwargs = {"device_id": device} if backend == "nccl" else {}
    dist.init_process_group(backend=backend, init_method="env://", timeout=timedelta(minutes=timeout_minutes),
                            **kwargs)
    return device, True


def destroy() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    if _active():
        dist.barrier()


# ------------------------------------------------------------------- collectives
def all_gather_nograd(x: Tensor) -> Tensor:
    """Concatenation over ranks (rank order) of equally shaped tensors; no gradient."""
    if not _active():
        return x
    parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, x.detach().contiguous())
    return torch.cat(parts)


class _GatherWithGrad(torch.autograd.Function):
    """all_gather whose backward hands each rank the gradient of its own slice:
    summed over all ranks' losses (``reduce=True``, the exact derivative of
    Σ_r L_r) or the rank's own loss only (``reduce=False``, the official code)."""

    @staticmethod
    def forward(ctx, x: Tensor, reduce: bool) -> Tensor:
        ctx.reduce = reduce
        ctx.rows = x.shape[0]
        parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, x.contiguous())
        return torch.cat(parts)

    @staticmethod
    def backward(ctx, grad: Tensor):
        grad = grad.contiguous()
        if ctx.reduce:
            grad = grad.clone()
            dist.all_reduce(grad)
        lo = dist.get_rank() * ctx.rows
        return grad[lo:lo + ctx.rows], None


def all_gather_with_grad(x: Tensor, grad_scale_mode: str = "global") -> Tensor:
    """Concatenation over ranks with gradient into this rank's slice.

    ``global``: the slice receives the gradient of every rank's loss (so, after the
    trainer's gradient average, a loss computed on the gathered batch gets exactly
    its global gradient, as one process with the whole batch). ``per_rank``: only
    this rank's own loss (the official code: 1/world_size of the global gradient).
    """
    if grad_scale_mode not in ("global", "per_rank"):
        raise ValueError(f"grad_scale_mode={grad_scale_mode!r}; choose global or per_rank")
    if not _active():
        return x
    return _GatherWithGrad.apply(x, grad_scale_mode == "global")


class _AllReduceSum(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        x = x.clone().contiguous()
        dist.all_reduce(x)
        return x

    @staticmethod
    def backward(ctx, grad: Tensor):
        grad = grad.clone().contiguous()
        dist.all_reduce(grad)
        return grad


def all_reduce_sum_with_grad(x: Tensor) -> Tensor:
    """Sum over ranks, differentiable (the backward sums the ranks' gradients)."""
    return _AllReduceSum.apply(x) if _active() else x


@torch.no_grad()
def all_reduce_mean(x: Tensor) -> Tensor:
    """Mean over ranks of a tensor (a new tensor; no gradient)."""
    if not _active():
        return x
    y = x.detach().clone()
    dist.all_reduce(y)
    return y / dist.get_world_size()


@torch.no_grad()
def average_gradients(params) -> None:
    """Replace every ``.grad`` by its mean over ranks (one flat all-reduce per dtype).

    A parameter whose gradient is None on every rank stays None (so SGD skips it,
    as in one process); one that has a gradient on some rank only gets zeros on
    the others first, so all ranks keep identical parameters.
    """
    if not _active():
        return
    params = [p for p in params if p.requires_grad]
    if not params:
        return
    has = torch.tensor([p.grad is not None for p in params], dtype=torch.uint8, device=params[0].device)
    dist.all_reduce(has, op=dist.ReduceOp.MAX)
    live = [p for p, h in zip(params, has.tolist()) if h]
    for p in live:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    world = dist.get_world_size()
    by_dtype: dict[tuple, list] = {}
    for p in live:
        by_dtype.setdefault((p.grad.dtype, p.grad.device), []).append(p)
    for group in by_dtype.values():
        flat = torch.cat([p.grad.reshape(-1) for p in group])
        dist.all_reduce(flat)
        flat.div_(world)
        offset = 0
        for p in group:
            n = p.grad.numel()
            p.grad.copy_(flat[offset:offset + n].view_as(p.grad))
            offset += n


@torch.no_grad()
def sync_buffers(module: nn.Module) -> None:
    """Make every rank's buffers identical: BatchNorm running statistics become
    their mean over ranks (each rank saw different batches unless SyncBN is on),
    every other buffer (counters, MoCo's queue) is taken from rank 0."""
    if not _active():
        return
    averaged = set()
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats:
            for buf in (m.running_mean, m.running_var):
                if buf is not None:
                    dist.all_reduce(buf)
                    buf.div_(dist.get_world_size())
                    averaged.add(id(buf))
    for buf in module.buffers():
        if id(buf) not in averaged:
            dist.broadcast(buf, src=0)


def broadcast_object(obj, src: int = 0):
    """``obj`` as rank ``src`` holds it, on every rank (pickled)."""
    if not _active():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


# -------------------------------------------------------------------- shuffle-BN
def shuffle_permutation(n: int, seed: int) -> Tensor:
    """The permutation of the gathered target batch: a function of the seed only,
    so every rank draws the same one without communication."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed))


class ShuffleBN:
    """Shuffle-BN across ranks for a no-gradient branch (spec 1): gather the batch,
    permute it with a permutation shared by all ranks, forward this rank's slice of
    the permuted batch (so BatchNorm statistics mix samples of every rank),
    gather the outputs and un-permute; returns this rank's rows in their
    original order. Each call in a step draws a new permutation (``seed`` + call
    count). In one process the batch is forwarded as it is, or with ``local=True``
    (BatchNorm groups standing for ranks, conr/batchnorm.py) permuted by the same
    permutation, forwarded whole and un-permuted: group r is then rank r's slice."""

    def __init__(self, seed: int, local: bool = False):
        self.seed = int(seed)
        self.calls = 0
        self.local = local

    @torch.no_grad()
    def __call__(self, net, x: Tensor) -> Tensor:
        if not _active():
            if not self.local:
                return net(x)
            perm = shuffle_permutation(x.shape[0], self.seed * 1009 + self.calls).to(x.device)
            self.calls += 1
            return net(x[perm])[torch.argsort(perm)]
        rank, rows = dist.get_rank(), x.shape[0]
        all_x = all_gather_nograd(x)
        perm = shuffle_permutation(all_x.shape[0], self.seed * 1009 + self.calls).to(x.device)
        self.calls += 1
        z = net(all_x[perm[rank * rows:(rank + 1) * rows]])
        all_z = all_gather_nograd(z)          # row i = output of sample perm[i]
        inverse = torch.argsort(perm)
        return all_z[inverse[rank * rows:(rank + 1) * rows]]


# ---------------------------------------------------------------------- SyncBN
class SyncBatchNorm(nn.modules.batchnorm._BatchNorm):
    """BatchNorm whose training-mode statistics are those of the batch gathered
    over all ranks, for any device and backend (gloo on CPU, NCCL on CUDA):
    per-channel sums and then centred sums of squares are all-reduced with
    gradient, so forward, backward and running statistics are those of one
    BatchNorm on the whole batch. Eval mode, and one process, are plain BatchNorm.
    Same parameters, buffers and state-dict keys as ``nn.BatchNorm*d``: checkpoints
    load with or without it."""

    def _check_input_dim(self, x: Tensor) -> None:
        if x.dim() < 2:
            raise ValueError(f"expected at least a 2-d input (N, C, ...), got {x.dim()}-d")

    def forward(self, x: Tensor) -> Tensor:
        if not (self.training and _active()):
            return super().forward(x)
        self._check_input_dim(x)
        c = x.shape[1]
        dims = [0] + list(range(2, x.dim()))
        shape = [1, c] + [1] * (x.dim() - 2)
        xf = x.float()
        count = torch.full((1,), float(x.numel() // c), device=x.device, dtype=torch.float32)
        sums = all_reduce_sum_with_grad(torch.cat([xf.sum(dims), count]))
        n = sums[c]
        mean = sums[:c] / n
        centred = xf - mean.view(shape)
        var = all_reduce_sum_with_grad(centred.square().sum(dims)) / n
        y = centred * torch.rsqrt(var + self.eps).view(shape)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                f = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                self.running_mean.mul_(1 - f).add_(mean.detach().to(self.running_mean.dtype), alpha=f)
                unbiased = var.detach() * (n / (n - 1).clamp_min(1))
                self.running_var.mul_(1 - f).add_(unbiased.to(self.running_var.dtype), alpha=f)
        return y.to(x.dtype)


def convert_sync_batchnorm(module: nn.Module) -> nn.Module:
    """Replace every BatchNorm of ``module`` by :class:`SyncBatchNorm`, keeping the
    same Parameter and buffer objects (optimiser parameter lists stay valid)."""
    from .batchnorm import replace_batchnorm

    return replace_batchnorm(module, lambda bn: SyncBatchNorm(bn.num_features, bn.eps, bn.momentum, bn.affine,
                                                              bn.track_running_stats), SyncBatchNorm)
