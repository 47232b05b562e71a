"""Helpers the dataset-format loaders share: root and split handling, chunked
resizing of in-memory arrays, cached decoding of an explicit list of image files,
and error messages that say which file was expected where."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import Tensor

from .base import resize_uint8

__all__ = ["DEFAULT_ROOT", "data_root", "parse_split", "resize_array",
           "download_hint"]

# Where a dataset lives (and is downloaded to) when data.root is not given; torchvision's convention.
DEFAULT_ROOT = "data"


def data_root(root: str | Path | None) -> Path:
    """data.root as a Path; ./data when unset."""
    return Path(root).expanduser() if root not in (None, "") else Path(DEFAULT_ROOT)


def parse_split(split: str, parts: Sequence[str], dataset: str, aliases: dict[str, str] | None = None,
                examples: Sequence[str] = ()) -> list[str]:
    """``split`` as a list of known parts: a part name or a '+'-joined combination
    ("train+test"). ``aliases`` map whole split strings to another split string.
    Unknown names raise ValueError listing the valid splits."""
    aliases = aliases or {}
    text = aliases.get(split, split)
    chosen = [p.strip() for p in str(text).split("+")]
    if not chosen or any(p not in parts for p in chosen) or len(set(chosen)) != len(chosen):
        valid = list(dict.fromkeys([*examples, *parts, *aliases]))
        raise ValueError(f"{dataset} has no split {split!r}; valid splits: {', '.join(valid)} "
                         f"(or a '+'-joined combination of {', '.join(parts)})")
    return chosen


def download_hint(source: str) -> str:
    return f"; data.download=true fetches it ({source})"


def resize_array(images: np.ndarray, size: int, chunk: int = 2048) -> Tensor:
    """uint8 [N, C, H, W] numpy array (possibly a memory map or a non-contiguous
    view) -> uint8 tensor [N, C, size, size], resized chunk by chunk so that a
    large set never needs one float copy of all of it."""
    n, c = images.shape[:2]
    if images.shape[2] == size and images.shape[3] == size:
        return _owned_tensor(images)
    out = torch.empty((n, c, size, size), dtype=torch.uint8)
    for i in range(0, n, chunk):
        out[i:i + chunk] = resize_uint8(_owned_tensor(images[i:i + chunk]), size)
    return out


def _owned_tensor(arr: np.ndarray) -> Tensor:
    """A tensor over a contiguous, writable copy when ``arr`` is a read-only
    buffer or memory map (torch must not share those)."""
    out = np.ascontiguousarray(arr)
    if not out.flags.writeable or isinstance(out, np.memmap):
        out = np.array(out, copy=True)
    return torch.from_numpy(out)
