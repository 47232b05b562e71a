"""Any input the estimator accepts, as ImageData: a folder, an ImageData, a numpy array
or torch tensor of images (square-cropped and resized to the training size), or a list of
PIL images; and what the automatic settings need to know of an input before loading it."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from .survey import ImageSurvey, is_grey, pick_image_size, survey_files, survey_images
from .base import ImageData, resize_uint8
from .folder import pil_to_array, upright

__all__ = ["match_channels", "as_image_data", "survey_input", "square_crop", "resolve_device_type", "reload_folder"]


def resolve_device_type(device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(device).type



def survey_input(X) -> ImageSurvey | None:
    """What the settings rule needs to know about an input (None: not an input it can look at)."""
    if isinstance(X, (str, Path)):
        from .folder import images_under

        return survey_files(images_under(Path(X)))
    if isinstance(X, ImageData):
        return survey_images(X.images)
    if isinstance(X, (list, tuple)) and X and all(hasattr(im, "mode") and hasattr(im, "size") for im in X):
        return ImageSurvey(n_images=len(X), shorter_sides=[min(im.size) for im in X],
                           grey=all(is_grey(upright(im)) for im in X[:64]))
    return None


def as_image_data(X, image_size: int | None = None, on_bad_image: str = "skip",
                  device_type: str = "cpu", channels: int | None = None, image_shape=None) -> ImageData:
    """Any accepted input as ImageData at ``image_size`` (None: the automatic size).

    Accepted: a folder path (nested or flat, any image files), an ImageData, a
    uint8 / float numpy array or torch tensor N,H,W / N,H,W,C / N,C,H,W (C in 1, 3;
    floats in [0, 1] or [0, 255]) or flat N,D (rows unflattened by ``image_shape``, or
    D = H*H grey / 3*H*H colour planes, see :func:`conr.data.arrays.unflatten_images`),
    or a list of PIL images (or of H,W[,C] arrays).
    ``channels``: 1 or 3 for a folder (None: 1 when all its images are grey).
    """
    if isinstance(X, (str, Path)):
        from .folder import load_image_folder

        root = Path(X)
        if image_size is None or channels is None:
            survey = survey_input(root)
            image_size = image_size or pick_image_size(survey.native_size, device_type)
            channels = channels or (1 if survey.grey else 3)
        return load_image_folder(root, image_size, "auto", on_bad_image, channels=channels)
    if isinstance(X, ImageData):
        data = X
    elif isinstance(X, (np.ndarray, Tensor)):
        from .arrays import images_from_array, unflatten_images

        arr = X.detach().cpu().numpy() if isinstance(X, Tensor) else X
        if arr.size == 0 or (arr.ndim >= 1 and arr.shape[0] == 0):
            raise ValueError("no images: the input array is empty")
        arr = unflatten_images(arr, image_shape, "X")
        data = ImageData(images=torch.from_numpy(np.ascontiguousarray(images_from_array(arr, "X"))),
                         labels=torch.full((arr.shape[0],), -1, dtype=torch.long), name="array",
                         normalization="auto")
    elif isinstance(X, (list, tuple)):
        if len(X) == 0:
            raise ValueError("no images: the input list is empty")
        from PIL import Image

        items = []
        for i, item in enumerate(X):
            if isinstance(item, Image.Image):
                items.append(item)
            elif isinstance(item, (np.ndarray, Tensor)):
                a = item.detach().cpu().numpy() if isinstance(item, Tensor) else np.asarray(item)
                if a.dtype != np.uint8:
                    a = np.clip(np.rint(a * (255.0 if a.max() <= 1.0 else 1.0)), 0, 255).astype(np.uint8)
                if a.ndim == 3 and a.shape[0] in (1, 3) and a.shape[2] not in (1, 3):
                    a = a.transpose(1, 2, 0)
                items.append(Image.fromarray(a.squeeze(-1) if a.ndim == 3 and a.shape[2] == 1 else a))
            else:
                raise ValueError(f"X[{i}] is a {type(item).__name__}; a list must hold PIL images or arrays")
        if image_size is None:
            image_size = pick_image_size(int(np.median([min(im.size) for im in items])), device_type)
        arr = np.stack([pil_to_array(upright(im), image_size) for im in items])   # as a folder's files are read
        return ImageData(images=torch.from_numpy(arr), labels=torch.full((len(items),), -1, dtype=torch.long),
                         name="images", normalization="imagenet")
    else:
        raise ValueError(f"cannot cluster a {type(X).__name__}: give a folder path, an ImageData, a numpy "
                         f"array or tensor of images (N,H,W[,C] or N,C,H,W), or a list of PIL images")
    if len(data) == 0:
        raise ValueError("no images: the input holds none")
    size = image_size or pick_image_size(min(data.images.shape[-2:]), device_type)
    if data.images.shape[-2:] != (size, size):
        data = ImageData(images=resize_uint8(square_crop(data.images), size), labels=data.labels,
                         classes=list(data.classes), paths=data.paths, name=data.name,
                         normalization=data.normalization, skipped=list(data.skipped))
    return data


def reload_folder(root, size: int, like: ImageData, on_bad_image: str = "skip") -> ImageData:
    """The folder ``root`` loaded again at ``size``, with the channels and normalisation
    of ``like`` (its first load): what a run with ``data.image_size=size`` loads."""
    from .folder import load_image_folder

    data = load_image_folder(Path(root), size, "auto", on_bad_image, channels=like.channels)
    data.normalization = like.normalization
    return data


def square_crop(images: Tensor) -> Tensor:
    """Centre-crop non-square [N, C, H, W] images to their shorter side."""
    h, w = images.shape[-2:]
    if h == w:
        return images
    s = min(h, w)
    top, left = (h - s) // 2, (w - s) // 2
    return images[..., top:top + s, left:left + s]


def match_channels(images: Tensor, channels: int) -> Tensor:
    """uint8 images [N, C, H, W] with ``channels`` channels: grey repeated to RGB, or RGB
    averaged to grey, so any input works with a network trained on the other kind."""
    if images.shape[1] == channels:
        return images
    if channels == 3:
        return images.expand(-1, 3, -1, -1)
    return images.float().mean(dim=1, keepdim=True).round().to(torch.uint8)
