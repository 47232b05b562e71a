"""Loss terms as pure functions of tensors (spec 2 and 4d).

Under bf16 autocast (train.precision=bf16) the networks run in bfloat16, but a
function decorated with :func:`full_precision` (every loss here and in
conr/method_losses.py, and the in-batch neighbourhood search) runs with autocast
off and its half-precision tensor inputs cast to float32: cosines, logits and
neighbour rankings are computed in float32. Outside autocast with float32 inputs
the decorator changes nothing.
"""
from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["byol_loss", "neighborhood_loss", "full_precision"]  # the extra methods' terms: losses/methods.py

_HALF = (torch.float16, torch.bfloat16)


def _up(x):
    return x.float() if isinstance(x, Tensor) and x.dtype in _HALF else x


def full_precision(fn):
    """Run ``fn`` with autocast off and half-precision tensor arguments cast to float32
    (float32 and float64 arguments, integer indices and masks are passed unchanged)."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        device = next((a.device.type for a in (*args, *kwargs.values()) if isinstance(a, Tensor)), "cpu")
        with torch.autocast(device, enabled=False):
            return fn(*(_up(a) for a in args), **{k: _up(v) for k, v in kwargs.items()})
    return wrapper


@full_precision
def byol_loss(pred: Tensor, target: Tensor) -> Tensor:
    """Instance concordance: -2 · mean_i cos(pred_i, target_i); the target gets no gradient."""
    return -2.0 * F.cosine_similarity(pred, target.detach(), dim=-1).mean()


@full_precision
def neighborhood_loss(pred: Tensor, targets: Tensor, neighbors: Tensor, keep: Tensor | None = None) -> Tensor:
    """Group-aware concordance of CoNR (spec 4d) for one view order.

    loss = -2 / (B·k) · Σ_i Σ_{j ∈ neighbors[i]} keep_i · cos(pred_i, targets_j)

    Args:
        pred: [B, D] online predictions (any scale; cosine is taken).
        targets: [B, D] target features of the other view; no gradient flows into them.
        neighbors: [B, k] indices into ``targets`` (the anchor itself normally included).
        keep: optional [B] bool/float mask of anchors kept by the boundary filter;
            dropped anchors still count in the B·k denominator, as in the official code.
    """
    p = F.normalize(pred, dim=-1)
    t = F.normalize(targets.detach(), dim=-1)[neighbors]  # [B, k, D]
    cos = torch.einsum("bd,bkd->bk", p, t.to(p.dtype))
    if keep is not None:
        cos = cos * keep.to(cos.dtype).unsqueeze(1)
    return -2.0 * cos.mean()
