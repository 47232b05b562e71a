"""Tiny-ImageNet (200 classes, 64 x 64) from the cs231n release ``tiny-imagenet-200/``:
``wnids.txt``, ``words.txt``, ``train/<wnid>/images/*.JPEG`` (500 per class) and
``val/images/*.JPEG`` labelled by ``val/val_annotations.txt`` (tab-separated:
file name, wnid, bounding box).

Class order is the *sorted* wnids (the order an ImageFolder of ``train/`` gives),
not the order of the lines in wnids.txt; class names are the first WordNet name of
each wnid in words.txt. The paper clusters the 100,000 training images (split
"train", the default; "train+test" names the same set, as the release's test images
are unlabelled); "val" (10,000) and "train+val" are available too.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ._common import data_root, download_hint, parse_split
from .folder import decode_file_list
from .base import ImageData, register_dataset
from .folder import scan_images

__all__ = ["TINY_IMAGENET_URL", "TINY_IMAGENET_MD5", "load_tiny_imagenet"]

TINY_IMAGENET_URL = "http://cs231n.stanford.edu/tiny-imagenet-200.zip"
TINY_IMAGENET_MD5 = "90528d7ca1a48142e341f4ef8d21d0de"
_DIR = "tiny-imagenet-200"
_HINT = download_hint(TINY_IMAGENET_URL)


def _release(root: Path, download: bool) -> Path | None:
    def find():
        for d in (root / _DIR, root):
            if (d / "wnids.txt").is_file():
                return d
        return None

    found = find()
    if found is None and download:
        from torchvision.datasets.utils import download_and_extract_archive

        root.mkdir(parents=True, exist_ok=True)
        download_and_extract_archive(TINY_IMAGENET_URL, download_root=str(root), md5=TINY_IMAGENET_MD5)
        found = find()
    return found


def _class_names(release: Path, wnids: list[str]) -> list[str]:
    words = {}
    path = release / "words.txt"
    if path.is_file():
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            wnid, _, text = line.partition("\t")
            if text:
                words[wnid.strip()] = text.split(",")[0].strip()
    return [words.get(w, w) for w in wnids]


def _train_files(release: Path, wnids: list[str]):
    files, labels = [], []
    for i, w in enumerate(wnids):
        folder = release / "train" / w / "images"
        if not folder.is_dir():
            raise FileNotFoundError(f"tiny_imagenet: expected the folder {folder} (train/<wnid>/images/*.JPEG "
                                    f"for every wnid in wnids.txt)" + _HINT)
        found = scan_images(folder)
        if not found:
            raise ValueError(f"tiny_imagenet: {folder} holds no image files")
        files.extend(found)
        labels.extend([i] * len(found))
    return files, labels


def _val_files(release: Path, index: dict[str, int]):
    ann = release / "val" / "val_annotations.txt"
    images = release / "val" / "images"
    if not ann.is_file() or not images.is_dir():
        raise FileNotFoundError(f"tiny_imagenet split 'val': expected {ann} and the folder {images}" + _HINT)
    files, labels = [], []
    for n, line in enumerate(ann.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        cols = line.split("\t")
        if len(cols) < 2:
            raise ValueError(f"{ann} line {n}: expected tab-separated 'file<TAB>wnid<TAB>bbox'; got {line!r}")
        fname, wnid = cols[0].strip(), cols[1].strip()
        if wnid not in index:
            raise ValueError(f"{ann} line {n}: wnid {wnid} is not in wnids.txt")
        path = images / fname
        if not path.is_file():
            raise FileNotFoundError(f"{ann} line {n} names {path}, which does not exist")
        files.append(path)
        labels.append(index[wnid])
    if not files:
        raise ValueError(f"{ann} lists no images")
    return files, labels


@register_dataset("tiny_imagenet")
def load_tiny_imagenet(root: str | None = None, split: str = "train", image_size: int = 64,
                       download: bool = False, on_bad_image: str = "skip", **_) -> ImageData:
    """Tiny-ImageNet: ``root`` holds ``tiny-imagenet-200/`` or is that folder.
    Splits: train (100k, the paper's; train+test is taken as the same), val (10k),
    train+val."""
    parts = parse_split(split, ("train", "val"), "tiny_imagenet", aliases={"train+test": "train"},
                        examples=("train", "val", "train+val"))
    root_p = data_root(root)
    release = _release(root_p, download)
    if release is None:
        raise FileNotFoundError(f"Tiny-ImageNet not found under {root_p}: expected {root_p / _DIR / 'wnids.txt'} "
                                f"(the tiny-imagenet-200/ folder with wnids.txt, words.txt, train/, val/)" + _HINT)
    wnids = sorted({w.strip() for w in (release / "wnids.txt").read_text().splitlines() if w.strip()})
    if not wnids:
        raise ValueError(f"{release / 'wnids.txt'} lists no wnids")
    index = {w: i for i, w in enumerate(wnids)}
    files, labels = [], []
    for part in parts:
        f, y = _train_files(release, wnids) if part == "train" else _val_files(release, index)
        files.extend(f)
        labels.extend(y)
    stacked, kept, bad = decode_file_list(files, image_size, on_bad_image, release)
    y = np.asarray(labels, dtype=np.int64)[kept]
    return ImageData(images=torch.from_numpy(stacked), labels=torch.from_numpy(y),
                     classes=_class_names(release, wnids), paths=[str(f) for f, k in zip(files, kept) if k],
                     name="tiny_imagenet", normalization="imagenet", skipped=bad)
