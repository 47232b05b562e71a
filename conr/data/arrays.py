"""Images a user already holds as a numpy array: ``data.name=numpy`` with
``data.root`` naming a ``.npz`` (key ``images``, optional ``labels`` and
``classes``) or a ``.npy`` of images (no labels).

Accepted images: N x H x W (grey), N x H x W x C or N x C x H x W with C in
{1, 3}; dtype uint8, another integer type within 0..255, or float in [0, 1]
(scaled by 255) or [0, 255]. Labels may be any integers (mapped to 0..K-1 in
sorted order; -1 stays "unknown"); with a ``classes`` array they must already
be indices into it.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ._common import parse_split, resize_array
from .base import ImageData, register_dataset

__all__ = ["load_numpy", "images_from_array", "labels_from_array", "unflatten_images"]


def unflatten_images(arr: np.ndarray, image_shape=None, where: str = "X") -> np.ndarray:
    """A flat [N, D] array as images [N, *image_shape]. Without ``image_shape`` D must be
    a square (grey H x H) or three squares (colour, read as three channel planes C,H,W:
    the order of CIFAR's release and of ``x.reshape(len(x), -1)`` on N,C,H,W tensors;
    pass ``image_shape=(H, W, 3)`` for pixel-interleaved rows)."""
    arr = np.asarray(arr)
    if arr.ndim != 2:
        return arr if image_shape is None else arr.reshape((arr.shape[0], *image_shape))
    n, d = arr.shape
    if image_shape is not None:
        shape = tuple(int(v) for v in image_shape)
        if int(np.prod(shape)) != d:
            raise ValueError(f"{where}: image_shape={shape} holds {int(np.prod(shape))} values but each row "
                             f"has {d}")
        return arr.reshape((n, *shape))
    side = int(round(d ** 0.5))
    if side * side == d:
        return arr.reshape(n, side, side)
    side = int(round((d / 3) ** 0.5))
    if 3 * side * side == d:
        return arr.reshape(n, 3, side, side)
    raise ValueError(f"{where}: a flat array of {d} values per row is neither a square (H*H grey) nor three "
                     f"squares (3*H*H colour); pass image_shape=(H, W) or (H, W, C) to say how to unflatten it")


def images_from_array(arr: np.ndarray, where: str = "images") -> np.ndarray:
    """Any accepted layout / dtype -> uint8 [N, C, H, W] (C in 1, 3)."""
    arr = np.asarray(arr)
    if arr.ndim == 3:
        arr = arr[:, None]
    elif arr.ndim == 4:
        first, last = arr.shape[1] in (1, 3), arr.shape[3] in (1, 3)
        if first and last:
            raise ValueError(f"{where}: shape {arr.shape} is ambiguous (could be N,C,H,W or N,H,W,C); "
                             f"save the images as N,H,W,C with H and W larger than 3")
        if last:
            arr = arr.transpose(0, 3, 1, 2)
        elif not first:
            raise ValueError(f"{where}: shape {arr.shape} has no channel axis of size 1 or 3; expected "
                             f"N,H,W or N,H,W,C or N,C,H,W with C in (1, 3)")
    else:
        raise ValueError(f"{where}: expected N,H,W or N,H,W,C or N,C,H,W images; got {arr.ndim} "
                         f"dimensions, shape {arr.shape}")
    if arr.shape[0] == 0 or arr.shape[2] == 0 or arr.shape[3] == 0:
        raise ValueError(f"{where}: empty image array, shape {arr.shape}")
    if arr.dtype == np.uint8:
        return arr
    if arr.dtype == np.bool_ or not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise ValueError(f"{where}: dtype {arr.dtype} is not an image type; use uint8, or float in [0, 1] "
                         f"or [0, 255]")
    lo, hi = arr.min(), arr.max()
    if np.issubdtype(arr.dtype, np.floating):
        if not np.isfinite(arr).all():
            raise ValueError(f"{where}: float images contain NaN or infinity")
        if lo < 0 or hi > 255:
            raise ValueError(f"{where}: float images range over {lo:g}..{hi:g}; expected [0, 1] or [0, 255]")
        scale = 255.0 if hi <= 1.0 else 1.0
        return np.clip(np.rint(arr.astype(np.float32) * scale), 0, 255).astype(np.uint8)
    if lo < 0 or hi > 255:
        raise ValueError(f"{where}: integer images range over {lo}..{hi}; expected 0..255")
    return arr.astype(np.uint8)


def labels_from_array(labels: np.ndarray, n: int, classes=None, where: str = "labels"):
    """(int64 labels 0..K-1 or -1, class names)."""
    y = np.asarray(labels)
    if y.ndim != 1 or y.shape[0] != n:
        raise ValueError(f"{where}: expected {n} labels (shape ({n},)); got shape {y.shape}")
    if np.issubdtype(y.dtype, np.floating):
        if not np.isfinite(y).all() or (y != np.round(y)).any():
            raise ValueError(f"{where}: float labels must be whole numbers")
        y = y.astype(np.int64)
    if classes is not None:
        names = [str(c) for c in np.asarray(classes).tolist()]
        if not np.issubdtype(y.dtype, np.integer) or (len(y) and (y.min() < -1 or y.max() >= len(names))):
            raise ValueError(f"{where}: with {len(names)} classes the labels must be integers in 0..{len(names) - 1} "
                             f"(or -1 for unknown)")
        return y.astype(np.int64), names
    known = y != -1 if np.issubdtype(y.dtype, np.integer) else np.ones(n, bool)
    values, index = np.unique(y[known], return_inverse=True)
    out = np.full(n, -1, np.int64)
    out[known] = index
    return out, [str(v) for v in values.tolist()]


@register_dataset("numpy")
def load_numpy(root: str | None = None, split: str = "all", image_size: int = 32, download: bool = False,
               on_bad_image: str = "skip", **_) -> ImageData:
    """``root``: a .npz (``images``, optional ``labels``, ``classes``) or a .npy of
    images. The whole array is one set (split all / train+test)."""
    parse_split(split, ("all",), "numpy", aliases={"train+test": "all"})
    if root in (None, ""):
        raise ValueError("data.name=numpy needs data.root to name a .npz (keys images, labels) or .npy file")
    path = Path(root).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"data.root={path}: expected an existing .npz or .npy file")
    suffix = path.suffix.lower()
    labels = classes = None
    try:
        if suffix == ".npz":
            with np.load(path, allow_pickle=False) as z:
                if "images" not in z.files:
                    raise ValueError(f"{path} has no 'images' array (keys: {z.files}); save it with "
                                     f"np.savez(path, images=..., labels=...)")
                images = z["images"]
                labels = z["labels"] if "labels" in z.files else None
                classes = z["classes"] if "classes" in z.files else None
        elif suffix == ".npy":
            images = np.load(path, allow_pickle=False)
        else:
            raise ValueError(f"data.root={path}: expected a .npz or .npy file, not {suffix or 'no extension'}")
    except (OSError, EOFError) as exc:
        raise ValueError(f"{path} is not a readable numpy file ({type(exc).__name__}: {exc})") from exc
    x = images_from_array(images, f"{path}: images")
    if labels is not None:
        y, names = labels_from_array(labels, len(x), classes, f"{path}: labels")
    else:
        y, names = np.full(len(x), -1, np.int64), []
    return ImageData(images=resize_array(x, image_size), labels=torch.from_numpy(y), classes=names,
                     name=path.stem, normalization="auto")
