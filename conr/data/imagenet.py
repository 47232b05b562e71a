"""ImageNet-10 and ImageNet-Dogs: the class subsets of the ImageNet-1k training set
that deep-clustering papers use (10 classes / 13,000 images and 15 dog breeds /
19,500 images). Their WordNet ids ship in ``class_lists/*.txt``.

``data.root`` is either a full ImageNet train folder (``root/train/<wnid>/*.JPEG``
or ``root/<wnid>/*.JPEG``, from which only the listed classes are read) or a
prepared folder that holds just those class folders. Labels follow the list's
(sorted-wnid) order, the order an ImageFolder gives the same folders; class names
are the WordNet names (``king penguin``, ...). Images are decoded once (RGB,
shorter side to ``image_size``, centre crop) and cached like the folder loader's.
ImageNet has no public download; the error says where to put it.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ._common import parse_split
from .folder import decode_file_list
from .base import ImageData, register_dataset
from .folder import scan_images

__all__ = ["CLASS_LIST_DIR", "read_class_list", "load_imagenet_subset", "load_imagenet10", "load_imagenet_dogs"]

CLASS_LIST_DIR = Path(__file__).resolve().parent / "class_lists"


def read_class_list(name: str) -> list[tuple[str, str]]:
    """[(wnid, class name)] of a shipped list (``imagenet10``, ``imagenet_dogs``);
    '#' lines are comments."""
    path = CLASS_LIST_DIR / f"{name}.txt"
    if not path.is_file():
        raise FileNotFoundError(f"class list {path} is missing from the installed package")
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        wnid, _, label = line.partition(" ")
        out.append((wnid, label.strip() or wnid))
    return out


def load_imagenet_subset(list_name: str, dataset: str, root: str | None, split: str, image_size: int,
                         on_bad_image: str) -> ImageData:
    """The classes of ``class_lists/<list_name>.txt`` read from an ImageNet train tree."""
    # The paper clusters the training images only; train+test / all name that same set.
    parse_split(split, ("train",), dataset, aliases={"train+test": "train", "all": "train"})
    entries = read_class_list(list_name)
    wnids = [w for w, _ in entries]
    layout = (f"expected layout: <root>/train/<wnid>/*.JPEG (the ImageNet-1k train folder, ILSVRC-2012) or "
              f"<root>/<wnid>/*.JPEG (a folder holding just the {len(wnids)} {dataset} classes: "
              f"{' '.join(wnids)}). ImageNet has no public download: get ILSVRC2012_img_train.tar from "
              f"https://image-net.org and unpack it")
    if root in (None, ""):
        raise ValueError(f"data.name={dataset} needs data.root; {layout}")
    root_p = Path(root).expanduser()
    if not root_p.is_dir():
        raise FileNotFoundError(f"{dataset}: data.root={root_p} is not a folder; {layout}")
    base = next((b for b in (root_p / "train", root_p) if b.is_dir() and any((b / w).is_dir() for w in wnids)),
                None)
    missing = wnids if base is None else [w for w in wnids if not (base / w).is_dir()]
    if missing:
        where = base if base is not None else root_p
        raise FileNotFoundError(f"{dataset}: {len(missing)} of its {len(wnids)} class folders are missing "
                                f"under {where}: {' '.join(missing)}; {layout}")
    files, labels = [], []
    for i, w in enumerate(wnids):
        found = scan_images(base / w)
        if not found:
            raise ValueError(f"{dataset}: the class folder {base / w} holds no image files")
        files.extend(found)
        labels.extend([i] * len(found))
    stacked, kept, bad = decode_file_list(files, image_size, on_bad_image, base)
    y = np.asarray(labels, dtype=np.int64)[kept]
    return ImageData(images=torch.from_numpy(stacked), labels=torch.from_numpy(y),
                     classes=[n for _, n in entries], paths=[str(f) for f, k in zip(files, kept) if k],
                     name=dataset, normalization="imagenet", skipped=bad)


@register_dataset("imagenet10")
def load_imagenet10(root: str | None = None, split: str = "train", image_size: int = 96,
                    download: bool = False, on_bad_image: str = "skip", **_) -> ImageData:
    """ImageNet-10 (10 classes x 1,300 training images = 13,000). Split: train
    (train+test and all are accepted as the same set)."""
    return load_imagenet_subset("imagenet10", "imagenet10", root, split, image_size, on_bad_image)


@register_dataset("imagenet_dogs")
def load_imagenet_dogs(root: str | None = None, split: str = "train", image_size: int = 96,
                       download: bool = False, on_bad_image: str = "skip", **_) -> ImageData:
    """ImageNet-Dogs (15 dog breeds x 1,300 training images = 19,500). Split: train
    (train+test and all are accepted as the same set)."""
    return load_imagenet_subset("imagenet_dogs", "imagenet_dogs", root, split, image_size, on_bad_image)
