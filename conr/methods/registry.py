"""The methods' registry: a name (config key ``method``) -> its Method class, and the
config checks that belong to the registry (is the method known, do its own checks pass)."""
from __future__ import annotations

from typing import TYPE_CHECKING

from ..errors import ConfigError

if TYPE_CHECKING:
    from .base import Method

__all__ = ["METHODS", "register_method", "build_method", "method_class", "check_method_config"]

METHODS: dict[str, type[Method]] = {}


def register_method(name: str):
    def wrap(cls):
        cls.name = name
        METHODS[name] = cls
        return cls
    return wrap


def method_class(name: str) -> type[Method]:
    """The class registered as ``name``; a ConfigError listing the known methods otherwise."""
    if name not in METHODS:
        raise ConfigError(f"method={name!r} is unknown; known methods: {', '.join(sorted(METHODS))}")
    return METHODS[name]


def check_method_config(cfg) -> None:
    """The method's own cross-field checks (its ``validate_config``, if it has one)."""
    method_validate = getattr(method_class(cfg.method), "validate_config", None)
    if method_validate is not None:
        method_validate(cfg)


def build_method(cfg, in_channels: int) -> Method:
    if cfg.method not in METHODS:
        raise ValueError(f"unknown method {cfg.method!r}; known: {', '.join(sorted(METHODS))}")
    return METHODS[cfg.method](cfg, in_channels)
