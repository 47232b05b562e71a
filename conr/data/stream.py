"""Image folders too large to hold in memory: the files stay on disk, DataLoader
workers decode and resize each batch to uint8 (nothing else: augmentation still
runs on the training device with :class:`~conr.data.augment.BatchAugment`).

``data.in_memory`` chooses the path:

* ``true``: decode everything once into one uint8 tensor that lives on the device
  (the fast path for CIFAR-sized sets);
* ``false``: stream the files (image folders only: ``data.name=imagefolder``, or
  ``cifar10`` given the ImageFolder tree of the JPEG copy);
* ``auto`` (default): stream when the decoded images would exceed
  :data:`STREAM_ABOVE_BYTES` (N x 3 x size x size bytes), else in memory.

A streamed dataset is a :class:`StreamData`: it answers what the trainer asks of
an :class:`~conr.data.base.ImageData` (length, labels, classes, normalisation)
but its ``images`` are a :class:`FileImages`, a lazy uint8 [N, 3, S, S] array.
The trainer takes each step's batch from :meth:`FileImages.epoch_batches` (the
same index order as the in-memory path: batch i of an epoch holds
``perm[i·B:(i+1)·B]``) and extracts features through :func:`image_chunks`.
Each file is decoded exactly as the in-memory folder loader decodes it
(:func:`~conr.data.folder.decode_image`), so both paths see identical pixels.
An unreadable file is fatal with ``data.on_bad_image=fail``; with ``skip`` it
becomes a black image and a warning (its index is kept, unlike the in-memory
loader, which drops it before training).
"""
from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler

from ..options import option
from .base import NORMALIZATION, LabelledRows
from .folder import BadImageError, decode_image, index_image_folder

__all__ = ["STREAM_ABOVE_BYTES", "FileImages", "StreamData", "stream_data", "image_chunks", "streamable"]

# data.in_memory=auto streams a dataset whose decoded uint8 images would exceed this (8 GiB).
STREAM_ABOVE_BYTES = 8 * 2**30


def _default_workers() -> int:
    return min(8, os.cpu_count() or 1)


class _FileDataset(Dataset):
    """Item i -> (uint8 [3, size, size], readable?). Runs in the DataLoader workers."""

    def __init__(self, paths: Sequence[str], size: int, on_bad_image: str):
        self.paths, self.size, self.on_bad_image = paths, size, on_bad_image

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        try:
            return torch.from_numpy(decode_image(self.paths[i], self.size)), True
        except Exception as exc:  # PIL raises many types for broken files
            if self.on_bad_image == "fail":
                raise BadImageError(f"unreadable image file {self.paths[i]} ({type(exc).__name__}: {exc}); "
                                    f"remove or repair it, or pass {option('data.on_bad_image', 'skip')}") from None
            return torch.zeros(3, self.size, self.size, dtype=torch.uint8), False


class _Batches(Sampler):
    """Batch sampler the trainer refills before each pass: a list of index lists.
    The persistent workers stay alive while the list changes from epoch to epoch."""

    def __init__(self):
        self.batches: list[list[int]] = []

    def __iter__(self):
        return iter(list(self.batches))

    def __len__(self) -> int:
        return len(self.batches)


class _Source:
    """What all views of one file list share: the files, and one persistent loader."""

    def __init__(self, paths: list[str], size: int, on_bad_image: str, workers: int | None):
        self.paths, self.size, self.on_bad_image = paths, size, on_bad_image
        self.workers = _default_workers() if workers is None else max(0, int(workers))
        self.dataset = _FileDataset(paths, size, on_bad_image)
        self._sampler = _Batches()
        self._loader: DataLoader | None = None
        self._pin = False
        self.warned: set[str] = set()

    def loader(self, pin: bool) -> DataLoader:
        if self._loader is None or self._pin != pin:
            kwargs = {}
            if self.workers > 0:
                kwargs = {"persistent_workers": True, "prefetch_factor": 4}
            self._loader = DataLoader(self.dataset, batch_sampler=self._sampler, num_workers=self.workers,
                                      pin_memory=pin, **kwargs)
            self._pin = pin
        return self._loader

    def run(self, batches: list[list[int]], device: torch.device) -> Iterator[Tensor]:
        """uint8 batches of the given base indices, in order, on ``device`` (copied without blocking)."""
        device = torch.device(device)
        if self.workers == 0:
            for idx in batches:
                yield self._check(*self._decode(idx), idx).to(device)
            return
        self._sampler.batches = batches
        for images, ok in self.loader(device.type == "cuda"):
            yield self._check(images, ok, None).to(device, non_blocking=True)

    def _decode(self, idx: Sequence[int]) -> tuple[Tensor, Tensor]:
        items = [self.dataset[i] for i in idx]
        if not items:
            return torch.zeros(0, 3, self.size, self.size, dtype=torch.uint8), torch.zeros(0, dtype=torch.bool)
        return torch.stack([x for x, _ in items]), torch.tensor([ok for _, ok in items])

    def _check(self, images: Tensor, ok: Tensor, idx) -> Tensor:
        if not bool(ok.all()):  # a host tensor: no device synchronisation
            bad = (~ok).nonzero().flatten().tolist()
            if idx is None:
                warnings.warn(f"{len(bad)} unreadable image file(s) in a streamed batch replaced by black images "
                              f"({option('data.on_bad_image', 'skip')})", stacklevel=3)
            else:
                for b in bad:
                    path = self.paths[idx[b]]
                    if path not in self.warned:
                        self.warned.add(path)
                        warnings.warn(f"unreadable image file {path} replaced by a black image "
                                      f"({option('data.on_bad_image', 'skip')})", stacklevel=3)
        return images


