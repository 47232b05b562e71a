"""Image files -> encoder features, with decoding overlapped with the network.

Decoding a JPEG and resizing it (PIL, which releases the GIL) runs in a pool of
threads that works up to two batches ahead, while the main thread runs the network on
the current batch, so the two share the cores instead of taking turns. That pays when
decoding costs something: 1024 px JPEGs gave 45 images/s with two decoding threads
against 39 decoding in the calling thread (2 cores, ONNX Runtime); CIFAR's 32 px files
decode in about 1 ms and the overlap gains nothing measurable there. Large JPEGs are
decoded at a reduced scale first (:func:`decode_for_encoder`: 2.6x faster decoding of
1024 px files). The workers hand over uint8 arrays; normalisation happens inside the
encoder's call.

On a CPU with ``onnxruntime`` installed the network runs under ONNX Runtime
(conr/encoders/onnx_runtime.py: 2.7x the images per second of eager channels-last
PyTorch for EfficientNet-Lite0 on 2 cores), checked against PyTorch before use;
otherwise in PyTorch with channels-last and ``torch.inference_mode`` (bfloat16
autocast on a GPU). The PyTorch thread count is set for the call and restored after.

The features are rounded to float16 whether or not they come from the cache
(conr/encoders/cache.py stores float16), so a run that finds its features cached and
one that computes them see the same numbers. Under ``torchrun`` the files are split
over the ranks and the features gathered (conr/encoders/shard.py); rank 0 writes
the cache entry and every rank returns all rows.
"""
from __future__ import annotations

import os
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import NamedTuple, Sequence

import numpy as np
import torch
from torch import Tensor

from ..data.folder import check_on_bad_image
from ..errors import BadImageError
from ..options import option
from ..threads import torch_threads
from .cache import export_cache_dir, feature_cache_file, feature_cache_key, read_features, write_features
from .encoder import Encoder
from .onnx_runtime import onnx_encoder
from .shard import broadcast_object, broadcast_rows, gather_lists, gather_rows, shard_bounds, world

__all__ = ["Extracted", "extract_features", "decode_for_encoder", "BACKENDS"]

BACKENDS = ("auto", "torch", "onnx")
PREFETCH_BATCHES = 2


class Extracted(NamedTuple):
    """What :func:`extract_features` returns. The rows follow the given paths in order,
    less the ``skipped`` ones (path, reason); :meth:`kept_paths` lists the rows' files."""

    features: Tensor
    thumbnails: Tensor | None
    skipped: list[tuple[str, str]]

    def kept_paths(self, paths: Sequence[str | Path]) -> list[str]:
        dropped = {p for p, _ in self.skipped}
        return [str(p) for p in paths if str(p) not in dropped]


def decode_for_encoder(path: str | Path, preprocess, thumbnail: int | None = None):
    """One file -> (uint8 [3, S, S], uint8 [3, t, t] thumbnail or None).

    A JPEG at least four times the resize target is decoded at a reduced scale (the
    decoder's DCT scaling, a power of two that keeps the shorter side at twice the
    target or more) before the exact resize: a 1024 px JPEG decodes 2.6x faster, a
    12-megapixel photo more, and the pixels move by 0.2 of 255 levels on average on
    smooth images (2 on pure noise, the worst case). Turned upright by its EXIF tag first."""
    from PIL import Image

    from ..data.folder import upright

    with Image.open(path) as im:
        if im.format == "JPEG":
            target = 2 * preprocess.resize_to
            im.draft("RGB", (target, target))
        rgb = preprocess.resize_rgb(upright(im))
    image = np.asarray(rgb, dtype=np.uint8).transpose(2, 0, 1).copy()
    if not thumbnail:
        return image, None
    small = rgb.resize((int(thumbnail), int(thumbnail)), Image.BILINEAR)
    return image, np.asarray(small, dtype=np.uint8).transpose(2, 0, 1).copy()


def _decode_safely(path: str, preprocess, thumbnail: int | None):
    try:
        return (*decode_for_encoder(path, preprocess, thumbnail), None)
    except Exception as exc:  # PIL raises many types for broken files
        return None, None, f"{type(exc).__name__}: {exc}"


def _where(paths: Sequence[str]) -> str:
    try:
        return os.path.commonpath([os.path.dirname(os.path.abspath(p)) for p in paths])
    except ValueError:  # different drives
        return "the given paths"


