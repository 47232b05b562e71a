"""Projector and predictor MLPs of BYOL-style methods (spec section 1)."""
from __future__ import annotations

from torch import nn

__all__ = ["mlp_head", "init_predictor_"]


def mlp_head(in_dim: int, hidden_dim: int = 4096, out_dim: int = 256) -> nn.Sequential:
    """Linear -> BatchNorm1d -> ReLU -> Linear."""
    return nn.Sequential(
        nn.Linear(in_dim, hidden_dim),
        nn.BatchNorm1d(hidden_dim),
        nn.ReLU(inplace=True),
        nn.Linear(hidden_dim, out_dim),
    )


def init_predictor_(head: nn.Module, std: float = 0.01) -> nn.Module:
    """Predictor init of the reference code: Linear weights N(0, std), biases 0, BN (1, 0)."""
    for m in head.modules():
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0.0, std)
            nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm1d, nn.SyncBatchNorm)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    return head