class FileImages:
    """A lazy, read-only uint8 [N, 3, size, size] image array backed by files.

    Indexing follows tensors: a slice is a view (nothing decoded); an integer, a
    list or an index tensor decodes those images (in this process) into a tensor.
    Training batches and feature extraction go through the DataLoader workers
    (:meth:`epoch_batches`, :meth:`chunks`)."""

    dtype = torch.uint8
    device = torch.device("cpu")

    def __init__(self, paths: Sequence[str], size: int, on_bad_image: str = "skip", workers: int | None = None,
                 _source: _Source | None = None, _index: np.ndarray | None = None):
        self._source = _source if _source is not None else _Source([str(p) for p in paths], size, on_bad_image,
                                                                   workers)
        self._index = np.arange(len(self._source.paths)) if _index is None else _index

    # ------------------------------------------------------------- array-like
    @property
    def shape(self) -> torch.Size:
        s = self._source.size
        return torch.Size((len(self._index), 3, s, s))

    def dim(self) -> int:
        return 4

    def __len__(self) -> int:
        return len(self._index)

    @property
    def paths(self) -> list[str]:
        return [self._source.paths[i] for i in self._index]

    def view(self, index) -> "FileImages":
        """The images at ``index`` (positions in this array) as a lazy array."""
        index = torch.as_tensor(index, dtype=torch.long).numpy() if not isinstance(index, slice) else index
        return FileImages((), 0, _source=self._source, _index=self._index[index])

    def __getitem__(self, key):
        if isinstance(key, slice):
            return self.view(key)
        if isinstance(key, (int, np.integer)) or (isinstance(key, Tensor) and key.dim() == 0):
            return self._decode([int(key)])[0]
        idx = torch.as_tensor(key).long().cpu().flatten().tolist()
        return self._decode(idx)

    def _decode(self, positions: list[int]) -> Tensor:
        base = [int(self._index[p]) for p in positions]
        images, ok = self._source._decode(base)
        return self._source._check(images, ok, base)

    # ---------------------------------------------------------------- loading
    def chunks(self, batch_size: int, device) -> Iterator[Tensor]:
        """The whole array in order, ``batch_size`` images at a time, on ``device``."""
        n = len(self._index)
        batches = [self._index[s:s + batch_size].tolist() for s in range(0, n, batch_size)]
        return self._source.run(batches, device)

    def epoch_batches(self, perm: Tensor, batch_size: int, lo: int, hi: int, iters: int, device) -> Iterator[Tensor]:
        """The trainer's batches of one epoch: batch i holds positions perm[i·B:(i+1)·B][lo:hi]
        (this process's slice of the global batch), decoded by the workers, on ``device``."""
        order = perm.cpu().numpy()  # once per epoch
        batches = [self._index[order[i * batch_size:(i + 1) * batch_size][lo:hi]].tolist() for i in range(iters)]
        return self._source.run(batches, device)

    def materialize(self) -> Tensor:
        """Decode everything into one uint8 tensor (for small sets and tests)."""
        return torch.cat(list(self.chunks(1024, "cpu"))) if len(self) else torch.zeros(self.shape, dtype=torch.uint8)


def image_chunks(images, batch_size: int, device) -> Iterator[Tensor]:
    """Consecutive batches of a uint8 tensor or a :class:`FileImages`, on ``device``."""
    if isinstance(images, FileImages):
        yield from images.chunks(batch_size, device)
        return
    for start in range(0, images.shape[0], batch_size):
        yield images[start:start + batch_size].to(device)


