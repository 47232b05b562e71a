from .backbones import BACKBONES, build_backbone, register_backbone
from .heads import init_predictor_, mlp_head

__all__ = ["BACKBONES", "build_backbone", "register_backbone", "mlp_head", "init_predictor_"]