def _bad_image_error(bad: list[tuple[str, str]], where: str, stopped: bool) -> BadImageError:
    listing = "\n  ".join(f"{p} ({why})" for p, why in bad[:20])
    more = " (stopped at the first batch that had any)" if stopped else ""
    return BadImageError(f"{len(bad)} unreadable image file(s) under {where}{more}:\n  {listing}\n"
                         f"remove or repair them, or pass {option('data.on_bad_image', 'skip')} to leave them out")


def _decoded_batches(paths: list[str], preprocess, thumbnail, batch_size: int, workers: int):
    """Per batch: (list of (image, thumb, error) per file). Decoding runs ``workers``
    threads up to :data:`PREFETCH_BATCHES` batches ahead; 0 workers decode in this thread."""
    starts = range(0, len(paths), batch_size)
    if workers <= 0:
        for s in starts:
            yield [_decode_safely(p, preprocess, thumbnail) for p in paths[s:s + batch_size]]
        return
    pool = ThreadPoolExecutor(workers, thread_name_prefix="conr-decode")
    queue: deque = deque()
    todo = iter(starts)
    try:
        for _ in range(PREFETCH_BATCHES + 1):
            s = next(todo, None)
            if s is not None:
                queue.append([pool.submit(_decode_safely, p, preprocess, thumbnail) for p in paths[s:s + batch_size]])
        while queue:
            batch = [f.result() for f in queue.popleft()]
            s = next(todo, None)
            if s is not None:
                queue.append([pool.submit(_decode_safely, p, preprocess, thumbnail) for p in paths[s:s + batch_size]])
            yield batch
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _extract_local(paths: list[str], runner, preprocess, batch_size: int, workers: int, thumbnail,
                   on_bad_image: str, fail_fast: bool, bar):
    """Features (and thumbnails) of the readable files among ``paths``, in order, and the
    unreadable ones as (path, reason)."""
    feats, thumbs, bad = [], [], []
    pin = getattr(runner, "device", torch.device("cpu")).type == "cuda"
    offset = 0
    for batch in _decoded_batches(paths, preprocess, thumbnail, batch_size, workers):
        names = paths[offset:offset + len(batch)]
        offset += len(batch)
        bad_here = [(p, err) for p, (_, _, err) in zip(names, batch) if err is not None]
        bad.extend(bad_here)
        if bad_here and on_bad_image == "fail" and fail_fast:
            raise _bad_image_error(bad_here, _where(paths), stopped=True)
        good = [(image, th) for image, th, err in batch if err is None]
        if good:
            images = torch.from_numpy(np.stack([g[0] for g in good]))
            feats.append(runner.features(images.pin_memory() if pin else images).float())
            if thumbnail:
                thumbs.append(torch.from_numpy(np.stack([g[1] for g in good])))
        bar.update(len(batch))
    return feats, thumbs, bad


def _runner(encoder: Encoder, backend: str, threads: int):
    """The object whose ``features`` the extraction calls: the encoder itself or its
    ONNX Runtime twin."""
    if backend not in BACKENDS:
        raise ValueError(f"backend={backend!r}: choose one of {', '.join(BACKENDS)}")
    if backend == "torch" or encoder.device.type != "cpu":
        return encoder
    runner = onnx_encoder(encoder, export_cache_dir(), threads)
    if runner is None and backend == "onnx":
        from ..errors import MissingDependencyError

        raise MissingDependencyError(f"backend='onnx' but encoder {encoder.name} cannot run under ONNX Runtime "
                                     f"(is onnxruntime installed? pip install \"conr[fast]\"); use backend='auto'")
    return runner or encoder


def _cache_target(cache, paths: list[str], encoder: Encoder) -> tuple[Path | None, str]:
    key = feature_cache_key(paths, encoder.spec)
    if cache is True:
        return feature_cache_file(key), key
    if cache in (False, None):
        return None, key
    return Path(cache).expanduser(), key


