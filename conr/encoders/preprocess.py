"""What a pretrained encoder expects of its input, split in two halves that run in
different places.

* :meth:`Preprocess.resize` (PIL image -> uint8 [3, S, S]) is the slow, per-image
  half: decode, resize the shorter side to ``round(S / crop_fraction)``, cut the
  centre S x S square. It runs in worker threads while the network is busy with the
  previous batch, and its uint8 output is four times smaller than floats to queue.
* :meth:`Preprocess.normalise` (uint8 [B, 3, S, S] -> float) is the cheap, batched
  half: ``(x / 255 - mean) / std`` as one multiply-add, done on the device inside the
  encoder's call.

The split is the same one the weights were evaluated with (resize, centre crop, then
normalise), so the features are those of the published preprocessing, not an
approximation of it.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import Tensor

__all__ = ["Preprocess", "INTERPOLATIONS"]

INTERPOLATIONS = ("bilinear", "bicubic", "nearest", "lanczos", "box", "hamming")


def _pil_filter(name: str):
    from PIL import Image

    return {"bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC, "nearest": Image.NEAREST,
            "lanczos": Image.LANCZOS, "box": Image.BOX, "hamming": Image.HAMMING}[name]


@dataclass(frozen=True)
class Preprocess:
    """Input size S, per-channel mean and std (of pixels scaled to [0, 1]), the
    resampling filter, and the fraction of the resized image the centre crop keeps
    (0.875: resize the shorter side to S / 0.875, e.g. 256 for 224, then crop S)."""

    size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str = "bicubic"
    crop_fraction: float = 0.875

    def __post_init__(self):
        if self.interpolation not in INTERPOLATIONS:
            raise ValueError(f"interpolation={self.interpolation!r}: choose one of {', '.join(INTERPOLATIONS)}")
        if not 0 < self.crop_fraction <= 1:
            raise ValueError(f"crop_fraction={self.crop_fraction!r}: the centre crop keeps a fraction in (0, 1] "
                             f"of the resized image")
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise ValueError(f"mean={self.mean!r}, std={self.std!r}: give three values each, std above 0")
        if int(self.size) < 8:
            raise ValueError(f"size={self.size!r}: an encoder's input is at least 8 pixels")

    @property
    def resize_to(self) -> int:
        """The shorter side after resizing, before the centre crop."""
        return max(int(self.size), int(round(self.size / self.crop_fraction)))

    def describe(self) -> dict:
        """Plain values for config.yaml and checkpoints."""
        out = asdict(self)
        out["mean"], out["std"] = [float(v) for v in self.mean], [float(v) for v in self.std]
        out["resize_to"] = self.resize_to
        return out

    def resize(self, image) -> np.ndarray:
        """A PIL image of any size and mode -> uint8 [3, S, S] (RGB, shorter side to
        :attr:`resize_to`, centre crop)."""
        rgb = self.resize_rgb(image)
        return np.asarray(rgb, dtype=np.uint8).transpose(2, 0, 1).copy()

    def resize_rgb(self, image):
        """The resized, centre-cropped PIL RGB image (:meth:`resize` without the array)."""
        im = image.convert("RGB")
        w, h = im.size
        short = self.resize_to
        scale = short / min(w, h)
        nw, nh = max(short, round(w * scale)), max(short, round(h * scale))
        if (nw, nh) != (w, h):
            im = im.resize((nw, nh), _pil_filter(self.interpolation))
        s = int(self.size)
        left, top = (nw - s) // 2, (nh - s) // 2
        if (left, top, nw, nh) != (0, 0, s, s):
            im = im.crop((left, top, left + s, top + s))
        return im

    def scale_shift(self, device=None, dtype=torch.float32) -> tuple[Tensor, Tensor]:
        """(a, b) with ``a * uint8 + b == (x / 255 - mean) / std``, shaped [1, 3, 1, 1]."""
        mean = torch.tensor(self.mean, dtype=torch.float64)
        std = torch.tensor(self.std, dtype=torch.float64)
        a, b = 1.0 / (255.0 * std), -mean / std
        return (a.to(device=device, dtype=dtype).view(1, 3, 1, 1), b.to(device=device, dtype=dtype).view(1, 3, 1, 1))

    def normalise(self, images: Tensor) -> Tensor:
        """uint8 [B, 3, S, S] (or floats already scaled to [0, 1]) -> normalised float32."""
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"expected images shaped [B, 3, {self.size}, {self.size}], got {tuple(images.shape)}")
        a, b = self.scale_shift(images.device)
        if images.dtype == torch.uint8:
            return torch.addcmul(b, images.float(), a)
        return torch.addcmul(b, images.float(), a * 255.0)
