"""Batched image augmentation on tensors, on whatever device the images live.

The two views of the spec's pipeline (section 7) are drawn here for a whole batch
at once, each sample with its own random parameters drawn from the same
distributions as torchvision's transforms:

* RandomResizedCrop(size, scale, ratio): up to 10 tries of (area, log-ratio),
  first fitting box, else the central crop torchvision falls back to;
* optional small rotation (off in the spec; useful on digits);
* horizontal flip with p;
* ColorJitter(brightness, contrast, saturation, hue) applied with p, its four
  operations in a random order per sample;
* grayscale with p;
* optional Gaussian blur with sigma ~ U(sigma_min, sigma_max), applied with p;
* normalisation by the dataset's mean and std.

Images come in as uint8 [N, C, H, W] (C = 1 or 3) and leave as float32. Crop
and flip are one bilinear resampling (``grid_sample``) whose source coordinates
are clamped to each sample's crop box, exactly as ``F.interpolate`` (and so
torchvision's ``resized_crop``) treats the edges of the cropped image: the two
agree to float rounding whenever the crop is enlarged, as it is when images are
stored at the training size (tests/test_augment.py checks it). With a rotation the
resampling is one affine ``grid_sample`` (zeros outside the image).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["AugmentConfig", "BatchAugment", "normalize", "to_float", "rgb_to_gray",
           "sample_crop_boxes", "adjust_hue", "eval_transform"]


@dataclass
class AugmentConfig:
    """Distribution of one view. Defaults are the spec's stage-1 CIFAR pipeline."""
    size: int = 32
    scale: tuple[float, float] = (0.08, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    hflip_p: float = 0.5
    jitter: tuple[float, float, float, float] = (0.4, 0.4, 0.4, 0.1)
    jitter_p: float = 0.8
    gray_p: float = 0.2
    blur_p: float = 0.0
    blur_sigma: tuple[float, float] = (0.1, 2.0)
    rotation: float = 0.0  # max degrees of a uniform random rotation
    mean: tuple[float, ...] = (0.4914, 0.4822, 0.4465)
    std: tuple[float, ...] = (0.2023, 0.1994, 0.2010)


def to_float(images: Tensor) -> Tensor:
    """uint8 [0, 255] -> float32 [0, 1]; float input is passed through."""
    return images.float().div_(255.0) if images.dtype == torch.uint8 else images.float()


def normalize(x: Tensor, mean, std) -> Tensor:
    c = x.shape[1]
    m = torch.as_tensor(mean, dtype=x.dtype, device=x.device)[:c].view(1, c, 1, 1)
    s = torch.as_tensor(std, dtype=x.dtype, device=x.device)[:c].view(1, c, 1, 1)
    return (x - m) / s


def rgb_to_gray(x: Tensor) -> Tensor:
    """ITU-R 601 luma, as torchvision's rgb_to_grayscale: [N, 1, H, W]."""
    if x.shape[1] == 1:
        return x
    return (0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3])


def _uniform(n: int, low: float, high: float, generator, device) -> Tensor:
    return torch.rand(n, generator=generator, device=device) * (high - low) + low


