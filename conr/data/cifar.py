"""CIFAR-10, CIFAR-100 and CIFAR-20 (CIFAR-100's 20 superclasses) from the
python-pickle release that torchvision downloads (``cifar-10-batches-py/``,
``cifar-100-python/``); CIFAR-10 also from an ImageFolder tree with ``train/`` and
``test/`` sub-folders (e.g. a JPEG copy of the set).

The paper clusters train+test together (60,000 images), the default split here.
Pickles are read with an unpickler that only builds numpy arrays and plain
containers, so a tampered file cannot run code.
"""
from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import torch

from ._common import data_root, download_hint, parse_split, resize_array
from .base import ImageData, load_dataset, register_dataset

__all__ = ["CIFAR10_CLASSES", "CIFAR100_FINE_CLASSES", "CIFAR100_COARSE_CLASSES", "CIFAR100_COARSE_OF_FINE",
           "load_cifar10", "load_cifar100", "load_cifar20", "read_cifar_pickle"]

CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]

CIFAR100_FINE_CLASSES = [
    "apple", "aquarium_fish", "baby", "bear", "beaver", "bed", "bee", "beetle", "bicycle", "bottle",
    "bowl", "boy", "bridge", "bus", "butterfly", "camel", "can", "castle", "caterpillar", "cattle",
    "chair", "chimpanzee", "clock", "cloud", "cockroach", "couch", "crab", "crocodile", "cup", "dinosaur",
    "dolphin", "elephant", "flatfish", "forest", "fox", "girl", "hamster", "house", "kangaroo", "keyboard",
    "lamp", "lawn_mower", "leopard", "lion", "lizard", "lobster", "man", "maple_tree", "motorcycle", "mountain",
    "mouse", "mushroom", "oak_tree", "orange", "orchid", "otter", "palm_tree", "pear", "pickup_truck", "pine_tree",
    "plain", "plate", "poppy", "porcupine", "possum", "rabbit", "raccoon", "ray", "road", "rocket",
    "rose", "sea", "seal", "shark", "shrew", "skunk", "skyscraper", "snail", "snake", "spider",
    "squirrel", "streetcar", "sunflower", "sweet_pepper", "table", "tank", "telephone", "television", "tiger",
    "tractor", "train", "trout", "tulip", "turtle", "wardrobe", "whale", "willow_tree", "wolf", "woman", "worm",
]

CIFAR100_COARSE_CLASSES = [
    "aquatic_mammals", "fish", "flowers", "food_containers", "fruit_and_vegetables",
    "household_electrical_devices", "household_furniture", "insects", "large_carnivores",
    "large_man-made_outdoor_things", "large_natural_outdoor_scenes", "large_omnivores_and_herbivores",
    "medium_mammals", "non-insect_invertebrates", "people", "reptiles", "small_mammals", "trees",
    "vehicles_1", "vehicles_2",
]

# The official CIFAR-100 superclass grouping (Krizhevsky 2009, the dataset's own
# "coarse_labels"): CIFAR100_COARSE_OF_FINE[fine label] = coarse label, both in the
# release's alphabetical label order. E.g. aquatic_mammals (0) = beaver 4, dolphin 30,
# otter 55, seal 72, whale 95.
CIFAR100_COARSE_OF_FINE = (
    4, 1, 14, 8, 0, 6, 7, 7, 18, 3, 3, 14, 9, 18, 7, 11, 3, 9, 7, 11,
    6, 11, 5, 10, 7, 6, 13, 15, 3, 15, 0, 11, 1, 10, 12, 14, 16, 9, 11, 5,
    5, 19, 8, 8, 15, 13, 14, 17, 18, 10, 16, 4, 17, 4, 2, 0, 17, 4, 18, 17,
    10, 3, 2, 12, 12, 16, 12, 1, 9, 19, 2, 10, 0, 1, 16, 12, 9, 13, 15, 13,
    16, 19, 2, 4, 6, 19, 5, 5, 8, 19, 18, 1, 2, 15, 6, 0, 17, 8, 14, 13,
)

_CIFAR10_DIR = "cifar-10-batches-py"
_CIFAR100_DIR = "cifar-100-python"
_CIFAR10_FILES = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}
_CIFAR100_FILES = {"train": ["train"], "test": ["test"]}
_SPLITS = ("train", "test")


