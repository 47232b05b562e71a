"""Training methods. A new method is one module that registers a
:class:`~conr.methods.base.Method` subclass with :func:`~conr.methods.registry.register_method`
and is imported here, plus one config file."""
from __future__ import annotations

from .base import Method, StepContext
from .registry import METHODS, build_method, check_method_config, method_class, register_method
from . import byol as _byol  # noqa: F401  (registers byol)
from . import conr as _conr  # noqa: F401  (registers conr)
from . import hadis as _hadis  # noqa: F401  (registers hadis)
from . import simsiam as _simsiam  # noqa: F401  (registers simsiam, simsiam_connr)
from . import moco as _moco  # noqa: F401  (registers moco, moco_connr)

__all__ = ["METHODS", "Method", "StepContext", "build_method", "register_method", "method_class",
           "check_method_config"]