def extract_features(paths: Sequence[str | Path], encoder: Encoder, batch_size: int | None = None,
                     workers: int | None = None, progress: bool = True, thumbnails: int | None = None,
                     on_bad_image: str = "skip", dtype: torch.dtype = torch.float32, backend: str = "auto",
                     threads: int | None = None, cache: bool | str | Path = True) -> Extracted:
    """The features of the image files ``paths`` under ``encoder``.

    batch_size: images per network call (default 64 on a CPU, 256 on a GPU).
    workers: decoding threads (default: the number of CPU cores, at most 4; 0 decodes in
        the calling thread, taking turns with the network).
    thumbnails: side t of a uint8 [N, 3, t, t] thumbnail of each image (the encoder's
        centre crop, scaled down) made in the same pass, for cluster grids; None: none.
    on_bad_image: "skip" leaves unreadable files out (listed in ``skipped``), "fail"
        raises BadImageError (at the first batch with one; under torchrun at the end).
    dtype: of the returned features (their values are float16-exact, see the module).
    backend: "auto" (ONNX Runtime on a CPU when installed, else PyTorch), "torch", "onnx".
    threads: intra-op threads for the network (default: ``torch.get_num_threads()``);
        the caller's PyTorch setting is restored afterwards.
    cache: True: the default cache folder (conr/encoders/cache.py); a path: that file
        (e.g. ``run/features.npz``); False: no cache.
    """
    check_on_bad_image(on_bad_image)
    paths = [str(p) for p in paths]
    if not paths:
        raise ValueError("no image files to extract features from")
    rank, size = world()
    threads = int(threads or torch.get_num_threads())
    file, key = _cache_target(cache, paths, encoder)
    hit = read_features(file, key, thumbnails) if file is not None and rank == 0 else None
    if broadcast_object(hit is not None):
        features = broadcast_rows(hit[0] if rank == 0 else None)
        thumbs = broadcast_rows(hit[1] if rank == 0 else None) if thumbnails else None
        # the entry names its skipped files resolved; the rows are told apart by the caller's spelling
        spelled = {str(Path(p).resolve()): p for p in paths}
        skipped = [(spelled.get(p, p), why) for p, why in broadcast_object(hit[2] if rank == 0 else None)]
    else:
        features, thumbs, skipped = _extract_all(paths, encoder, batch_size, workers, progress, thumbnails,
                                                 on_bad_image, backend, threads, rank, size)
        if file is not None and rank == 0 and len(features):
            dropped = {p for p, _ in skipped}
            try:
                write_features(file, key, features, thumbs, [(str(Path(p).resolve()), why) for p, why in skipped],
                               encoder.spec, [p for p in paths if p not in dropped])
            except OSError:
                if cache is not True:
                    raise  # the file the caller named must be written; the default cache may fail quietly
    if skipped and on_bad_image == "fail":
        raise _bad_image_error(skipped, _where(paths), stopped=False)
    if not len(features):
        raise ValueError(f"none of the {len(paths)} image files under {_where(paths)} could be read "
                         f"(first: {skipped[0][0]}: {skipped[0][1]})")
    return Extracted(features.to(dtype), thumbs, list(skipped))


def _extract_all(paths, encoder, batch_size, workers, progress, thumbnails, on_bad_image, backend, threads,
                 rank, size):
    """Extract this rank's share and gather all ranks' rows: (float16 features, thumbs, skipped)."""
    from tqdm.auto import tqdm

    start, stop = shard_bounds(len(paths), rank, size)
    mine = paths[start:stop]
    if batch_size is None:
        batch_size = 256 if encoder.device.type == "cuda" else 64
    if workers is None:
        workers = min(4, os.cpu_count() or 1)
    with torch_threads(threads):
        runner = _runner(encoder, backend, threads)
        with tqdm(total=len(mine), desc=f"features ({encoder.name})", unit="img", mininterval=1.0,
                  disable=not progress or rank != 0, dynamic_ncols=True) as bar:
            feats, thumbs, bad = _extract_local(mine, runner, encoder.preprocess, int(batch_size), int(workers),
                                                thumbnails, on_bad_image, size == 1, bar)
    features = torch.cat(feats) if feats else torch.zeros(0, encoder.dim)
    features = gather_rows(features).to(torch.float16)
    thumb = None
    if thumbnails:
        t = int(thumbnails)
        thumb = gather_rows(torch.cat(thumbs) if thumbs else torch.zeros(0, 3, t, t, dtype=torch.uint8))
    return features, thumb, gather_lists(bad)
