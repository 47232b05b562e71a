"""The trainer's old address, kept so that ``from conr.train import Trainer`` (and
``load_checkpoint``, ``lr_at``, ``CHECKPOINT_NAME``, ...) keep working: the engine lives
in :mod:`conr.engine`."""
from __future__ import annotations

from .engine import (CHECKPOINT_NAME, CHECKPOINT_VERSION, LR_SCHEDULES, NonFiniteLossError, TrainResult, Trainer,
                     load_checkpoint, lr_at, resolve_device)

__all__ = ["Trainer", "TrainResult", "NonFiniteLossError", "CHECKPOINT_NAME", "CHECKPOINT_VERSION",
           "load_checkpoint", "lr_at", "LR_SCHEDULES", "resolve_device"]
