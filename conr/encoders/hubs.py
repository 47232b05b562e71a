"""Encoders from model zoos: timm, torchvision and OpenCLIP.

Each route builds the architecture, fills it with the zoo's pretrained weights (a
download on first use, then the zoo's cache) or with a local file, takes the
preprocessing from the zoo's own metadata for those weights, and drops the classifier
so the network returns the pooled features in front of it.

A download that fails (no network, ``HF_HUB_OFFLINE=1``, a proxy) becomes an
:class:`~conr.encoders.weights.EncoderUnavailableError` naming the cache folder where
the weights would live and what file ``--encoder-weights`` takes instead. Anything
else a zoo raises (a bug, a checkpoint that does not fit) is left as it is, so a
broken install is not reported as a missing network.
"""
from __future__ import annotations

import difflib
import socket
import warnings
from contextlib import contextmanager

from torch import Tensor, nn

from ..errors import MissingDependencyError
from ..options import option
from .encoder import Encoder, WeightsInfo
from .preprocess import Preprocess
from .weights import (load_strict, random_weights, tensors_sha256, unavailable, weights_cache_dirs,
                      weights_from_file)

__all__ = ["timm_encoder", "torchvision_encoder", "open_clip_encoder", "is_download_failure", "offline_without_network"]

_NETWORK_MODULES = ("httpx", "requests", "urllib3", "huggingface_hub", "http", "urllib", "socket", "ssl")


def is_download_failure(exc: BaseException) -> bool:
    """Network, offline-mode and missing-cache errors, as the hubs and HTTP libraries raise them."""
    seen = 0
    while exc is not None and seen < 5:
        module = type(exc).__module__.split(".")[0]
        if isinstance(exc, (OSError, ConnectionError, TimeoutError)) or module in _NETWORK_MODULES:
            return True
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return False


@contextmanager
def offline_without_network(host: str = "huggingface.co"):
    """When ``host`` does not resolve (no network), put the Hugging Face hub in offline
    mode for the block: cached weights still load, missing ones fail at once instead of
    after the hub's retries (about 45 s a file). Yields a note for the error message."""
    try:
        socket.getaddrinfo(host, 443)
    except OSError:
        pass
    else:
        yield ""
        return
    try:
        from huggingface_hub import constants
    except ImportError:
        yield f"no network: {host} does not resolve"
        return
    before = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = True
    try:
        yield f"no network: {host} does not resolve"
    finally:
        constants.HF_HUB_OFFLINE = before


def _need(package: str, pip_name: str, name: str):
    import importlib

    try:
        return importlib.import_module(package)
    except ImportError as exc:
        raise MissingDependencyError(f"encoder {name} needs the {pip_name} package ({exc}); install it: "
                                     f"pip install {pip_name}, or use the default encoder efficientnet_lite0") from None


def _no_such_model(zoo: str, arch: str, known: list[str]) -> ValueError:
    close = difflib.get_close_matches(arch, known, n=3, cutoff=0.6)
    hint = f"; close names: {', '.join(f'{zoo}:{c}' for c in close)}" if close else ""
    return ValueError(f"{zoo} has no model {arch!r}{hint}")


def _host(hf_hub_id: str | None, url: str | None) -> str:
    if hf_hub_id or not url:
        return "huggingface.co"
    from urllib.parse import urlparse

    return urlparse(url).hostname or "huggingface.co"


def _where(kind: str) -> str:
    return str(weights_cache_dirs()[kind])


