"""STL-10 from its binary release (``stl10_binary/``, what torchvision downloads).

``*_X.bin`` hold uint8 images of 3 x 96 x 96, each channel stored column-major
(MATLAB order), so every image is transposed to get rows and columns right;
``*_y.bin`` hold one uint8 label 1..10 per image, mapped to 0..9. The paper
clusters the 13,000 labelled images (train+test), the default split; the 100,000
``unlabeled`` images can be added (labels -1) or used alone.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ._common import data_root, download_hint, parse_split, resize_array
from .base import ImageData, register_dataset

__all__ = ["STL10_CLASSES", "load_stl10", "read_stl10_images", "read_stl10_labels"]

STL10_CLASSES = ["airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey", "ship", "truck"]
_DIR = "stl10_binary"
_SIDE = 96
_FILES = {"train": ("train_X.bin", "train_y.bin"), "test": ("test_X.bin", "test_y.bin"),
          "unlabeled": ("unlabeled_X.bin", None)}
_HINT = download_hint("torchvision.datasets.STL10")


def read_stl10_images(path: str | Path) -> np.ndarray:
    """A ``*_X.bin`` file as a uint8 [N, 3, 96, 96] view (rows and columns in
    image order; memory-mapped, so the unlabeled file is not read at once)."""
    path = Path(path)
    size = path.stat().st_size
    per = 3 * _SIDE * _SIDE
    if size == 0 or size % per:
        raise ValueError(f"{path} has {size} bytes, not a whole number of 3x96x96 uint8 images "
                         f"({per} bytes each); the file is truncated or not an STL-10 *_X.bin")
    raw = np.memmap(path, dtype=np.uint8, mode="r", shape=(size // per, 3, _SIDE, _SIDE))
    return raw.transpose(0, 1, 3, 2)  # stored column-major per channel


def read_stl10_labels(path: str | Path, n: int) -> np.ndarray:
    """A ``*_y.bin`` file (uint8 1..10) as int64 labels 0..9."""
    path = Path(path)
    y = np.fromfile(path, dtype=np.uint8).astype(np.int64)
    if y.shape[0] != n:
        raise ValueError(f"{path} has {y.shape[0]} labels for the {n} images of its *_X.bin")
    if n and (y.min() < 1 or y.max() > 10):
        raise ValueError(f"{path}: STL-10 labels must be 1..10; found {y.min()}..{y.max()}")
    return y - 1


def _release(root: Path, download: bool) -> Path | None:
    def find():
        for d in (root / _DIR, root):
            if (d / "train_X.bin").is_file() or (d / "test_X.bin").is_file() or (d / "unlabeled_X.bin").is_file():
                return d
        return None

    found = find()
    if found is None and download:
        import torchvision.datasets as tvd

        root.mkdir(parents=True, exist_ok=True)
        tvd.STL10(root=str(root), split="train", download=True)
        found = find()
    return found


@register_dataset("stl10")
def load_stl10(root: str | None = None, split: str = "train+test", image_size: int = 96,
               download: bool = False, on_bad_image: str = "skip", **_) -> ImageData:
    """STL-10: ``root`` holds ``stl10_binary/`` (train_X.bin, train_y.bin, test_X.bin,
    test_y.bin, unlabeled_X.bin, class_names.txt) or is that folder. Splits: train
    (5k), test (8k), train+test (13k labelled, the paper's), unlabeled (100k,
    labels -1), or any '+' combination."""
    parts = parse_split(split, tuple(_FILES), "stl10", examples=("train+test",))
    root_p = data_root(root)
    release = _release(root_p, download)
    if release is None:
        raise FileNotFoundError(f"STL-10 not found under {root_p}: expected {root_p / _DIR / 'train_X.bin'} "
                                f"(the stl10_binary/ folder with train_X.bin, train_y.bin, test_X.bin, "
                                f"test_y.bin, unlabeled_X.bin)" + _HINT)
    images, labels = [], []
    for part in parts:
        x_name, y_name = _FILES[part]
        for f in (x_name, y_name):
            if f is not None and not (release / f).is_file():
                raise FileNotFoundError(f"STL-10 split {part!r}: expected the file {release / f}" + _HINT)
        x = read_stl10_images(release / x_name)
        images.append(resize_array(x, image_size))
        y = read_stl10_labels(release / y_name, len(x)) if y_name else np.full(len(x), -1, np.int64)
        labels.append(torch.from_numpy(y))
    classes = list(STL10_CLASSES)
    names_file = release / "class_names.txt"
    if names_file.is_file():
        names = [ln.strip() for ln in names_file.read_text().splitlines() if ln.strip()]
        if len(names) == 10:
            classes = names
    return ImageData(images=torch.cat(images), labels=torch.cat(labels), classes=classes,
                     name="stl10", normalization="imagenet")
