"""Where an encoder's weights come from, and reading a weights file without running it.

A ``.pth`` / ``.pt`` / ``.bin`` file is a pickle, and unpickling can call any function
the file names (``os.system`` included). :func:`read_state_dict` therefore loads with
``torch.load(weights_only=True)``, whose unpickler builds only tensors and plain
containers and refuses anything else *before* calling it; a refused file is a
:class:`UnsafeWeightsError` saying how to re-save it. ``.safetensors`` files hold no
code at all and are read with the safetensors package.

The fingerprint of the weights (:func:`file_sha256`, :func:`tensors_sha256`) goes into
the encoder's spec, so a feature cache or a checkpoint knows which weights made it.
"""
from __future__ import annotations

import hashlib
import os
import pickle
from pathlib import Path

import torch
from torch import Tensor, nn

from ..errors import MissingDependencyError
from ..options import option
from .encoder import WeightsInfo

__all__ = ["EncoderUnavailableError", "UnsafeWeightsError", "read_state_dict", "file_sha256", "tensors_sha256",
           "weights_cache_dirs", "unavailable", "load_strict", "weights_from_file", "random_weights"]

WEIGHTS_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt", ".safetensors")
_WRAPPERS = ("state_dict", "model", "model_state_dict", "module")  # checkpoints that hold the state dict inside


class EncoderUnavailableError(MissingDependencyError):
    """A pretrained encoder's weights are neither cached nor downloadable (no network,
    ``HF_HUB_OFFLINE=1``); the message names the cache folder and ``--encoder-weights``."""


class UnsafeWeightsError(ValueError):
    """A weights file that is not plain tensors (a pickle that would run code); refused unread."""


