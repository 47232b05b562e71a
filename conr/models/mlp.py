"""An MLP backbone for vectors (embeddings): the ``mlp`` entry of the backbone registry."""
from __future__ import annotations

from torch import nn

from .backbones import register_backbone

__all__ = ["VectorMLP", "mlp_backbone"]


class VectorMLP(nn.Module):
    """D -> width -> out_dim, each Linear followed by BatchNorm1d and ReLU."""

    def __init__(self, in_dim: int, width: int = 512, out_dim: int = 128):
        super().__init__()
        self.features = nn.Sequential(
            nn.Linear(in_dim, width, bias=False), nn.BatchNorm1d(width), nn.ReLU(inplace=True),
            nn.Linear(width, out_dim, bias=False), nn.BatchNorm1d(out_dim), nn.ReLU(inplace=True),
        )
        self.out_dim = out_dim

    def forward(self, x):
        return self.features(x)


@register_backbone("mlp")
def mlp_backbone(in_channels: int, width: int = 512, out_dim: int = 128):
    """``in_channels`` is the vector width D here (VectorData.channels)."""
    net = VectorMLP(in_channels, width, out_dim)
    return net, net.out_dim
