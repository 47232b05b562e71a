"""Photos through a pretrained encoder: which encoder a run uses, the encoder's features of
its images, and the fit on them.

Colour photos are what most users bring, and there a network trained from scratch in a
few CPU minutes loses to a frozen ImageNet encoder with plain k-means (docs/photos.md).
So ``encoder="auto"`` sends images to the embedded encoder (EfficientNet-Lite0, whose
weights ship with the install) except small grey ones, glyphs such as digits, letters and
prints, which keep the from-scratch path (:data:`GLYPH_SIDE`); :func:`choose_encoder` says
which and why, and the reason lands in config.yaml and the report like every automatic
setting.

The encoder's features of a folder are extracted once (batched, cached on disk by the
files and the encoder: a second run, ``--resume`` and ``--checkpoint`` read them back) and
the run is then CoNR on vectors (:func:`conr.auto.fit.fit_vectors`): an MLP head with
nearest-neighbour views, BYOL then CoNR, and the final stage with candidates on the
encoder's features and on the head's. The time budget counts the extraction.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..data.survey import ImageSurvey
from ..data.vectors import VectorData

__all__ = ["ENCODER_CHOICES", "GLYPH_SIDE", "choose_encoder", "thumbnail_side", "photo_data", "encode_images", "fit_photos"]

ENCODER_CHOICES = ("auto", "none")   # besides an encoder's name (conr.encoders.ENCODERS)
# grey images with a shorter side under this (px) are glyphs (digits, letters, prints): trained from scratch.
# ImageNet encoders see 224-px natural images; on the open suite (docs/photos.md) 8-px digits lost 16 points of
# ACC through the encoder, while 32-px grey faces (ORL) and objects (COIL-20) gained 9 and 2 and colour photos
# (CIFAR-10, 32 px) 20 or more; 28-px digits (MNIST's size) stay below it, where from scratch reaches 0.98.
GLYPH_SIDE = 32
GRID_BYTES = 200 * 2**20             # the cluster grids' thumbnails of a run hold at most about this much


def choose_encoder(requested: str | None, survey: ImageSurvey | None) -> tuple[str | None, str]:
    """(the encoder a run on these images uses, or None for training from scratch; why).

    ``auto``: grey images with a shorter side under :data:`GLYPH_SIDE` -> from scratch; any
    other images (colour photos, larger grey ones: faces, objects, scans) -> the embedded
    encoder; ``none``: from scratch; any other value: that encoder."""
    from ..encoders import DEFAULT_ENCODER

    requested = "auto" if requested is None else str(requested)
    if requested == "none":
        return None, "encoder=none: trained from scratch on the pixels"
    if requested != "auto":
        return requested, "chosen by the user"
    if survey is not None and survey.grey and survey.native_size < GLYPH_SIDE:
        return None, (f"small grey images ({survey.native_size} px, under {GLYPH_SIDE}: glyphs such as digits): "
                      f"trained from scratch on the pixels, which beats an ImageNet encoder there (docs/photos.md)")
    what = "colour images" if survey is None or not survey.grey else f"grey images of {survey.native_size} px"
    return DEFAULT_ENCODER, (f"{what}: the features of the embedded ImageNet encoder ({DEFAULT_ENCODER}), "
                             f"then CoNR on them (docs/photos.md)")


def thumbnail_side(n_images: int) -> int:
    """The side of the grids' thumbnails for N images: 64 px, smaller (a multiple of 8) where
    N thumbnails would pass :data:`GRID_BYTES`, never under 32."""
    side = int((GRID_BYTES / (3 * max(1, n_images))) ** 0.5)
    return int(min(64, max(32, 8 * (side // 8))))


@torch.no_grad()
def encode_images(images: torch.Tensor, encoder, batch_size: int = 64) -> np.ndarray:
    """Features of in-memory uint8 images [N, C, H, W] (grey repeated to RGB): resized as
    the encoder's preprocessing resizes a file (shorter side, centre crop), in batches."""
    pre = encoder.preprocess
    out = []
    for chunk in images.split(batch_size):
        x = chunk.float()
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        h, w = x.shape[-2:]
        scale = pre.resize_to / min(h, w)
        x = F.interpolate(x, size=(max(pre.size, round(h * scale)), max(pre.size, round(w * scale))),
                          mode="bicubic", antialias=True, align_corners=False)
        top, left = (x.shape[-2] - pre.size) // 2, (x.shape[-1] - pre.size) // 2
        x = x[..., top:top + pre.size, left:left + pre.size].clamp(0, 255).round().to(torch.uint8)
        out.append(encoder.features(x).float().cpu())
    return torch.cat(out).numpy()


