"""Helpers shared by the sub-commands."""
from __future__ import annotations


def methods_listing() -> str:
    from ..methods import METHODS

    lines = [f"  {name:14s} {cls.description}" for name, cls in sorted(METHODS.items())]
    return "methods (config key `method`):\n" + "\n".join(lines)


def print_metrics(metrics: dict) -> None:
    """The closing line of a run: nmi=… acc=… ari=… (fractions)."""
    if {"nmi", "acc", "ari"} <= metrics.keys():
        print(f"nmi={metrics['nmi']:.4f} acc={metrics['acc']:.4f} ari={metrics['ari']:.4f}")
