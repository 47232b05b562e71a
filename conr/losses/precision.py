"""Losses in float32 under bf16 autocast.

Under bf16 autocast (train.precision=bf16) the networks run in bfloat16, but a function
decorated with :func:`full_precision` (every loss in conr/losses/, and the in-batch
neighbourhood search) runs with autocast off and its half-precision tensor inputs cast to
float32: cosines, logits and neighbour rankings are computed in float32. Outside autocast
with float32 inputs the decorator changes nothing.
"""
from __future__ import annotations

import functools

import torch
from torch import Tensor

__all__ = ["full_precision", "at_least_float32"]

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


def at_least_float32(x: Tensor) -> Tensor:
    """At least float32 (half precision in, float32 out; float64 stays float64)."""
    return x if x.dtype == torch.float64 else x.float()