# ---------------------------------------------------------------------------- timm
def timm_encoder(arch: str, weights=None, pretrained: bool = True) -> Encoder:
    """``timm:<arch>``: ``timm.create_model(arch, pretrained=True)``, classifier removed
    (``num_classes=0``: the pooled features), preprocessing from timm's data config at
    the model's evaluation size (``use_test_size``)."""
    timm = _need("timm", "timm", f"timm:{arch}")
    name = f"timm:{arch}"
    if not timm.is_model(arch):
        raise _no_such_model("timm", arch, timm.list_models())
    if weights is not None:
        model = timm.create_model(arch, pretrained=False)
        state, info = weights_from_file(weights)
        classifier = model.pretrained_cfg.get("classifier") or "classifier"
        heads = classifier if isinstance(classifier, (list, tuple)) else (classifier,)
        load_strict(model, state, name, str(info.source), optional=tuple(f"{h}." for h in heads))
    elif pretrained:
        if not timm.is_model_pretrained(arch):
            raise ValueError(f"timm has no pretrained weights for {arch}; pass a weights file with "
                             f"{option('--encoder-weights', 'FILE')} or choose another model")
        cfg = timm.models.get_pretrained_cfg(arch)
        hub = getattr(cfg, "hf_hub_id", None)
        try:
            with offline_without_network(_host(hub, getattr(cfg, "url", None))) as note:
                model = timm.create_model(arch, pretrained=True)
        except Exception as exc:
            if not is_download_failure(exc):
                raise
            what = (f"timm's {arch} state dict (the model.safetensors or pytorch_model.bin of the Hugging Face "
                    f"repository {hub})" if hub else f"timm's {arch} state dict ({getattr(cfg, 'url', '')})")
            raise unavailable(name, exc, _where("Hugging Face hub" if hub else "torch hub"), what, note) from None
        info = WeightsInfo(source=f"timm:{model.pretrained_cfg.get('hf_hub_id') or arch}",
                           sha256=tensors_sha256(model.state_dict()), sha256_of="tensors")
    else:
        model = timm.create_model(arch, pretrained=False)
        info = random_weights(model)
    model.reset_classifier(0)
    cfg = timm.data.resolve_data_config({}, model=model, use_test_size=True)
    if cfg.get("crop_mode", "center") != "center":
        warnings.warn(f"timm's {arch} evaluates with crop_mode={cfg['crop_mode']!r}; conr resizes and centre-crops "
                      f"(crop_mode='center'), so its features differ slightly from timm's evaluation", stacklevel=3)
    prep = Preprocess(size=int(cfg["input_size"][-1]), mean=tuple(cfg["mean"]), std=tuple(cfg["std"]),
                      interpolation=cfg.get("interpolation", "bicubic"), crop_fraction=float(cfg.get("crop_pct", 1.0)))
    return Encoder(name=name, network=model, dim=int(model.num_features), preprocess=prep, weights=info,
                   architecture=name)


# ---------------------------------------------------------------------- torchvision
def _drop_classifier(model: nn.Module, n_classes: int) -> int:
    """Replace the last Linear layer with ``n_classes`` outputs by an identity; its input width."""
    last = None
    for path, module in model.named_modules():
        if isinstance(module, nn.Linear) and module.out_features == n_classes:
            last = (path, module)
    if last is None:
        raise ValueError(f"cannot find the classifier (a Linear layer with {n_classes} outputs) of "
                         f"{type(model).__name__}; this torchvision model is not supported as an encoder")
    path, linear = last
    parent_path, _, attr = path.rpartition(".")
    setattr(model.get_submodule(parent_path) if parent_path else model, attr, nn.Identity())
    return int(linear.in_features)


def torchvision_encoder(arch: str, weights=None, pretrained: bool = True) -> Encoder:
    """``torchvision:<arch>``: the model with its DEFAULT weights; the preprocessing is
    those weights' transforms (resize, centre crop, mean, std, interpolation)."""
    tv = _need("torchvision", "torchvision", f"torchvision:{arch}")
    name = f"torchvision:{arch}"
    classification = tv.models.list_models(module=tv.models)
    if arch not in classification:
        raise _no_such_model("torchvision", arch, classification)
    default = tv.models.get_model_weights(arch).DEFAULT
    model = tv.models.get_model(arch, weights=None)
    if weights is not None:
        state, info = weights_from_file(weights)
        load_strict(model, state, name, info.source)
    elif pretrained:
        try:
            with offline_without_network(_host(None, default.url)) as note:
                state: dict[str, Tensor] = default.get_state_dict(progress=False, check_hash=True)
        except Exception as exc:
            if not is_download_failure(exc):
                raise
            file = default.url.rsplit("/", 1)[-1]
            raise unavailable(name, exc, _where("torch hub"),
                              f"torchvision's {file} (from {default.url}; or put that file into the cache folder)",
                              note) from None
        load_strict(model, state, name, default.url)
        info = WeightsInfo(source=f"torchvision:{default}", sha256=tensors_sha256(state), sha256_of="tensors")
    else:
        info = random_weights(model)
    dim = _drop_classifier(model, len(default.meta["categories"]))
    t = default.transforms()
    crop, resize = int(t.crop_size[0]), int(t.resize_size[0])
    prep = Preprocess(size=crop, mean=tuple(t.mean), std=tuple(t.std), interpolation=t.interpolation.value,
                      crop_fraction=crop / resize)
    return Encoder(name=name, network=model, dim=dim, preprocess=prep, weights=info, architecture=name)


