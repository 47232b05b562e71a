"""Helpers shared by the sub-commands."""
from __future__ import annotations

import argparse


class OverrideParser(argparse.ArgumentParser):
    """A sub-command parser that lets positionals and options mix in any order
    (``PATH --k 3 --out o train.epochs=5``; plain argparse refuses positionals after
    options once the first positional is consumed) and also takes config overrides
    written ``--section.key=value``, appended to ``args.overrides``."""

    _inside = False

    def parse_known_args(self, args=None, namespace=None):
        if self._inside:
            return super().parse_known_args(args, namespace)
        self._inside = True
        try:
            ns, rest = self.parse_known_intermixed_args(args, namespace)
        finally:
            self._inside = False
        dotted = [a for a in rest if a.startswith("--") and "=" in a and "." in a.split("=", 1)[0]]
        if dotted:
            ns.overrides = list(getattr(ns, "overrides", None) or []) + [a[2:] for a in dotted]
        return ns, [a for a in rest if a not in dotted]


def methods_listing() -> str:
    from ..methods import METHODS

    lines = [f"  {name:14s} {cls.description}" for name, cls in sorted(METHODS.items())]
    return "methods (config key `method`):\n" + "\n".join(lines)


def print_metrics(metrics: dict) -> None:
    """The closing line of a run: nmi=… acc=… ari=… (fractions)."""
    if {"nmi", "acc", "ari"} <= metrics.keys():
        scored = f" scored={metrics['scored']}" if "scored" in metrics else ""
        print(f"nmi={metrics['nmi']:.4f} acc={metrics['acc']:.4f} ari={metrics['ari']:.4f}{scored}")