def photo_data(X, encoder, *, on_bad_image: str = "skip", verbose: bool = False, cache: bool = True,
               log=print, n_clusters=None) -> VectorData:
    """The encoder's features of the images ``X`` as a VectorData (rows in the input's order,
    unreadable files left out and listed in ``skipped``; class sub-folders as ground truth;
    thumbnails for the grids). A folder goes through the extraction and its cache; in-memory
    images (an ImageData, arrays, PIL images) through :func:`encode_images`. ``n_clusters``:
    the K asked for, checked against the number of images before any extraction."""
    from ..data.convert import as_image_data
    from ..encoders import extract_features
    from .fit import check_k

    if isinstance(X, (str, Path)):
        from ..data.folder import index_image_folder

        root = Path(X)
        files, labels, classes = index_image_folder(root)
        if not files:
            raise ValueError(f"no image files under {root}; give the folder that holds your images")
        if n_clusters is not None:
            check_k(n_clusters, len(files))
        side = thumbnail_side(len(files))
        log(f"encoder {encoder.name}: features of {len(files)} images")
        out = extract_features(files, encoder, progress=verbose, thumbnails=side, on_bad_image=on_bad_image,
                               cache=cache)
        dropped = {p for p, _ in out.skipped}
        keep = [i for i, p in enumerate(files) if str(p) not in dropped]
        return VectorData(images=torch.from_numpy(np.ascontiguousarray(out.features, dtype=np.float32)),
                          labels=torch.as_tensor([labels[i] for i in keep], dtype=torch.long), classes=list(classes),
                          paths=[str(files[i]) for i in keep], name=root.name, skipped=list(out.skipped),
                          representation="encoder", thumbnails=torch.from_numpy(np.asarray(out.thumbnails)))
    data = as_image_data(X, None, on_bad_image)
    if n_clusters is not None:
        check_k(n_clusters, len(data))
    feats = encode_images(data.images, encoder)
    side = thumbnail_side(len(data))
    thumbs = F.interpolate(data.images.float(), size=(side, side), mode="bilinear", antialias=True,
                           align_corners=False).round().clamp(0, 255).to(torch.uint8)
    if thumbs.shape[1] == 1:
        thumbs = thumbs.expand(-1, 3, -1, -1).contiguous()
    return VectorData(images=torch.from_numpy(feats), labels=data.labels, classes=list(data.classes),
                      paths=data.paths, name=data.name, skipped=list(data.skipped), representation="encoder",
                      thumbnails=thumbs)


def fit_photos(X, params: dict, user: dict, *, started: float, encoder_name: str, encoder_reason: str,
               log=print, input_reason: str = "images"):
    """CoNR on the features of ``encoder_name`` for the images ``X``: load the encoder (with
    ``params['encoder_weights']`` where given), extract (the budget, counted from
    ``started``, includes it), then :func:`conr.auto.fit.fit_vectors`."""
    from ..encoders import load_encoder
    from .fit import fit_vectors

    encoder = load_encoder(encoder_name, weights=params.get("encoder_weights"))
    start = time.perf_counter()
    data = photo_data(X, encoder, on_bad_image=params["on_bad_image"], verbose=bool(params.get("verbose")), log=log,
                      n_clusters=params["n_clusters"])
    if len(data) == 0:
        raise ValueError("no images to cluster: every file was unreadable")
    root = str(Path(X).resolve()) if isinstance(X, (str, Path)) else None
    section = {"encoder": encoder_name, "encoder_weights": params.get("encoder_weights"), "root": root,
               "on_bad_image": params["on_bad_image"]}
    return fit_vectors(data, params, user, started=started, log=log,
                       input_reason=f"{input_reason}, through the encoder {encoder_name}",
                       encoder=dict(encoder.spec), more_reasons={"data.encoder": encoder_reason},
                       data_section=section, timings={"extraction": round(time.perf_counter() - start, 1)})
