"""scikit-learn's bundled 8x8 handwritten digits: offline, 1,797 images, 10 classes."""
from __future__ import annotations

import torch

from .base import ImageData, register_dataset, resize_uint8


@register_dataset("digits", unused=("root", "download"))
def load_digits(root: str | None = None, split: str = "all", image_size: int = 8, **_common) -> ImageData:
    """All 1,797 images as one grey channel (pixel values 0..16 rescaled to 0..255),
    resized to ``image_size`` if it is not 8. The set has no train/test split and
    needs no ``root``; the other common loader options do not apply to it."""
    if split not in ("all", "train+test"):
        raise ValueError(f"digits has no {split!r} split; use data.split=all")
    from sklearn.datasets import load_digits as sk_load_digits

    bunch = sk_load_digits()
    images = torch.from_numpy(bunch.images).float().mul_(255.0 / 16.0).round_().to(torch.uint8).unsqueeze(1)
    images = resize_uint8(images, image_size)
    return ImageData(images=images, labels=torch.from_numpy(bunch.target).long(),
                     classes=[str(c) for c in bunch.target_names], name="digits", normalization="auto")
