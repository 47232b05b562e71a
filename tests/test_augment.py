"""BatchAugment against torchvision's CPU pipeline of spec section 7.

Distributions are compared on many draws (RandomResizedCrop boxes, flip and
grayscale rates, moments of jittered images, the whole pipeline) with fixed
seeds, so each comparison is deterministic; single operations are compared
exactly with torchvision.transforms.v2.functional on the same parameters.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision.transforms.v2 as T
import torchvision.transforms.v2.functional as TF
from scipy.stats import ks_2samp

from conr.data import augment as aug_mod
from conr.data.augment import AugmentConfig, BatchAugment, adjust_hue, rgb_to_gray, sample_crop_boxes

IDENTITY = dict(mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))  # no normalisation: compare raw pixels
NO_COLOR = dict(jitter_p=0.0, gray_p=0.0, blur_p=0.0)


def _images(n: int, size: int = 32, seed: int = 0) -> torch.Tensor:
    """Smooth colourful float images in [0, 1] (low-resolution noise upsampled), a few saturated."""
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(n, 3, 4, 4, generator=g)
    x = F.interpolate(low, size=(size, size), mode="bicubic", align_corners=False).clamp(0, 1)
    x[: n // 4] = (x[: n // 4] * 1.6 - 0.3).clamp(0, 1)  # some clipped, saturated images
    return x


def _tv_boxes(n: int, height: int, width: int, scale, ratio, seed: int) -> torch.Tensor:
    torch.manual_seed(seed)
    img = torch.zeros(3, height, width)
    return torch.tensor([T.RandomResizedCrop.get_params(img, list(scale), list(ratio)) for _ in range(n)],
                        dtype=torch.float64)


def _box_stats(boxes: torch.Tensor, height: int, width: int) -> dict[str, np.ndarray]:
    top, left, h, w = boxes.double().unbind(1)
    return {"area": (h * w / (height * width)).numpy(), "log_aspect": torch.log(w / h).numpy(),
            "cy": ((top + h / 2) / height).numpy(), "cx": ((left + w / 2) / width).numpy()}


# --------------------------------------------------------------- crop boxes
@pytest.mark.parametrize("height,width,scale", [(32, 32, (0.08, 1.0)), (32, 32, (0.45, 1.0)),
                                                 (24, 40, (0.08, 1.0)), (96, 96, (0.08, 1.0))])
def test_crop_boxes_match_torchvision_get_params(height, width, scale):
    n, ratio = 4000, (3 / 4, 4 / 3)
    ours = sample_crop_boxes(n, height, width, scale, ratio, torch.Generator().manual_seed(1))
    theirs = _tv_boxes(n, height, width, scale, ratio, seed=2)
    top, left, h, w = ours.unbind(1)
    assert bool(((h >= 1) & (w >= 1) & (top >= 0) & (left >= 0)).all())
    assert bool(((top + h <= height) & (left + w <= width)).all())
    assert torch.equal(ours, ours.round())  # whole pixels, as torchvision
    a, b = _box_stats(ours, height, width), _box_stats(theirs, height, width)
    for key in a:
        se = math.sqrt((a[key].var() + b[key].var()) / n)
        assert abs(a[key].mean() - b[key].mean()) < 4 * se + 1e-3, key
        qa, qb = np.quantile(a[key], [0.1, 0.25, 0.5, 0.75, 0.9]), np.quantile(b[key], [0.1, 0.25, 0.5, 0.75, 0.9])
        assert np.abs(qa - qb).max() < 0.05 * (b[key].max() - b[key].min()) + 1e-9, key
        assert ks_2samp(a[key], b[key]).pvalue > 1e-3, key


def test_crop_fallback_is_torchvision_central_crop():
    """No try fits (scale far above 1): torchvision's ratio-clamped centre crop."""
    for height, width in [(32, 32), (20, 40), (40, 20)]:
        ours = sample_crop_boxes(50, height, width, (5.0, 6.0), (3 / 4, 4 / 3), torch.Generator().manual_seed(0))
        theirs = _tv_boxes(50, height, width, (5.0, 6.0), (3 / 4, 4 / 3), seed=0)
        assert torch.equal(ours.double(), theirs)


