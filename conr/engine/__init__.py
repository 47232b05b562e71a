"""The training engine: the loop (:class:`Trainer`, trainer.py) and the parts it composes:
set-up, schedules, checkpoints, the run folder, features and the callbacks."""
from __future__ import annotations

from ..errors import NonFiniteLossError, UnsafeCheckpointError
from .checkpoint import CHECKPOINT_NAME, CHECKPOINT_VERSION, load_checkpoint
from .safe_pickle import plain_data, safe_torch_load
from .schedules import LR_SCHEDULES, lr_at
from .setup import resolve_device
from .trainer import TrainResult, Trainer

__all__ = ["Trainer", "TrainResult", "NonFiniteLossError", "CHECKPOINT_NAME", "CHECKPOINT_VERSION",
           "load_checkpoint", "lr_at", "LR_SCHEDULES", "resolve_device", "UnsafeCheckpointError", "plain_data",
           "safe_torch_load"]