# ------------------------------------------------------------------------ open_clip
class _ImageTower(nn.Module):
    """OpenCLIP's visual model alone: images -> the CLIP embedding (projection included)."""

    def __init__(self, visual: nn.Module):
        super().__init__()
        self.visual = visual

    def forward(self, x: Tensor) -> Tensor:
        out = self.visual(x)
        return out[0] if isinstance(out, tuple) else out


def _clip_preprocess(visual: nn.Module, open_clip) -> Preprocess:
    cfg = dict(getattr(visual, "preprocess_cfg", None) or {})
    size = cfg.get("size") or getattr(visual, "image_size", 224)
    size = size[-1] if isinstance(size, (tuple, list)) else size
    mean = cfg.get("mean") or getattr(visual, "image_mean", None) or open_clip.OPENAI_DATASET_MEAN
    std = cfg.get("std") or getattr(visual, "image_std", None) or open_clip.OPENAI_DATASET_STD
    return Preprocess(size=int(size), mean=tuple(mean), std=tuple(std),
                      interpolation=cfg.get("interpolation", "bicubic"), crop_fraction=1.0)


def open_clip_encoder(spec: str, weights=None, pretrained: bool = True) -> Encoder:
    """``open_clip:<arch>/<tag>``: an OpenCLIP model's image tower; the text tower is
    dropped. OpenCLIP resizes the shorter side to the input size and centre-crops
    (crop fraction 1.0)."""
    open_clip = _need("open_clip", "open_clip_torch", f"open_clip:{spec}")
    arch, _, tag = spec.partition("/")
    name = f"open_clip:{spec}"
    if arch not in open_clip.list_models():
        raise _no_such_model("open_clip", arch, open_clip.list_models())
    model = open_clip.create_model(arch, pretrained=None)
    if weights is not None:
        state, info = weights_from_file(weights)
        load_strict(model, state, name, info.source)
    elif pretrained:
        tags = open_clip.list_pretrained_tags_by_model(arch)
        if tag not in tags:
            raise ValueError(f"open_clip:{arch} needs a pretrained tag: open_clip:{arch}/TAG with TAG one of "
                             f"{', '.join(tags) or '(none)'}")
        try:
            with offline_without_network() as note:
                path = open_clip.download_pretrained(open_clip.get_pretrained_cfg(arch, tag))
        except Exception as exc:
            if not is_download_failure(exc):
                raise
            raise unavailable(name, exc, _where("Hugging Face hub"),
                              f"the OpenCLIP checkpoint of {arch} / {tag} (open_clip_pytorch_model.bin or "
                              f".safetensors)", note) from None
        state, info = weights_from_file(path)
        load_strict(model, state, name, str(path))
        info = WeightsInfo(source=f"open_clip:{arch}/{tag}", sha256=info.sha256)
    else:
        info = random_weights(model)
    visual = model.visual
    dim = int(getattr(visual, "output_dim", 0) or model.text_projection.shape[-1])
    return Encoder(name=name, network=_ImageTower(visual), dim=dim, preprocess=_clip_preprocess(visual, open_clip),
                   weights=info, architecture=name)
