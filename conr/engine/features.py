"""Features of images under the evaluation transform: L2-normalised, in chunks (a
tensor or streamed files), optionally averaged with the mirrored view, and sharded over
the processes of a multi-GPU run."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ..data import eval_transform
from ..data.stream import image_chunks
from .distributed import all_gather_nograd

__all__ = ["autocast", "features", "sharded_features"]


def autocast(cfg, device: torch.device):
    """bf16 autocast on CUDA with ``train.precision=bf16``; otherwise off."""
    if cfg.train.precision == "bf16" and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return torch.autocast(device.type, enabled=False)


@torch.no_grad()
def features(method, images: Tensor, cfg, device: torch.device, mean, std) -> Tensor:
    """L2-normalised features [N, D] of uint8 ``images`` (BatchNorm in eval mode; the
    method's training mode is put back)."""
    was_training = method.training
    method.eval()
    out = []
    for chunk in image_chunks(images, cfg.cluster.eval_batch_size, device):  # a tensor, or streamed files
        x = eval_transform(chunk, cfg.data.image_size, mean, std)
        if cfg.train.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast(cfg, device):
            f = method.features(x).float()
            if cfg.cluster.flip_average:  # the mean over a view the network was trained to equate
                f = F.normalize(f, dim=1) + F.normalize(method.features(torch.flip(x, dims=[3])).float(), dim=1)
            out.append(f)
    method.train(was_training)
    return F.normalize(torch.cat(out), dim=1)


@torch.no_grad()
def sharded_features(extract, images: Tensor, rank: int, world: int) -> Tensor:
    """``extract`` (images -> features) on every ``world``-th image from ``rank``, all-gathered
    back into the images' order: every rank must call it."""
    n = images.shape[0]
    per = -(-n // world)
    local = extract(images[rank::world])          # rank r: images r, r+W, r+2W, ...
    pad = local.new_zeros(per - local.shape[0], local.shape[1])
    gathered = all_gather_nograd(torch.cat([local, pad]))
    out = local.new_empty(n, local.shape[1])
    for r in range(world):
        count = len(range(r, n, world))
        out[r::world] = gathered[r * per:r * per + count]
    return out
