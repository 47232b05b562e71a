"""MNIST and Fashion-MNIST from their IDX files (plain or .gz), in ``root``,
``root/raw`` or torchvision's ``root/MNIST/raw`` / ``root/FashionMNIST/raw``.

The IDX header is parsed and checked here: two zero bytes, a type byte (0x08 =
unsigned byte), the number of dimensions, then each dimension as a big-endian
uint32; images are magic 0x00000803 (N x 28 x 28), labels 0x00000801 (N). The
default split is train+test (70,000 images), one grey channel.
"""
from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import torch

from ._common import data_root, download_hint, parse_split, resize_array
from .base import ImageData, register_dataset

__all__ = ["read_idx", "MNIST_CLASSES", "FASHION_MNIST_CLASSES", "load_mnist", "load_fashion_mnist"]

MNIST_CLASSES = [str(i) for i in range(10)]
FASHION_MNIST_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
                         "Bag", "Ankle boot"]

_IDX_TYPES = {0x08: np.dtype(">u1"), 0x09: np.dtype(">i1"), 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"),
              0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}
_FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
          "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
IMAGES_MAGIC, LABELS_MAGIC = 0x00000803, 0x00000801


def read_idx(path: str | Path) -> tuple[int, np.ndarray]:
    """(magic number, array) of an IDX file; ``.gz`` files are decompressed.
    Raises ValueError naming the file for a bad magic number or a wrong length."""
    path = Path(path)
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as fh:
                data = fh.read()
        else:
            data = path.read_bytes()
    except (OSError, EOFError) as exc:  # gzip.BadGzipFile is an OSError
        raise ValueError(f"{path} cannot be read ({type(exc).__name__}: {exc})") from exc
    if len(data) < 4:
        raise ValueError(f"{path} is too short ({len(data)} bytes) to be an IDX file")
    magic = struct.unpack(">I", data[:4])[0]
    code, ndim = data[2], data[3]
    if data[:2] != b"\x00\x00" or code not in _IDX_TYPES or ndim == 0:
        raise ValueError(f"{path} is not an IDX file: magic number 0x{magic:08X} (expected 0x0000TTDD with a "
                         f"type byte TT in {', '.join(f'{t:02X}' for t in _IDX_TYPES)} and DD dimensions)")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise ValueError(f"{path}: IDX header promises {ndim} dimensions but the file ends at byte {len(data)}")
    dims = struct.unpack(f">{ndim}I", data[4:header])
    dtype = _IDX_TYPES[code]
    expected = header + int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    if len(data) != expected:
        raise ValueError(f"{path}: IDX header says shape {dims} ({expected} bytes in all) but the file has "
                         f"{len(data)} bytes; it is truncated or corrupt")
    arr = np.frombuffer(data, dtype=dtype, offset=header).reshape(dims)
    return magic, arr.astype(dtype.newbyteorder("="), copy=False)


def _candidates(root: Path, tv_folder: str) -> list[Path]:
    return [root, root / "raw", root / tv_folder / "raw"]


def _find(dirs: list[Path], name: str) -> Path | None:
    for d in dirs:
        for f in (d / name, d / f"{name}.gz"):
            if f.is_file():
                return f
    return None


def _load(dataset: str, tv_folder: str, tv_class: str, classes: list[str], root, split, image_size,
          download) -> ImageData:
    parts = parse_split(split, tuple(_FILES), dataset, examples=("train+test",))
    root_p = data_root(root)
    dirs = _candidates(root_p, tv_folder)
    needed = [f for p in parts for f in _FILES[p]]
    if download and any(_find(dirs, f) is None for f in needed):
        import torchvision.datasets as tvd

        root_p.mkdir(parents=True, exist_ok=True)
        getattr(tvd, tv_class)(root=str(root_p), train=True, download=True)
    images, labels = [], []
    for part in parts:
        img_name, lab_name = _FILES[part]
        found = {}
        for name in (img_name, lab_name):
            found[name] = _find(dirs, name)
            if found[name] is None:
                raise FileNotFoundError(
                    f"{dataset}: expected {name} (or {name}.gz) in one of "
                    f"{', '.join(str(d) for d in dirs)}" + download_hint(f"torchvision.datasets.{tv_class}"))
        magic, x = read_idx(found[img_name])
        if magic != IMAGES_MAGIC:
            raise ValueError(f"{found[img_name]}: magic number 0x{magic:08X}, expected 0x{IMAGES_MAGIC:08X} "
                             f"(unsigned-byte images, 3 dimensions)")
        magic, y = read_idx(found[lab_name])
        if magic != LABELS_MAGIC:
            raise ValueError(f"{found[lab_name]}: magic number 0x{magic:08X}, expected 0x{LABELS_MAGIC:08X} "
                             f"(unsigned-byte labels, 1 dimension)")
        if len(y) != len(x):
            raise ValueError(f"{found[lab_name]} has {len(y)} labels for the {len(x)} images of {found[img_name]}")
        if len(y) and y.max() >= len(classes):
            raise ValueError(f"{found[lab_name]}: labels must be 0..{len(classes) - 1}; found {y.max()}")
        images.append(resize_array(x[:, None], image_size))
        labels.append(torch.from_numpy(y.astype(np.int64)))
    return ImageData(images=torch.cat(images), labels=torch.cat(labels), classes=list(classes),
                     name=dataset, normalization="auto")


@register_dataset("mnist")
def load_mnist(root: str | None = None, split: str = "train+test", image_size: int = 28,
               download: bool = False, on_bad_image: str = "skip", **_) -> ImageData:
    """MNIST: IDX files in root, root/raw or root/MNIST/raw. Splits: train (60k),
    test (10k), train+test (70k, default). One channel, measured normalisation."""
    return _load("mnist", "MNIST", "MNIST", MNIST_CLASSES, root, split, image_size, download)


@register_dataset("fashion_mnist")
def load_fashion_mnist(root: str | None = None, split: str = "train+test", image_size: int = 28,
                       download: bool = False, on_bad_image: str = "skip", **_) -> ImageData:
    """Fashion-MNIST: IDX files in root, root/raw or root/FashionMNIST/raw. Splits
    as mnist."""
    return _load("fashion_mnist", "FashionMNIST", "FashionMNIST", FASHION_MNIST_CLASSES, root, split,
                 image_size, download)
