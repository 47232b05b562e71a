"""What a set of images is like: how many, their native size, grey or colour.

The automatic settings (:mod:`conr.auto.settings`) and the loaders read the images
through this look: :func:`survey_files` reads headers (and decodes a few files to tell
grey from colour), :func:`survey_images` looks at decoded uint8 images, and
:func:`pick_image_size` turns the native size into the size a network trains at.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = ["ImageSurvey", "survey_files", "survey_images", "is_grey", "pick_image_size", "MIN_NET_SIZE",
           "CPU_MAX_SIZE", "GPU_MAX_SIZE"]

MIN_NET_SIZE = 16           # px: two 2x pools and a crop still leave a feature map
CPU_MAX_SIZE = 32
GPU_MAX_SIZE = 64


@dataclass
class ImageSurvey:
    """What the settings rule needs to know about a set of images."""
    n_images: int
    shorter_sides: list[int] = field(default_factory=list)
    grey: bool = False
    mirror_overlap: float | None = None   # conr/data/mirror.py: do mirrored images look like members?

    @property
    def native_size(self) -> int:
        return int(np.median(self.shorter_sides)) if self.shorter_sides else 32


def is_grey(im) -> bool:
    """A grey-mode image, or a colour one whose three channels are equal."""
    if im.mode in ("1", "L", "LA", "I", "I;16", "F"):
        return True
    if im.mode == "P":
        im = im.convert("RGB")
    if im.mode not in ("RGB", "RGBA"):
        return False
    a = np.asarray(im.convert("RGB").resize((16, 16)), dtype=np.int16)
    return bool(np.abs(a[..., 0] - a[..., 1]).max() <= 2 and np.abs(a[..., 1] - a[..., 2]).max() <= 2)


def survey_files(paths, max_files: int = 500) -> ImageSurvey:
    """Sizes (headers) and greyness of up to ``max_files`` evenly spread files."""
    from PIL import Image

    from .folder import upright

    paths = list(paths)
    sample = paths
    if len(paths) > max_files:
        step = len(paths) / max_files
        sample = [paths[int(i * step)] for i in range(max_files)]
    sides, grey = [], []
    for p in sample:
        try:
            with Image.open(p) as im:
                sides.append(min(im.size))
                if len(grey) < 64:  # decoding a few is enough to tell grey from colour
                    grey.append(is_grey(upright(im)))   # as it will be read: hidden colours under transparency do not count
        except Exception:  # unreadable: reported when the images are decoded
            continue
    return ImageSurvey(n_images=len(paths), shorter_sides=sides, grey=bool(grey) and all(grey))


def survey_images(images) -> ImageSurvey:
    """The same for decoded uint8 images [N, C, H, W] (a tensor or array)."""
    n, c, h, w = images.shape
    grey = c == 1
    if c == 3:
        sample = np.asarray(images[: min(n, 64)]).astype(np.int16)
        grey = bool(np.abs(sample[:, 0] - sample[:, 1]).max() <= 2 and np.abs(sample[:, 1] - sample[:, 2]).max() <= 2)
    return ImageSurvey(n_images=int(n), shorter_sides=[int(min(h, w))], grey=grey)


def pick_image_size(native: int, device_type: str = "cpu") -> int:
    """Native size rounded down to a multiple of 4, at least MIN_NET_SIZE, at most the device cap."""
    cap = GPU_MAX_SIZE if device_type == "cuda" else CPU_MAX_SIZE
    return int(max(MIN_NET_SIZE, min(cap, 4 * (int(native) // 4))))