# ------------------------------------------------------- resampling, exactly
def test_crop_and_flip_resampling_equals_torchvision_resized_crop():
    """Every sample: our crop + flip == torchvision resized_crop (+ horizontal_flip) of
    the same box, the crop being enlarged (images stored at the training size)."""
    n, size = 64, 32
    x = _images(n, size, seed=3)
    cfg = AugmentConfig(size=size, scale=(0.08, 1.0), hflip_p=0.5, **NO_COLOR, **IDENTITY)
    out = BatchAugment(cfg)(x, torch.Generator().manual_seed(5))
    g = torch.Generator().manual_seed(5)  # replay the draws: boxes first, then the flips
    boxes = sample_crop_boxes(n, size, size, cfg.scale, cfg.ratio, g)
    flips = torch.rand(n, generator=g) < cfg.hflip_p
    assert 0 < int(flips.sum()) < n
    for i in range(n):
        t, l, h, w = (int(v) for v in boxes[i])
        ref = TF.resized_crop(x[i], t, l, h, w, [size, size], antialias=True)
        if flips[i]:
            ref = TF.horizontal_flip(ref)
        torch.testing.assert_close(out[i], ref, atol=2e-6, rtol=0)


def test_resampling_keeps_border_pixels():
    """A crop touching the image border reads the border pixel, not zero padding."""
    x = torch.ones(4, 3, 32, 32)
    cfg = AugmentConfig(size=32, scale=(0.08, 0.2), **NO_COLOR, **IDENTITY)
    out = BatchAugment(cfg)(x, torch.Generator().manual_seed(0))
    torch.testing.assert_close(out, torch.ones_like(out))


# ------------------------------------------------------------ flip, grayscale
def _rate_check(ours: float, theirs: float, p: float, n: int) -> None:
    se = math.sqrt(p * (1 - p) / n)
    assert abs(ours - p) < 4 * se and abs(theirs - p) < 4 * se and abs(ours - theirs) < 5 * se


def test_flip_rate_matches_torchvision():
    n = 4000
    img = _images(1, seed=4)
    x = img.expand(n, -1, -1, -1).contiguous()
    cfg = AugmentConfig(size=32, scale=(1.0, 1.0), ratio=(1.0, 1.0), hflip_p=0.5, **NO_COLOR, **IDENTITY)
    out = BatchAugment(cfg)(x, torch.Generator().manual_seed(0))
    same = (out - img).abs().amax(dim=(1, 2, 3)) < 1e-5
    flipped = (out - img.flip(-1)).abs().amax(dim=(1, 2, 3)) < 1e-5
    assert bool((same ^ flipped).all())  # every output is the image or its mirror, exactly
    torch.manual_seed(0)
    tv = T.RandomHorizontalFlip(0.5)
    tv_flipped = sum(bool(torch.equal(tv(img[0]), img[0].flip(-1))) for _ in range(n))
    _rate_check(float(flipped.float().mean()), tv_flipped / n, 0.5, n)


def test_grayscale_rate_and_values_match_torchvision():
    n = 4000
    img = _images(1, seed=6)
    x = img.expand(n, -1, -1, -1).contiguous()
    cfg = AugmentConfig(size=32, scale=(1.0, 1.0), ratio=(1.0, 1.0), hflip_p=0.0, jitter_p=0.0, gray_p=0.2,
                        **IDENTITY)
    out = BatchAugment(cfg)(x, torch.Generator().manual_seed(0))
    gray = (out[:, 0] - out[:, 1]).abs().amax(dim=(1, 2)) < 1e-7
    torch.manual_seed(0)
    tv = T.RandomGrayscale(0.2)
    tv_gray = 0
    for _ in range(n):
        y = tv(img[0])
        tv_gray += bool((y[0] - y[1]).abs().max() < 1e-7)
    _rate_check(float(gray.float().mean()), tv_gray / n, 0.2, n)
    # values: ITU-R 601 luma (PIL's 0.299 weights; torchvision's tensor kernel uses 0.2989)
    torch.testing.assert_close(out[gray][:1, :1], TF.rgb_to_grayscale(img[0])[None], atol=2e-4, rtol=0)


# ------------------------------------------------------ single colour ops
def test_jitter_ops_equal_torchvision_functional():
    n = 24
    x = _images(n, seed=7)
    g = torch.Generator().manual_seed(8)
    factors = torch.rand(n, generator=g) * 1.2 + 0.4    # [0.4, 1.6]
    shifts = torch.rand(n, generator=g) * 0.8 - 0.4     # hue in [-0.4, 0.4]
    ops = [(0, TF.adjust_brightness, 1e-6), (1, TF.adjust_contrast, 3e-4), (2, TF.adjust_saturation, 3e-4)]
    for op, fn, tol in ops:
        ours = aug_mod._jitter_op(op, x.clone(), factors)
        theirs = torch.stack([fn(x[i], float(factors[i])) for i in range(n)])
        torch.testing.assert_close(ours, theirs, atol=tol, rtol=0, msg=lambda m: f"op {op}: {m}")
    ours = adjust_hue(x.clone(), shifts)
    theirs = torch.stack([TF.adjust_hue(x[i], float(shifts[i])) for i in range(n)])
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=0)
    torch.testing.assert_close(rgb_to_gray(x), TF.rgb_to_grayscale(x), atol=2e-4, rtol=0)