def sample_crop_boxes(n: int, height: int, width: int, scale, ratio, generator=None,
                      device="cpu", tries: int = 10) -> Tensor:
    """RandomResizedCrop boxes [n, 4] = (top, left, h, w) in pixels, torchvision's rule:
    up to ``tries`` draws of area ~ U(scale)·H·W and log-ratio ~ U(log ratio);
    the first that fits wins, otherwise the ratio-clamped central crop."""
    area = height * width
    log_r = (math.log(ratio[0]), math.log(ratio[1]))
    target = torch.rand(n, tries, generator=generator, device=device) * (scale[1] - scale[0]) + scale[0]
    target = target * area
    aspect = torch.exp(torch.rand(n, tries, generator=generator, device=device) * (log_r[1] - log_r[0]) + log_r[0])
    w = torch.round(torch.sqrt(target * aspect))
    h = torch.round(torch.sqrt(target / aspect))
    ok = (w > 0) & (h > 0) & (w <= width) & (h <= height)
    first = torch.where(ok.any(1), ok.float().argmax(1), torch.full((n,), -1, device=device))
    has = first >= 0
    idx = first.clamp_min(0).unsqueeze(1)
    w = w.gather(1, idx).squeeze(1)
    h = h.gather(1, idx).squeeze(1)
    # torchvision's fallback: whole image, aspect clamped to the ratio range, centred
    in_ratio = width / height
    if in_ratio < ratio[0]:
        fw, fh = width, round(width / ratio[0])
    elif in_ratio > ratio[1]:
        fh, fw = height, round(height * ratio[1])
    else:
        fw, fh = width, height
    w = torch.where(has, w, torch.full_like(w, fw))
    h = torch.where(has, h, torch.full_like(h, fh))
    # torch.randint(0, H - h + 1) per sample
    top = torch.floor(torch.rand(n, generator=generator, device=device) * (height - h + 1))
    left = torch.floor(torch.rand(n, generator=generator, device=device) * (width - w + 1))
    top = torch.where(has, top, torch.full_like(top, 0) + torch.round((height - h) / 2))
    left = torch.where(has, left, torch.full_like(left, 0) + torch.round((width - w) / 2))
    return torch.stack([top, left, h, w], dim=1)


def _rgb_to_hsv(x: Tensor) -> Tensor:
    r, g, b = x.unbind(1)
    maxc, _ = x.max(1)
    minc, _ = x.min(1)
    delta = maxc - minc
    s = delta / torch.where(maxc > 0, maxc, torch.ones_like(maxc))
    safe = torch.where(delta > 0, delta, torch.ones_like(delta))
    rc, gc, bc = (maxc - r) / safe, (maxc - g) / safe, (maxc - b) / safe
    h = torch.where(maxc == r, bc - gc, torch.where(maxc == g, 2.0 + rc - bc, 4.0 + gc - rc))
    h = torch.where(delta > 0, (h / 6.0) % 1.0, torch.zeros_like(h))
    return torch.stack([h, s, maxc], 1)


def _hsv_to_rgb(x: Tensor) -> Tensor:
    h, s, v = x.unbind(1)
    i = torch.floor(h * 6.0)
    f = h * 6.0 - i
    i = i.long() % 6
    p = v * (1 - s)
    q = v * (1 - s * f)
    t = v * (1 - s * (1 - f))
    r = torch.stack([v, q, p, p, t, v], 1).gather(1, i.unsqueeze(1))
    g = torch.stack([t, v, v, q, p, p], 1).gather(1, i.unsqueeze(1))
    b = torch.stack([p, p, t, v, v, q], 1).gather(1, i.unsqueeze(1))
    return torch.cat([r, g, b], 1)


def adjust_hue(x: Tensor, shift: Tensor) -> Tensor:
    """Rotate the hue of each RGB image by ``shift`` [N] (fraction of a turn in [-0.5, 0.5])."""
    hsv = _rgb_to_hsv(x)
    hue = (hsv[:, 0] + shift.view(-1, 1, 1)) % 1.0
    return _hsv_to_rgb(torch.stack([hue, hsv[:, 1], hsv[:, 2]], 1))


def _blend(x: Tensor, other: Tensor, factor: Tensor) -> Tensor:
    f = factor.view(-1, 1, 1, 1)
    return (f * x + (1.0 - f) * other).clamp_(0.0, 1.0)


def _jitter_op(op: int, x: Tensor, factor: Tensor) -> Tensor:
    if op == 0:  # brightness
        return (x * factor.view(-1, 1, 1, 1)).clamp_(0.0, 1.0)
    if op == 1:  # contrast: blend with the mean luma of the image
        mean = rgb_to_gray(x).mean(dim=(1, 2, 3), keepdim=True)
        return _blend(x, mean, factor)
    if op == 2:  # saturation: blend with the luma image
        return _blend(x, rgb_to_gray(x), factor) if x.shape[1] == 3 else x
    return adjust_hue(x, factor) if x.shape[1] == 3 else x


