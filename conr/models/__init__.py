from .backbones import BACKBONES, build_backbone, register_backbone
from .heads import init_predictor_, mlp_head
from . import mlp as _mlp  # noqa: F401  (registers the mlp backbone for vectors)

__all__ = ["BACKBONES", "build_backbone", "register_backbone", "mlp_head", "init_predictor_"]