@dataclass
class StreamData(LabelledRows):
    """A file-backed image collection: the :class:`~conr.data.base.ImageData`
    interface the trainer uses, with lazily decoded :class:`FileImages`."""
    images: FileImages
    labels: Tensor
    classes: list[str] = field(default_factory=list)
    name: str = "data"
    normalization: str = "imagenet"
    skipped: list[tuple[str, str]] = field(default_factory=list)
    streamed = True

    def __post_init__(self):
        self._check_labels("images")

    @property
    def paths(self) -> list[str]:
        return self.images.paths

    @property
    def channels(self) -> int:
        return 3

    @property
    def image_size(self) -> int:
        return self.images.shape[-1]

    def mean_std(self, sample: int = 2048, seed: int = 0) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """The named normalisation, or ("auto") measured on a seeded sample of ``sample`` images."""
        if self.normalization in NORMALIZATION:
            return NORMALIZATION[self.normalization]
        g = torch.Generator().manual_seed(seed)
        idx = torch.randperm(len(self), generator=g)[:sample].sort().values
        x = torch.cat(list(self.images.view(idx).chunks(256, "cpu"))).float().div(255.0)
        return tuple(x.mean(dim=(0, 2, 3)).tolist()), tuple(x.std(dim=(0, 2, 3)).clamp_min(1e-3).tolist())

    def subset(self, index) -> "StreamData":
        index = torch.as_tensor(index, dtype=torch.long)
        return StreamData(images=self.images.view(index), labels=self.labels[index], classes=list(self.classes),
                          name=self.name, normalization=self.normalization, skipped=list(self.skipped))

    def load(self):
        """Decode everything: the equivalent in-memory :class:`~conr.data.base.ImageData`."""
        from .base import ImageData

        return ImageData(images=self.images.materialize(), labels=self.labels, classes=list(self.classes),
                         paths=self.paths, name=self.name, normalization=self.normalization,
                         skipped=list(self.skipped))


# ------------------------------------------------------------------ which data

def _folder_parts(root: Path, split: str) -> list[Path]:
    """The folders ``imagefolder`` reads for ``split`` (its train/test sub-folders, or root)."""
    parts = split.split("+") if split not in ("all", "") else []
    if parts and all((root / p).is_dir() for p in parts):
        return [root / p for p in parts]
    if parts:
        missing = [p for p in parts if not (root / p).is_dir()]
        raise FileNotFoundError(f"split {split!r} needs the sub-folder(s) {missing} under {root}; "
                                f"use data.split=all to read the whole folder")
    return [root]


def streamable(data_cfg) -> bool:
    """Whether ``data_cfg`` names a folder of image files that can be streamed."""
    if data_cfg.name == "imagefolder":
        return data_cfg.root is not None
    if data_cfg.name == "cifar10" and data_cfg.root is not None:  # the JPEG copy: <root>/{train,test}/<class>/
        from ._common import parse_split

        root = Path(data_cfg.root).expanduser()
        try:
            parts = parse_split(data_cfg.split, ("train", "test"), "cifar10")
        except ValueError:
            return False
        return not (root / "cifar-10-batches-py").exists() and all((root / p).is_dir() for p in parts)
    return False


def _scan(data_cfg) -> tuple[list[Path], list[int], list[str], str, str]:
    root = Path(data_cfg.root).expanduser()
    if data_cfg.name == "cifar10":
        folders, name, norm = [root / p for p in data_cfg.split.split("+")], "cifar10", "cifar10"
    else:
        folders, name, norm = _folder_parts(root, data_cfg.split), root.name, "imagenet"
    files, labels, classes = [], [], None
    for folder in folders:
        f, y, c = index_image_folder(folder, "auto")
        if classes is not None and c != classes:
            raise ValueError(f"{folder} has classes {c} but {folders[0]} has {classes}")
        classes = c
        files.extend(f)
        labels.extend(y)
    if data_cfg.name == "cifar10" and len(classes) != 10:
        raise ValueError(f"{root} looks like an ImageFolder tree but has {len(classes)} class folders "
                         f"({classes[:12]}); CIFAR-10 has 10")
    return files, labels, classes, name, norm


def stream_data(data_cfg) -> StreamData | None:
    """The streamed dataset ``data_cfg`` asks for, or None when it should be decoded
    into memory (``data.in_memory``: true, false or auto; see the module docstring)."""
    mode = data_cfg.in_memory
    if mode is True or mode == "true":
        return None
    if not streamable(data_cfg):
        if mode is False or mode == "false":
            raise ValueError(f"data.in_memory=false streams folders of image files (data.name=imagefolder, or "
                             f"cifar10 as the JPEG ImageFolder tree); data.name={data_cfg.name!r} with root "
                             f"{data_cfg.root!r} is read into memory: use data.in_memory=auto")
        return None
    files, labels, classes, name, norm = _scan(data_cfg)
    size = data_cfg.image_size
    if mode == "auto" and len(files) * 3 * size * size <= STREAM_ABOVE_BYTES:
        return None
    images = FileImages([str(f) for f in files], size, data_cfg.on_bad_image, getattr(data_cfg, "workers", None))
    return StreamData(images=images, labels=torch.tensor(labels, dtype=torch.long), classes=classes, name=name,
                      normalization=norm)
