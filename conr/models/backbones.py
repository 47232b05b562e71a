"""Backbones: the CIFAR ResNets of the paper and a small CNN for tiny images on a CPU.

Each builder returns ``(module, feature_dim)``; the module maps a [N, C, H, W]
image batch to [N, feature_dim] pooled features.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from ..errors import MissingDependencyError

__all__ = ["BACKBONES", "build_backbone", "register_backbone"]

BACKBONES: dict[str, Callable[..., tuple[nn.Module, int]]] = {}


def register_backbone(name: str):
    def wrap(fn):
        BACKBONES[name] = fn
        return fn
    return wrap


def _resnet(name: str) -> nn.Module:
    """torchvision's ResNet ``name``, imported on first use: ``small_cnn`` (the CPU
    default) runs without torchvision, e.g. beside a CPU-only torch build that has no
    matching torchvision wheel."""
    try:
        import torchvision.models as tvm
    except Exception as exc:  # missing, or built for another torch ("operator torchvision::nms does not exist")
        raise MissingDependencyError(f"the ResNet backbones need torchvision built for this torch "
                          f"({torch.__version__}), and importing it failed: {exc}. Install the torchvision "
                          f"that matches torch from the same index (README: CPU-only install), or use "
                          f"model.backbone=small_cnn") from None
    return getattr(tvm, name)()


def _headless(net: nn.Module, in_channels: int, small_stem: bool) -> nn.Module:
    """Drop the classifier; for small images use a 3x3 stride-1 stem and no max-pool."""
    if small_stem:
        net.conv1 = nn.Conv2d(in_channels, 64, kernel_size=3, stride=1, padding=1, bias=False)
        net.maxpool = nn.Identity()
    elif in_channels != 3:
        net.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
    net.fc = nn.Identity()
    return net


@register_backbone("resnet18_cifar")
def resnet18_cifar(in_channels: int = 3):
    """torchvision ResNet-18 with the CIFAR stem (3x3 conv, stride 1, no max-pool): 512-d."""
    return _headless(_resnet("resnet18"), in_channels, small_stem=True), 512


@register_backbone("resnet34_cifar")
def resnet34_cifar(in_channels: int = 3):
    """ResNet-34 with the small-image stem, as the paper uses for 96-px datasets: 512-d."""
    return _headless(_resnet("resnet34"), in_channels, small_stem=True), 512


@register_backbone("resnet18")
def resnet18_imagenet(in_channels: int = 3):
    return _headless(_resnet("resnet18"), in_channels, small_stem=False), 512


@register_backbone("resnet34")
def resnet34_imagenet(in_channels: int = 3):
    return _headless(_resnet("resnet34"), in_channels, small_stem=False), 512


@register_backbone("resnet50")
def resnet50_imagenet(in_channels: int = 3):
    return _headless(_resnet("resnet50"), in_channels, small_stem=False), 2048


class SmallCNN(nn.Module):
    """Four 3x3 conv blocks (BN + ReLU, max-pool after the 2nd and 3rd), global
    average pool. A few hundred thousand parameters: trains on a laptop CPU on
    images of 8-32 px."""

    def __init__(self, in_channels: int = 3, width: int = 64):
        super().__init__()

        def block(cin, cout):
            return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]

        self.features = nn.Sequential(
            *block(in_channels, width), *block(width, width), nn.MaxPool2d(2),
            *block(width, 2 * width), nn.MaxPool2d(2),
            *block(2 * width, 4 * width),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        )
        self.out_dim = 4 * width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)


@register_backbone("small_cnn")
def small_cnn(in_channels: int = 3, width: int = 64):
    net = SmallCNN(in_channels, width)
    return net, net.out_dim


def build_backbone(name: str, in_channels: int = 3, **kwargs) -> tuple[nn.Module, int]:
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; choose one of {sorted(BACKBONES)}")
    return BACKBONES[name](in_channels=in_channels, **kwargs)