def _gaussian_blur(x: Tensor, sigma: Tensor) -> Tensor:
    """Separable Gaussian blur, a different sigma per sample; kernel ~10% of the side, odd."""
    n, c, h, w = x.shape
    k = max(3, int(0.1 * min(h, w)) // 2 * 2 + 1)
    coords = torch.arange(k, device=x.device, dtype=x.dtype) - (k - 1) / 2
    kern = torch.exp(-(coords.view(1, -1) ** 2) / (2 * sigma.view(-1, 1) ** 2))
    kern = kern / kern.sum(1, keepdim=True)  # [n, k]
    kern = kern.repeat_interleave(c, 0)  # [n*c, k]
    y = x.reshape(1, n * c, h, w)
    y = F.pad(y, (k // 2, k // 2, k // 2, k // 2), mode="reflect")
    y = F.conv2d(y, kern.view(n * c, 1, k, 1), groups=n * c)
    y = F.conv2d(y, kern.view(n * c, 1, 1, k), groups=n * c)
    return y.view(n, c, h, w)


class BatchAugment:
    """Callable: uint8 or float [N, C, H, W] images -> augmented, normalised float32 views."""

    def __init__(self, cfg: AugmentConfig, sync_free: bool | None = None):
        self.cfg = cfg
        # None: whole-batch selection with ``where`` on accelerators, per-subset ops on the CPU
        self.sync_free = sync_free

    def sample_grid(self, n: int, height: int, width: int, generator, device) -> Tensor:
        """``grid_sample`` grid [n, size, size, 2] of crop + flip (+ rotation) for n samples.

        Without rotation, output pixel i of a crop (top, h) reads the source row
        top + (i + 0.5)·h/size - 0.5 clamped to [top, top + h - 1] (the rule of
        ``F.interpolate(..., align_corners=False)`` on the cropped image), likewise for
        columns, reversed when flipped. Draws the same random numbers as ``geometry``."""
        cfg = self.cfg
        if cfg.rotation > 0:
            theta = self.geometry(n, height, width, generator, device)
            return F.affine_grid(theta, [n, 1, cfg.size, cfg.size], align_corners=False)
        boxes = sample_crop_boxes(n, height, width, cfg.scale, cfg.ratio, generator, device)
        flip = torch.rand(n, generator=generator, device=device) < cfg.hflip_p
        top, left, h, w = (b.unsqueeze(1) for b in boxes.unbind(1))
        steps = torch.arange(cfg.size, device=device, dtype=torch.float32) + 0.5
        ys = torch.minimum(torch.maximum(top + steps * (h / cfg.size) - 0.5, top), top + h - 1)
        xs = torch.minimum(torch.maximum(left + steps * (w / cfg.size) - 0.5, left), left + w - 1)
        xs = torch.where(flip.unsqueeze(1), xs.flip(1), xs)
        gy = (2 * ys + 1) / height - 1  # pixel coordinate -> grid_sample's [-1, 1] (align_corners=False)
        gx = (2 * xs + 1) / width - 1
        size = cfg.size
        return torch.stack([gx.unsqueeze(1).expand(n, size, size), gy.unsqueeze(2).expand(n, size, size)], dim=3)

    def geometry(self, n: int, height: int, width: int, generator, device) -> Tensor:
        """Affine matrices [n, 2, 3] (normalised coords) for crop + flip + rotation."""
        cfg = self.cfg
        boxes = sample_crop_boxes(n, height, width, cfg.scale, cfg.ratio, generator, device)
        top, left, h, w = boxes.unbind(1)
        cx = (left + w / 2) / width * 2 - 1
        cy = (top + h / 2) / height * 2 - 1
        sx = w / width
        sy = h / height
        flip = torch.rand(n, generator=generator, device=device) < cfg.hflip_p
        sx = torch.where(flip, -sx, sx)
        theta = torch.zeros(n, 2, 3, device=device)
        if cfg.rotation > 0:
            ang = _uniform(n, -cfg.rotation, cfg.rotation, generator, device) * math.pi / 180
            cos, sin = torch.cos(ang), torch.sin(ang)
            theta[:, 0, 0], theta[:, 0, 1] = cos * sx, -sin * sy
            theta[:, 1, 0], theta[:, 1, 1] = sin * sx, cos * sy
        else:
            theta[:, 0, 0], theta[:, 1, 1] = sx, sy
        theta[:, 0, 2], theta[:, 1, 2] = cx, cy
        return theta

    def color(self, x: Tensor, generator) -> Tensor:
        """Colour jitter (random order per sample), grayscale and blur.

        On a GPU every operation runs on the whole batch with per-sample factors
        (identity where a sample does not draw it) and is selected with ``where``:
        no data-dependent shapes, so the step never waits for the host. On the CPU,
        where arithmetic is the cost, each operation runs only on the samples that
        drew it. Both paths draw the same random numbers."""
        cfg = self.cfg
        n, device = x.shape[0], x.device
        sync_free = self.sync_free if self.sync_free is not None else x.device.type != "cpu"
        b, c, s, h = cfg.jitter
        if cfg.jitter_p > 0 and any(v > 0 for v in cfg.jitter):
            apply = torch.rand(n, generator=generator, device=device) < cfg.jitter_p
            factors = [
                _uniform(n, max(0.0, 1 - b), 1 + b, generator, device),
                _uniform(n, max(0.0, 1 - c), 1 + c, generator, device),
                _uniform(n, max(0.0, 1 - s), 1 + s, generator, device),
                _uniform(n, -h, h, generator, device),
            ]
            identity = (1.0, 1.0, 1.0, 0.0)
            order = torch.rand(n, 4, generator=generator, device=device).argsort(dim=1)
            active = [v > 0 and (op < 2 or x.shape[1] == 3) for op, v in enumerate((b, c, s, h))]
            for slot in range(4):
                for op in range(4):
                    if not active[op]:
                        continue
                    chosen = (order[:, slot] == op) & apply
                    if sync_free:
                        factor = torch.where(chosen, factors[op], torch.full_like(factors[op], identity[op]))
                        x = torch.where(chosen.view(-1, 1, 1, 1), _jitter_op(op, x, factor), x)
                    else:
                        sel = chosen.nonzero().flatten()
                        if sel.numel():
                            x[sel] = _jitter_op(op, x[sel], factors[op][sel])
        if cfg.gray_p > 0 and x.shape[1] == 3:
            gray = torch.rand(n, generator=generator, device=device) < cfg.gray_p
            x = torch.where(gray.view(-1, 1, 1, 1), rgb_to_gray(x).expand_as(x), x)
        if cfg.blur_p > 0:
            blur = torch.rand(n, generator=generator, device=device) < cfg.blur_p
            sigma = _uniform(n, *cfg.blur_sigma, generator, device)
            if sync_free:
                x = torch.where(blur.view(-1, 1, 1, 1), _gaussian_blur(x, sigma), x)
            else:
                sel = blur.nonzero().flatten()
                if sel.numel():
                    x[sel] = _gaussian_blur(x[sel], sigma[sel])
        return x

    def __call__(self, images: Tensor, generator: torch.Generator | None = None) -> Tensor:
        x = to_float(images)
        n, _, height, width = x.shape
        grid = self.sample_grid(n, height, width, generator, x.device)
        x = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        x = self.color(x.clamp_(0.0, 1.0), generator)
        return normalize(x, self.cfg.mean, self.cfg.std)


def eval_transform(images: Tensor, size: int, mean, std) -> Tensor:
    """Test-time transform: resize to ``size`` when needed, then normalise."""
    x = to_float(images)
    if x.shape[-1] != size or x.shape[-2] != size:
        x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return normalize(x, mean, std)
