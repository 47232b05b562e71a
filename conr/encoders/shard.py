"""Feature extraction split over the processes of a ``torchrun`` launch.

Rank r of W takes the contiguous slice ``[r·N/W, (r+1)·N/W)`` of the file list (the
slices differ in length by at most one file), extracts it, and the slices are
gathered in rank order, so every rank ends with all rows in the order of the files.
Contiguous slices (not every W-th file) make that order a plain concatenation, and
keep each rank's reads in one stretch of the folder.

A rank may drop unreadable files, so the slices' row counts differ: each rank pads its
rows to the largest count for ``all_gather`` (which needs equal shapes) and the
padding is cut off afterwards. Outside a process group every function here is the
identity. The module talks to ``torch.distributed`` directly and needs nothing else
of conr.
"""
from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor

__all__ = ["world", "shard_bounds", "gather_rows", "gather_lists", "broadcast_object", "broadcast_rows"]


def world() -> tuple[int, int]:
    """(rank, world size) of the running process group; (0, 1) without one."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def shard_bounds(n: int, rank: int, world_size: int) -> tuple[int, int]:
    """The slice [start, stop) of n items that ``rank`` takes."""
    return n * rank // world_size, n * (rank + 1) // world_size


def gather_lists(items: list) -> list:
    """Every rank's list, concatenated in rank order (picklable items)."""
    rank, size = world()
    if size == 1:
        return list(items)
    parts: list = [None] * size
    dist.all_gather_object(parts, list(items))
    return [x for part in parts for x in part]


def broadcast_object(obj, src: int = 0):
    """``obj`` of rank ``src`` on every rank."""
    if world()[1] == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def _gather_device() -> torch.device:
    """Where collectives want their tensors: the current GPU under NCCL, else the CPU."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def gather_rows(rows: Tensor) -> Tensor:
    """Every rank's rows [n_r, ...] (n_r may differ; same trailing shape and dtype),
    concatenated in rank order, on the CPU, on every rank."""
    rank, size = world()
    if size == 1:
        return rows
    device = _gather_device()
    counts = gather_lists([int(rows.shape[0])])
    longest = max(counts)
    padded = torch.zeros((longest, *rows.shape[1:]), dtype=rows.dtype, device=device)
    padded[: rows.shape[0]] = rows.to(device)
    parts = [torch.empty_like(padded) for _ in range(size)]
    dist.all_gather(parts, padded)
    return torch.cat([p[:c].cpu() for p, c in zip(parts, counts)])


def broadcast_rows(rows: Tensor | None, src: int = 0) -> Tensor:
    """Rank ``src``'s tensor on every rank (the others pass None)."""
    if world()[1] == 1:
        return rows
    meta = broadcast_object(None if rows is None else (tuple(rows.shape), rows.dtype), src)
    device = _gather_device()
    buf = rows.to(device).contiguous() if world()[0] == src else torch.empty(meta[0], dtype=meta[1], device=device)
    dist.broadcast(buf, src=src)
    return buf.cpu()