def test_cpu_and_sync_free_paths_draw_and_compute_the_same():
    x = (_images(48, seed=9) * 255).round().to(torch.uint8)
    cfg = AugmentConfig(size=32, blur_p=0.5)
    a = BatchAugment(cfg, sync_free=False)(x, torch.Generator().manual_seed(11))
    b = BatchAugment(cfg, sync_free=True)(x, torch.Generator().manual_seed(11))
    torch.testing.assert_close(a, b, atol=1e-5, rtol=0)


# ------------------------------------------------------------- distributions
def _tv_pipeline(cfg: AugmentConfig, crop: bool):
    steps = []
    if crop:
        steps += [T.RandomResizedCrop(cfg.size, scale=cfg.scale, ratio=cfg.ratio, antialias=True),
                  T.RandomHorizontalFlip(cfg.hflip_p)]
    steps += [T.RandomApply([T.ColorJitter(*cfg.jitter)], p=cfg.jitter_p), T.RandomGrayscale(cfg.gray_p)]
    return T.Compose(steps)


def _summaries(out: torch.Tensor, base: torch.Tensor) -> dict[str, np.ndarray]:
    """Per-output statistics relative to its source image (so the spread between source images
    does not hide the jitter): brightness, contrast and saturation ratios, hue shift of the mean
    colour, and the raw per-channel means and stds."""
    reps = out.shape[0] // base.shape[0]
    src = base.repeat(reps, 1, 1, 1)

    def luma(t):
        return (0.299 * t[:, 0] + 0.587 * t[:, 1] + 0.114 * t[:, 2]).flatten(1)

    def chroma(t):
        return (t.amax(dim=1) - t.amin(dim=1)).flatten(1).mean(1)

    def hue(t):
        return aug_mod._rgb_to_hsv(t.mean(dim=(2, 3))[:, :, None, None])[:, 0, 0, 0]

    out_, src_ = out.double(), src.double()
    stats = {
        "brightness": luma(out_).mean(1) / luma(src_).mean(1),
        "contrast": luma(out_).std(1) / luma(src_).std(1),
        "saturation": chroma(out_) / chroma(src_),
        "hue_shift": torch.remainder(hue(out_) - hue(src_) + 0.5, 1.0) - 0.5,
    }
    for c in range(3):
        stats[f"mean{c}"] = out_[:, c].mean(dim=(1, 2))
        stats[f"std{c}"] = out_[:, c].std(dim=(1, 2))
    return {k: v.numpy() for k, v in stats.items()}


def _compare_moments(ours: torch.Tensor, theirs: torch.Tensor, base: torch.Tensor, mean_tol: float) -> None:
    """Per-channel pixel mean / std, and the distributions of the per-image summaries (KS test)."""
    for c in range(3):
        assert abs(float(ours[:, c].mean() - theirs[:, c].mean())) < mean_tol, f"channel {c} mean"
        assert abs(float(ours[:, c].std() - theirs[:, c].std())) < mean_tol, f"channel {c} std"
    a, b = _summaries(ours, base), _summaries(theirs, base)
    for key in a:
        assert ks_2samp(a[key], b[key]).pvalue > 1e-3, key


@pytest.mark.slow  # moments over many draws: ~2 s
def test_color_jitter_moments_match_torchvision():
    """Same images through both pipelines (jitter with p, random op order, then grayscale)."""
    reps, base = 150, _images(16, seed=12)
    x = base.repeat(reps, 1, 1, 1)
    cfg = AugmentConfig(size=32, scale=(1.0, 1.0), ratio=(1.0, 1.0), hflip_p=0.0, **IDENTITY)
    ours = BatchAugment(cfg)(x, torch.Generator().manual_seed(13))
    torch.manual_seed(14)
    tv = _tv_pipeline(cfg, crop=False)
    theirs = torch.stack([tv(img) for img in x])
    _compare_moments(ours, theirs, base, mean_tol=0.01)


@pytest.mark.slow  # moments over many draws: ~2-3 s
def test_full_pipeline_moments_match_torchvision():
    reps, base = 100, _images(24, seed=15)
    x = base.repeat(reps, 1, 1, 1)
    cfg = AugmentConfig(size=32, **IDENTITY)
    ours = BatchAugment(cfg)(x, torch.Generator().manual_seed(16))
    torch.manual_seed(17)
    tv = _tv_pipeline(cfg, crop=True)
    theirs = torch.stack([tv(img) for img in x])
    _compare_moments(ours, theirs, base, mean_tol=0.01)