class _SafeUnpickler(pickle.Unpickler):
    """Builds only numpy arrays / dtypes and the builtin containers pickle makes itself."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
        ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
        ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"),
    }

    def find_class(self, module, name):
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a CIFAR pickle "
                                         f"(only numpy arrays are expected)")
        if module.startswith("numpy.core") and hasattr(np, "_core"):
            module = "numpy._core" + module[len("numpy.core"):]
        return super().find_class(module, name)


def read_cifar_pickle(path: str | Path) -> dict[str, object]:
    """One CIFAR pickle as a dict with str keys (the files' keys are bytes)."""
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            obj = _SafeUnpickler(fh, encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError) as exc:
        raise ValueError(f"{path} is not a readable CIFAR python pickle ({type(exc).__name__}: {exc})") from exc
    if not isinstance(obj, dict):
        raise ValueError(f"{path} holds a {type(obj).__name__}, not the dict of a CIFAR pickle")
    return {k.decode("latin1") if isinstance(k, bytes) else str(k): v for k, v in obj.items()}


def _images_of(batch: dict, path: Path) -> np.ndarray:
    if "data" not in batch:
        raise ValueError(f"{path} has no b'data' entry (keys: {sorted(batch)}); not a CIFAR batch file")
    data = np.asarray(batch["data"])
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise ValueError(f"{path}: b'data' must be uint8 [N, 3072] (row-major RGB planes of 32x32); "
                         f"got {data.dtype} {data.shape}")
    return data.reshape(-1, 3, 32, 32)


def _labels_of(batch: dict, key: str, path: Path, n: int, classes: int) -> np.ndarray:
    if key not in batch:
        raise ValueError(f"{path} has no b'{key}' entry (keys: {sorted(batch)})")
    y = np.asarray(batch[key], dtype=np.int64).reshape(-1)
    if y.shape[0] != n:
        raise ValueError(f"{path}: {y.shape[0]} b'{key}' for {n} images")
    if n and (y.min() < 0 or y.max() >= classes):
        raise ValueError(f"{path}: b'{key}' outside 0..{classes - 1}")
    return y


def _names(meta: dict, key: str, default: list[str]) -> list[str]:
    names = meta.get(key)
    if not isinstance(names, (list, tuple)) or len(names) != len(default):
        return list(default)
    return [n.decode("utf-8") if isinstance(n, bytes) else str(n) for n in names]


def _find_release(root: Path, folder: str, probe: str) -> Path | None:
    for d in (root / folder, root):
        if (d / probe).is_file():
            return d
    return None


def _download(dataset_cls: str, root: Path) -> None:
    import torchvision.datasets as tvd

    root.mkdir(parents=True, exist_ok=True)
    getattr(tvd, dataset_cls)(root=str(root), train=True, download=True)


def _binary_release(kind: str, root: Path, download: bool) -> Path | None:
    """Folder holding the pickles (downloading them if asked), or None when absent."""
    folder, probe, tv = ((_CIFAR10_DIR, "data_batch_1", "CIFAR10") if kind == "cifar10"
                         else (_CIFAR100_DIR, "train", "CIFAR100"))
    found = _find_release(root, folder, probe)
    if found is None and download:
        _download(tv, root)
        found = _find_release(root, folder, probe)
    return found


def _require(path: Path, what: str, source: str) -> Path:
    if not path.is_file():
        raise FileNotFoundError(f"{what}: expected the file {path}; the release is incomplete"
                                + download_hint(source))
    return path


@register_dataset("cifar10")
def load_cifar10(root: str | None = None, split: str = "train+test", image_size: int = 32,
                 download: bool = False, on_bad_image: str = "skip", **_) -> ImageData:
    """CIFAR-10: ``root`` holds ``cifar-10-batches-py/`` (data_batch_1..5, test_batch,
    batches.meta) or is that folder; or ``root`` is an ImageFolder tree with
    ``train/<class>/`` and ``test/<class>/`` (decoded by the folder loader).
    Splits: train (50k), test (10k), train+test (60k, the paper's)."""
    parts = parse_split(split, _SPLITS, "cifar10", examples=("train+test",))
    root_p = data_root(root)
    release = _find_release(root_p, _CIFAR10_DIR, "data_batch_1")
    if release is None and all((root_p / p).is_dir() for p in parts):
        data = load_dataset("imagefolder", root=str(root_p), split="+".join(parts), image_size=image_size,
                            on_bad_image=on_bad_image, normalization="cifar10")
        if len(data.classes) != 10:
            raise ValueError(f"{root_p} looks like an ImageFolder tree but has {len(data.classes)} class "
                             f"folders ({data.classes[:12]}); CIFAR-10 has 10")
        data.name = "cifar10"
        return data
    if release is None:
        release = _binary_release("cifar10", root_p, download)
    if release is None:
        raise FileNotFoundError(
            f"CIFAR-10 not found under {root_p}: expected {root_p / _CIFAR10_DIR / 'data_batch_1'} "
            f"(torchvision's cifar-10-batches-py/ with data_batch_1..5 and test_batch), or an ImageFolder "
            f"tree with {', '.join(str(root_p / p) + '/<class>/' for p in parts)}"
            + download_hint("torchvision.datasets.CIFAR10"))
    images, labels = _read_batches(release, [f for part in parts for f in _CIFAR10_FILES[part]],
                                   "CIFAR-10", "labels", 10)
    meta_path = release / "batches.meta"
    classes = _names(read_cifar_pickle(meta_path), "label_names", CIFAR10_CLASSES) if meta_path.is_file() \
        else list(CIFAR10_CLASSES)
    return ImageData(images=resize_array(np.concatenate(images), image_size),
                     labels=torch.from_numpy(np.concatenate(labels)), classes=classes,
                     name="cifar10", normalization="cifar10")


def _read_batches(release: Path, files: list[str], dataset: str, label_key: str, n_classes: int):
    """Images and labels of the pickled batch files of a CIFAR release, in order (lists of arrays)."""
    images, labels = [], []
    for fname in files:
        path = _require(release / fname, dataset, f"torchvision.datasets.{dataset.replace('-', '')}")
        batch = read_cifar_pickle(path)
        x = _images_of(batch, path)
        images.append(x)
        labels.append(_labels_of(batch, label_key, path, len(x), n_classes))
    return images, labels


def _load_cifar100(coarse: bool, root, split, image_size, download) -> ImageData:
    name = "cifar20" if coarse else "cifar100"
    parts = parse_split(split, _SPLITS, name, examples=("train+test",))
    root_p = data_root(root)
    release = _binary_release("cifar100", root_p, download)
    if release is None:
        raise FileNotFoundError(
            f"CIFAR-100 not found under {root_p}: expected {root_p / _CIFAR100_DIR / 'train'} "
            f"(torchvision's cifar-100-python/ with train, test and meta)"
            + download_hint("torchvision.datasets.CIFAR100"))
    key, n_classes = ("coarse_labels", 20) if coarse else ("fine_labels", 100)
    images, labels = _read_batches(release, [f for part in parts for f in _CIFAR100_FILES[part]],
                                   "CIFAR-100", key, n_classes)
    meta_path = release / "meta"
    meta = read_cifar_pickle(meta_path) if meta_path.is_file() else {}
    classes = (_names(meta, "coarse_label_names", CIFAR100_COARSE_CLASSES) if coarse
               else _names(meta, "fine_label_names", CIFAR100_FINE_CLASSES))
    return ImageData(images=resize_array(np.concatenate(images), image_size),
                     labels=torch.from_numpy(np.concatenate(labels)), classes=classes,
                     name=name, normalization="cifar100")


@register_dataset("cifar100")
def load_cifar100(root: str | None = None, split: str = "train+test", image_size: int = 32,
                  download: bool = False, on_bad_image: str = "skip", **_) -> ImageData:
    """CIFAR-100 with its 100 fine classes: ``root`` holds ``cifar-100-python/``
    (train, test, meta) or is that folder. Splits: train, test, train+test."""
    return _load_cifar100(False, root, split, image_size, download)


@register_dataset("cifar20")
def load_cifar20(root: str | None = None, split: str = "train+test", image_size: int = 32,
                 download: bool = False, on_bad_image: str = "skip", **_) -> ImageData:
    """CIFAR-20: CIFAR-100's images labelled by the file's own 20 superclasses
    (b"coarse_labels"; equal to CIFAR100_COARSE_OF_FINE[fine label]). Same layout
    and splits as cifar100; train+test (60k) is the paper's."""
    return _load_cifar100(True, root, split, image_size, download)
