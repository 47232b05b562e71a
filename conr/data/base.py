"""The in-memory image set every loader returns, and the loader registry."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["ImageData", "LabelledRows", "DATASETS", "register_dataset", "load_dataset", "NORMALIZATION", "resize_uint8"]

# Per-dataset normalisation (spec section 7).
NORMALIZATION: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)),
    "cifar100": ((0.5071, 0.4867, 0.4408), (0.2675, 0.2565, 0.2761)),
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
}


class LabelledRows:
    """What every dataset shares: rows (``images``) with one label each, -1 where unknown."""

    def _check_labels(self, what: str) -> None:
        self.labels = torch.as_tensor(self.labels, dtype=torch.long)
        if self.labels.shape != (self.images.shape[0],):
            raise ValueError(f"{self.labels.numel()} labels for {self.images.shape[0]} {what}")

    def __len__(self) -> int:
        return self.images.shape[0]

    @property
    def has_labels(self) -> bool:
        """Every row has a ground-truth label (monitors, purity, kNN need that)."""
        return bool((self.labels >= 0).all()) and len(self) > 0

    @property
    def n_labelled(self) -> int:
        """Rows with a known label (label >= 0): the ones NMI / ACC / ARI are scored on."""
        return int((self.labels >= 0).sum())


@dataclass
class ImageData(LabelledRows):
    """A labelled (or unlabelled) image collection held as one uint8 tensor.

    ``labels`` is -1 where no ground truth is known. ``paths`` names the source
    file of each image when it came from files (for reports and assignments).
    """
    images: Tensor                       # uint8 [N, C, H, W]
    labels: Tensor                       # int64 [N]
    classes: list[str] = field(default_factory=list)
    paths: list[str] | None = None
    name: str = "data"
    normalization: str = "imagenet"      # key of NORMALIZATION, or "auto"
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, reason) of unreadable files

    def __post_init__(self):
        if self.images.dtype != torch.uint8 or self.images.dim() != 4:
            raise ValueError(f"images must be uint8 [N, C, H, W]; got {self.images.dtype} {tuple(self.images.shape)}")
        if self.images.shape[1] not in (1, 3):
            raise ValueError(f"images must have 1 or 3 channels; got {self.images.shape[1]}")
        self._check_labels("images")
        if self.paths is not None and len(self.paths) != self.images.shape[0]:
            raise ValueError(f"{len(self.paths)} paths for {self.images.shape[0]} images")

    @property
    def channels(self) -> int:
        return self.images.shape[1]

    @property
    def image_size(self) -> int:
        return self.images.shape[-1]

    def mean_std(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """Normalisation for this data: the named table entry, or measured ("auto")."""
        if self.normalization in NORMALIZATION:
            mean, std = NORMALIZATION[self.normalization]
            return mean[: self.channels], std[: self.channels]
        x = self.images.float().div(255.0)
        return tuple(x.mean(dim=(0, 2, 3)).tolist()), tuple(x.std(dim=(0, 2, 3)).clamp_min(1e-3).tolist())

    def subset(self, index: Sequence[int] | Tensor) -> "ImageData":
        index = torch.as_tensor(index, dtype=torch.long)
        return ImageData(
            images=self.images[index], labels=self.labels[index], classes=list(self.classes),
            paths=[self.paths[i] for i in index.tolist()] if self.paths is not None else None,
            name=self.name, normalization=self.normalization, skipped=list(self.skipped),
        )

    @staticmethod
    def concat(parts: Sequence["ImageData"], name: str | None = None) -> "ImageData":
        first = parts[0]
        paths = None
        if all(p.paths is not None for p in parts):
            paths = [q for p in parts for q in p.paths]
        return ImageData(
            images=torch.cat([p.images for p in parts]), labels=torch.cat([p.labels for p in parts]),
            classes=list(first.classes), paths=paths, name=name or first.name,
            normalization=first.normalization, skipped=[s for p in parts for s in p.skipped],
        )


def resize_uint8(images: Tensor, size: int) -> Tensor:
    """Resize uint8 [N, C, H, W] images to size x size (bilinear, antialiased)."""
    if images.shape[-1] == size and images.shape[-2] == size:
        return images
    out = F.interpolate(images.float(), size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return out.round_().clamp_(0, 255).to(torch.uint8)


Loader = Callable[..., ImageData]
DATASETS: dict[str, Loader] = {}


UNUSED: dict[str, tuple[str, ...]] = {}  # data.* keys a loader ignores: setting one is an error


def register_dataset(name: str, unused: tuple[str, ...] = ()):
    """Register a loader under ``name``; ``unused``: the common options (root,
    download) it does not read, so that a config setting one fails instead of being
    silently ignored."""
    def wrap(fn: Loader) -> Loader:
        DATASETS[name] = fn
        UNUSED[name] = tuple(unused)
        return fn
    return wrap


def load_dataset(name: str, **kwargs) -> ImageData:
    """Load a registered dataset by name; kwargs go to its loader (root, split, image_size, ...)."""
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose one of {sorted(DATASETS)}")
    for key in UNUSED.get(name, ()):
        if kwargs.get(key) not in (None, False):
            hint = (f"; to train on your own images use data.name=imagefolder data.root={kwargs[key]}"
                    if key == "root" else "")
            raise ValueError(f"data.{key}={kwargs[key]} is not used by data.name={name} (it would be silently "
                             f"ignored){hint}")
    data = DATASETS[name](**kwargs)
    if len(data) == 0:
        raise ValueError(f"dataset {name!r} loaded no images (options: {kwargs}); check the path and split")
    return data
