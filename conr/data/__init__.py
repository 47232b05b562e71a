"""Datasets (in-memory uint8 images + labels) and the batched augmentation."""
from __future__ import annotations

import torch

from .augment import AugmentConfig, BatchAugment, eval_transform
from .base import DATASETS, NORMALIZATION, ImageData, load_dataset, register_dataset
from . import digits as _digits  # noqa: F401  (registers digits)
from . import folder as _folder  # noqa: F401  (registers imagefolder)
from . import cifar as _cifar  # noqa: F401  (registers cifar10, cifar100, cifar20)
from . import stl10 as _stl10  # noqa: F401  (registers stl10)
from . import imagenet as _imagenet  # noqa: F401  (registers imagenet10, imagenet_dogs)
from . import tiny_imagenet as _tiny_imagenet  # noqa: F401  (registers tiny_imagenet)
from . import mnist as _mnist  # noqa: F401  (registers mnist, fashion_mnist)
from . import arrays as _arrays  # noqa: F401  (registers numpy)

__all__ = ["AugmentConfig", "BatchAugment", "eval_transform", "ImageData", "DATASETS", "NORMALIZATION",
           "load_dataset", "register_dataset", "build_data"]


def build_data(data_cfg, seed: int = 0) -> ImageData:
    """Load the dataset a DataConfig names, with its optional seeded subset: an
    in-memory ImageData, or a file-backed StreamData when ``data.in_memory`` says
    so (conr/data/stream.py)."""
    from .stream import stream_data

    data = stream_data(data_cfg)
    if data is None:
        extra = {} if data_cfg.channels == 3 else {"channels": data_cfg.channels}  # grey folders
        data = load_dataset(data_cfg.name, root=data_cfg.root, split=data_cfg.split,
                            image_size=data_cfg.image_size, download=data_cfg.download,
                            on_bad_image=data_cfg.on_bad_image, **extra)
    if data_cfg.normalization is not None:
        if data_cfg.normalization not in NORMALIZATION and data_cfg.normalization != "auto":
            raise ValueError(f"data.normalization={data_cfg.normalization!r}: choose auto or one of "
                             f"{sorted(NORMALIZATION)}")
        data.normalization = data_cfg.normalization
    if data_cfg.subset is not None and data_cfg.subset < len(data):
        g = torch.Generator().manual_seed(seed)
        data = data.subset(torch.randperm(len(data), generator=g)[: data_cfg.subset].sort().values)
    return data