def file_sha256(path: str | Path, chunk: int = 2**20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def tensors_sha256(state: dict[str, Tensor]) -> str:
    """A fingerprint of a state dict's names, dtypes, shapes and bytes (for weights that
    came from a hub and have no file of conr's own to hash)."""
    h = hashlib.sha256()
    for key in sorted(state):
        t = state[key].detach().cpu().contiguous()
        h.update(f"{key}|{t.dtype}|{tuple(t.shape)}\n".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _unwrap(obj, path: Path) -> dict[str, Tensor]:
    for _ in range(3):  # {"state_dict": {...}}, {"model": {...}} as training scripts save them
        if isinstance(obj, dict) and not any(isinstance(v, Tensor) for v in obj.values()):
            inner = next((obj[k] for k in _WRAPPERS if isinstance(obj.get(k), dict)), None)
            if inner is None:
                break
            obj = inner
    if not isinstance(obj, dict) or not obj:
        raise ValueError(f"{path} holds a {type(obj).__name__}, not a state dict (names -> tensors); save one "
                         f"with torch.save(model.state_dict(), FILE)")
    others = [k for k, v in obj.items() if not isinstance(v, Tensor)]
    if others:
        raise ValueError(f"{path} is not a plain state dict: {len(others)} entries are not tensors "
                         f"({', '.join(map(str, others[:5]))}); save one with torch.save(model.state_dict(), FILE)")
    if all(k.startswith("module.") for k in obj):  # saved from DistributedDataParallel
        obj = {k[len("module."):]: v for k, v in obj.items()}
    return obj


def read_state_dict(path: str | Path) -> dict[str, Tensor]:
    """A local weights file -> {name: tensor} on the CPU, never running code from it."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"encoder weights file {path} does not exist; --encoder-weights takes a state dict "
                                f"file ({', '.join(WEIGHTS_SUFFIXES)})")
    if path.suffix == ".safetensors":
        try:
            from safetensors.torch import load_file
        except ImportError:
            raise MissingDependencyError(f"{path} is a .safetensors file, which needs the safetensors package: "
                                         f"pip install safetensors") from None
        return _unwrap(load_file(str(path), device="cpu"), path)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()
        raise UnsafeWeightsError(
            f"refused to load {path}: it is not plain tensors but a pickle that names code to run "
            f"({first[-1] if first else type(exc).__name__}); conr reads weights only with "
            f"torch.load(weights_only=True). If you trust the file, re-save its state dict: "
            f"torch.save(torch.load(FILE, weights_only=False).state_dict(), 'weights.pth') (or as .safetensors), "
            f"and pass that") from None
    except (RuntimeError, EOFError, OSError) as exc:
        raise ValueError(f"cannot read {path} as a weights file ({type(exc).__name__}: {exc}); --encoder-weights "
                         f"takes a state dict saved with torch.save or safetensors") from None
    return _unwrap(obj, path)


def weights_cache_dirs() -> dict[str, Path]:
    """The folders a download would have filled: torch hub's checkpoints (torchvision,
    timm's URL weights) and the Hugging Face hub cache (timm, open_clip)."""
    dirs = {"torch hub": Path(torch.hub.get_dir()) / "checkpoints"}
    try:
        from huggingface_hub import constants

        dirs["Hugging Face hub"] = Path(constants.HF_HUB_CACHE)
    except ImportError:
        dirs["Hugging Face hub"] = Path(os.environ.get("HF_HOME", Path.home() / ".cache" / "huggingface")) / "hub"
    return dirs


def unavailable(name: str, exc: BaseException, where: str | Path, what_file: str,
                note: str = "") -> EncoderUnavailableError:
    """The error for weights that could not be fetched: names the cache ``where`` they
    would live and the ``--encoder-weights`` way round (``note``: why, when known)."""
    reason = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}".rstrip(": ")
    if not note and os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes"):
        note = "HF_HUB_OFFLINE is set"
    why = f"{note}; {reason}" if note else reason
    why = why if len(why) <= 300 else why[:299] + "…"
    return EncoderUnavailableError(
        f"the weights of encoder {name} are not in the cache {where} and could not be downloaded "
        f"({why}); run once with network to fill the cache, copy the files there, or pass "
        f"--encoder-weights FILE with {what_file}; the default encoder efficientnet_lite0 needs no download")


def load_strict(model: nn.Module, state: dict[str, Tensor], name: str, source: str,
                optional: tuple[str, ...] = ()) -> None:
    """``model.load_state_dict(state, strict=True)`` with an error that lists the keys.

    Keys starting with one of ``optional`` (a classifier the features do not use) may be
    missing from ``state``; anything else missing or left over is a ValueError."""
    own = model.state_dict()
    missing = [k for k in own if k not in state and not k.startswith(optional)]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k} {tuple(state[k].shape)} (the network has {tuple(own[k].shape)})" for k in state
              if k in own and state[k].shape != own[k].shape]
    if missing or unexpected or shapes:
        def listing(keys):
            return ", ".join(keys[:8]) + (f" and {len(keys) - 8} more" if len(keys) > 8 else "")
        parts = [f"missing {len(missing)}: {listing(missing)}" if missing else "",
                 f"unexpected {len(unexpected)}: {listing(unexpected)}" if unexpected else "",
                 f"wrong shape {len(shapes)}: {listing(shapes)}" if shapes else ""]
        raise ValueError(f"the weights in {source} do not fit encoder {name}'s network "
                         f"({'; '.join(p for p in parts if p)}); pass a state dict saved from this "
                         f"architecture with {option('--encoder-weights', 'FILE')}, or choose the encoder it "
                         f"belongs to")
    filled = {**{k: v for k, v in own.items() if k not in state}, **state}
    model.load_state_dict(filled, strict=True)


def weights_from_file(path: str | Path) -> tuple[dict[str, Tensor], WeightsInfo]:
    """A local weights file's state dict and its :class:`WeightsInfo` (file sha256)."""
    path = Path(path).expanduser().resolve()
    state = read_state_dict(path)
    return state, WeightsInfo(source=str(path), sha256=file_sha256(path), sha256_of="file")


def random_weights(model: nn.Module) -> WeightsInfo:
    """The :class:`WeightsInfo` of a network built without weights: source "random",
    with the tensors' sha256, so two random networks never share a cache entry."""
    return WeightsInfo(source="random", sha256=tensors_sha256(model.state_dict()), sha256_of="tensors")
