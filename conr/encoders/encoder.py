"""The :class:`Encoder`: a frozen pretrained network with the preprocessing its weights
expect and a spec that says exactly which weights and preprocessing made a feature.

The network maps *normalised* float images [B, 3, S, S] to pooled, pre-classifier
features [B, D]. :meth:`Encoder.features` takes the uint8 images that the decoding
threads produce and does the rest in one call: normalise on the device, channels-last
layout (the faster convolution path on CPU and GPU), ``torch.inference_mode`` and, on
a GPU, bfloat16 autocast. The weights never change: they are frozen
(``requires_grad_(False)``) and the network stays in eval mode, so BatchNorm uses its
running statistics and dropout is off whatever the caller does around it.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from .preprocess import Preprocess

__all__ = ["Encoder", "WeightsInfo"]


@dataclass(frozen=True)
class WeightsInfo:
    """Where the weights came from (``source``: a file path, a package or hub name, or
    ``random`` for a network built without weights) and their sha256 (of the file when
    there is one, else of the tensors: ``sha256_of`` says which)."""

    source: str
    sha256: str
    sha256_of: str = "file"


@dataclass(eq=False)
class Encoder:
    """A frozen image encoder: ``name``, feature width ``dim``, ``preprocess`` (what the
    images must look like), ``weights`` (their source and sha256) and the ``network``.

    ``exportable`` says whether the network may be exported to ONNX for the fast CPU
    path (every built-in one is; a custom network may say no)."""

    name: str
    network: nn.Module
    dim: int
    preprocess: Preprocess
    weights: WeightsInfo
    architecture: str = ""
    exportable: bool = True
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    def __post_init__(self):
        self.network.eval()
        self.network.requires_grad_(False)
        self.device = torch.device(self.device)
        self.network.to(self.device, memory_format=torch.channels_last)

    @property
    def spec(self) -> dict:
        """Plain values for config.yaml, checkpoints and cache keys."""
        return {"name": self.name, "architecture": self.architecture or self.name, "dim": int(self.dim),
                "weights": self.weights.source, "weights_sha256": self.weights.sha256,
                "weights_sha256_of": self.weights.sha256_of, **self.preprocess.describe()}

    @property
    def fingerprint(self) -> str:
        """A short hash of :attr:`spec`: equal fingerprints give equal features."""
        return hashlib.sha256(json.dumps(self.spec, sort_keys=True).encode()).hexdigest()[:24]

    def to(self, device) -> "Encoder":
        self.device = torch.device(device)
        self.network.to(self.device, memory_format=torch.channels_last)
        return self

    def train(self, mode: bool = True) -> "Encoder":
        """Refused quietly: a frozen encoder stays in eval mode."""
        self.network.eval()
        return self

    def normalise(self, images: Tensor) -> Tensor:
        """uint8 [B, 3, S, S] -> normalised float32 on the encoder's device, channels-last."""
        x = images.to(self.device, non_blocking=True)
        return self.preprocess.normalise(x).contiguous(memory_format=torch.channels_last)

    def features(self, images: Tensor) -> Tensor:
        """uint8 [B, 3, S, S] (or floats in [0, 1]) -> float32 [B, D] on the CPU."""
        size = self.preprocess.size
        if images.dim() != 4 or tuple(images.shape[1:]) != (3, size, size):
            raise ValueError(f"encoder {self.name} takes images shaped [B, 3, {size}, {size}] (its preprocess."
                             f"resize makes them), got {tuple(images.shape)}")
        with torch.inference_mode():
            x = self.normalise(images)
            if self.device.type == "cuda":
                with torch.autocast("cuda", dtype=torch.bfloat16):
                    out = self.network(x)
            else:
                out = self.network(x)
        return out.float().reshape(out.shape[0], -1).cpu()

    def __repr__(self) -> str:
        return (f"Encoder({self.name!r}, dim={self.dim}, input={self.preprocess.size}px, "
                f"weights={self.weights.source!r}, device={self.device})")
