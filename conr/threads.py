"""PyTorch's CPU threads for a block of code, given back afterwards.

``torch.set_num_threads`` is process-wide: a library that changes it for its own work
(an encoder's extraction, a run the time budget sized at fewer threads) sets the caller's
count again when it is done, or a notebook's next cell would run at a count it never chose.
"""
from __future__ import annotations

from contextlib import contextmanager

import torch

__all__ = ["torch_threads"]


@contextmanager
def torch_threads(n: int | None):
    """``torch.set_num_threads(n)`` for the block (``None``: the count as it is); the count
    from before the block afterwards, whatever the block set."""
    before = torch.get_num_threads()
    if n and n != before:
        torch.set_num_threads(int(n))
    try:
        yield
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)
