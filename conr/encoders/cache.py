"""Extracted features kept on disk, so a second run over the same images skips the network.

An entry is one ``.npz`` file: the features as float16 (half the bytes; pooled CNN
features lose nothing a clustering can see at 11 bits of mantissa), the thumbnails
when they were made, the skipped files with their reasons, the rows' file paths, the
encoder's spec as JSON (so a copy in a run folder says what made it) and the key.

The key is a hash of the encoder's spec (name, weights sha256, preprocessing) and of
every file's resolved path, size and modification time: touching, replacing or
renaming an image, or choosing other weights, misses. Entries live in
``$CONR_CACHE_DIR/features/`` (default ``~/.cache/conr/features/``, the folder
rule of conr/budget_plans.py), one per key; ``CONR_CACHE=off`` (the switch of the
decoded-image cache, conr/data/folder.py) turns the default folder off. An explicit
file (``run/features.npz``) holds one entry and is rewritten when its key differs.
Writes are atomic (conr/io.py): a killed run leaves the old entry or none, never half.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import Tensor

from ..io import atomic_write_bytes

__all__ = ["FORMAT", "cache_root", "feature_cache_dir", "export_cache_dir", "feature_cache_key", "feature_cache_file",
           "read_features", "write_features"]

FORMAT = 2  # bump when the entry's layout or the extraction's numbers change (2: photos turned upright by EXIF)


def cache_root() -> Path:
    """``$CONR_CACHE_DIR`` (default ``$XDG_CACHE_HOME/conr`` or ``~/.cache/conr``)."""
    root = os.environ.get("CONR_CACHE_DIR")
    if not root:
        root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "conr"
    return Path(root)


def feature_cache_dir() -> Path | None:
    """``<cache root>/features``; None when ``CONR_CACHE`` is off."""
    if os.environ.get("CONR_CACHE", "").lower() in ("off", "0", "none", "false"):
        return None
    return cache_root() / "features"


def export_cache_dir() -> Path:
    """``<cache root>/onnx``: the ONNX exports of the encoders (conr/encoders/onnx_runtime.py),
    a temporary folder when ``CONR_CACHE`` is off."""
    if feature_cache_dir() is None:
        import tempfile

        return Path(tempfile.gettempdir()) / "conr-onnx"
    return cache_root() / "onnx"


def feature_cache_key(paths: Sequence[str | Path], spec: dict, thumbnails: int | None = None) -> str:
    """A hash of the encoder spec and of the files' paths, sizes and modification times.
    (``thumbnails`` is not part of it: an entry with thumbnails serves a call without.)"""
    h = hashlib.sha256(json.dumps({"format": FORMAT, "encoder": spec}, sort_keys=True).encode())
    for p in paths:
        p = Path(p)
        try:
            st = p.stat()
            h.update(f"{p.resolve()}|{st.st_size}|{st.st_mtime_ns}\n".encode())
        except OSError:  # a missing file is skipped by the extraction; its absence is part of the key
            h.update(f"{p.absolute()}|missing\n".encode())
    return h.hexdigest()[:32]


def feature_cache_file(key: str, folder: str | Path | None = None) -> Path | None:
    """The default entry for ``key`` (None when the cache is off)."""
    folder = Path(folder) if folder is not None else feature_cache_dir()
    return None if folder is None else folder / f"features-{key}.npz"


def read_features(path: str | Path, key: str, thumbnails: int | None = None):
    """(features float16 [N, D], thumbnails uint8 [N, 3, t, t] or None, skipped) from
    ``path`` when it holds the entry for ``key`` (with thumbnails of side ``thumbnails``
    when asked for), else None. A damaged file reads as a miss."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            if str(z["key"]) != key:
                return None
            thumbs = z["thumbnails"] if "thumbnails" in z.files else None
            if thumbnails and (thumbs is None or thumbs.shape[-1] != int(thumbnails)):
                return None
            features = torch.from_numpy(z["features"].astype(np.float16, copy=False))
            skipped = [tuple(s.split("\t", 1)) for s in z["skipped"].tolist()]
            thumbs = torch.from_numpy(thumbs) if thumbnails and thumbs is not None else None
    except (OSError, ValueError, KeyError, EOFError):  # np.load's errors for a torn or foreign file
        return None
    return features, thumbs, skipped


def write_features(path: str | Path, key: str, features: Tensor, thumbnails: Tensor | None,
                   skipped: list[tuple[str, str]], spec: dict, paths: Sequence[str | Path]) -> Path:
    """Write one entry atomically; ``paths`` are the files of the rows, in order."""
    arrays = {"key": np.array(key), "features": features.to(torch.float16).cpu().numpy(),
              "skipped": np.array(["\t".join(s) for s in skipped], dtype=str),
              "paths": np.array([str(p) for p in paths], dtype=str),
              "encoder": np.array(json.dumps(spec, sort_keys=True))}
    if thumbnails is not None:
        arrays["thumbnails"] = thumbnails.cpu().numpy()
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return atomic_write_bytes(path, buf.getvalue())
