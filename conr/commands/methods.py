"""conr methods: list the registered training methods."""
from __future__ import annotations

from .common import methods_listing


def run(args) -> int:
    print(methods_listing())
    return 0


def register(sub) -> None:
    sub.add_parser("methods", help="list the known methods").set_defaults(func=run)
