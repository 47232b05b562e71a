"""Checkpoints that cannot run code.

A ``.pt`` file is a pickle, and reading a pickle may call any function it names: a
checkpoint someone hands over could run a shell command under ``conr eval``. So conr
writes checkpoints that hold plain data only (:func:`plain_data`: tensors, Python
numbers, strings, bools, None, lists, tuples and dicts) and reads them with torch's
restricted unpickler (``torch.load(weights_only=True)``), which builds those types and
nothing else. A checkpoint this conr wrote needs no allow-list.

Checkpoints written before that rule may hold numpy arrays and scalars. Those, and only
those, are read through a narrow allow-list scoped to that one load: numpy's array
and scalar rebuilders with numeric and bool dtypes (an object or string dtype stays
refused), which fill memory from raw bytes and call nothing else; what they build is
turned into tensors and Python numbers at once, so the rest of conr sees one format.
Anything else (``os.system``, ``exec``, a class) is refused with
:class:`~conr.errors.UnsafeCheckpointError` naming it; nothing in the file has run.
"""
from __future__ import annotations

import pickle
import re
from collections import OrderedDict
from functools import lru_cache
from pathlib import Path, PurePath

import numpy as np
import torch

from ..errors import UnsafeCheckpointError

__all__ = ["plain_data", "safe_torch_load", "UnsafeCheckpointError"]

# the numpy dtypes an old checkpoint's arrays and scalars may have (no object, string or void)
_NUMPY_DTYPES = ("bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
                 "float16", "float32", "float64", "complex64", "complex128")
# torch's own types that its restricted unpickler builds without being asked
_TORCH_LEAVES = (torch.dtype, torch.device, torch.Size)


def plain_data(obj, where: str = "checkpoint"):
    """``obj`` with numpy arrays as tensors, numpy scalars as Python numbers, paths as
    strings, named tuples as tuples and other containers as lists and dicts: what
    ``torch.load(weights_only=True)`` reads back with no allow-list. Raises TypeError
    naming ``where`` in ``obj`` for anything else (a class instance, a function), which
    a safe reader could only build by running code."""
    if obj is None or type(obj) in (bool, int, float, str):
        return obj
    if isinstance(obj, torch.Tensor):
        return obj if type(obj) in (torch.Tensor, torch.nn.Parameter) else obj.as_subclass(torch.Tensor)
    if isinstance(obj, np.ndarray):
        if obj.dtype.name in _NUMPY_DTYPES:  # a copy: native byte order, contiguous, writable
            return torch.from_numpy(np.array(obj, dtype=obj.dtype.newbyteorder("="), order="C"))
        return plain_data(obj.tolist(), where)
    if isinstance(obj, np.generic):
        return plain_data(obj.item(), where)
    if isinstance(obj, _TORCH_LEAVES):
        return obj
    for base in (bool, int, float, complex, str):  # an enum or other subclass: its plain value
        if isinstance(obj, base):
            return base(obj)
    if isinstance(obj, PurePath):
        return str(obj)
    if isinstance(obj, dict):
        out = OrderedDict() if isinstance(obj, OrderedDict) else {}
        for key, value in obj.items():
            out[plain_data(key, where)] = plain_data(value, f"{where}[{key!r}]")
        return out
    if isinstance(obj, (list, tuple, set, frozenset)):
        items = [plain_data(v, f"{where}[{i}]") for i, v in enumerate(obj)]
        return tuple(items) if isinstance(obj, tuple) else items
    kind = f"{type(obj).__module__}.{type(obj).__qualname__}"
    raise TypeError(f"{where} is a {kind}, which only code could rebuild when the checkpoint is read; "
                    f"store it as tensors, numbers, strings, lists or dicts (conr/engine/safe_pickle.py)")


def safe_torch_load(path: str | Path, map_location="cpu"):
    """The contents of the ``torch.save`` file ``path`` as plain data (see the module's
    docstring), read without running anything it names. Raises UnsafeCheckpointError
    for a file that holds more; other errors (a damaged file) pass through."""
    path = Path(path)
    try:
        return _plain_or_refuse(path, torch.load(path, map_location=map_location, weights_only=True))
    except pickle.UnpicklingError as exc:
        refusal = str(exc)
    needs = _globals_needed(path, refusal)
    if needs and set(needs) <= _numpy_names():
        # a checkpoint of an older conr with numpy arrays or scalars: the numpy rebuilders only
        try:
            with torch.serialization.safe_globals(list(_numpy_allow_list())):
                loaded = torch.load(path, map_location=map_location, weights_only=True)
            return _plain_or_refuse(path, loaded)
        except pickle.UnpicklingError as exc:  # e.g. an array of objects or strings
            refusal, needs = str(exc), []
    raise UnsafeCheckpointError(_refusal_message(path, needs, refusal))


def _plain_or_refuse(path: Path, loaded):
    # a clean read already holds plain data; this converts an old file's numpy objects
    # (and anything a user allow-listed in torch for their own files)
    try:
        return plain_data(loaded, where=path.name)
    except TypeError as exc:
        raise UnsafeCheckpointError(f"{path} holds objects other than tensors and numbers ({exc}); "
                                    f"conr reads checkpoints as plain data only") from None


def _globals_needed(path: Path, refusal: str) -> list[str]:
    """The functions and classes the file names beyond torch's defaults, read statically
    (nothing is called); from torch's message when the file cannot be scanned."""
    try:
        found = torch.serialization.get_unsafe_globals_in_checkpoint(path)
    except Exception:  # an old non-zip file, or pickle instructions the scanner does not know
        found = []
    return sorted(found) or re.findall(r"GLOBAL (\S+) (?:was not an allowed|whose module)", refusal)


def _refusal_message(path: Path, needs: list[str], refusal: str) -> str:
    if needs:
        what = "code or objects other than tensors and numbers (it names " + ", ".join(needs[:5]) + \
            (" ..." if len(needs) > 5 else "") + ")"
    else:
        reason = re.search(r"(Unsupported operand \d+|Can only build [^\n]*|Unsupported global[^\n.]*)", refusal)
        what = "code or objects other than tensors and numbers" + (f" ({reason.group(1)})" if reason else "")
    return (f"refused {path}: it holds {what}, and conr does not run code from a checkpoint (nothing in it "
            f"was run). If you did not write it, delete it. If you wrote it yourself with an older conr and "
            f"trust it, convert it once: torch.save(conr.engine.plain_data(torch.load(PATH, "
            f"weights_only=False)), PATH) (that load runs whatever the file holds)")


@lru_cache(maxsize=1)
def _numpy_allow_list() -> tuple:
    """numpy's array and scalar rebuilders under the names numpy 1 and numpy 2 pickle
    them by, ndarray and dtype, and the dtype classes of :data:`_NUMPY_DTYPES`."""
    reconstruct = np.zeros(1).__reduce__()[0]   # numpy's own ndarray rebuilder, whatever its module
    scalar = np.float64(0.0).__reduce__()[0]    # and its scalar rebuilder
    named = [(f, f"{module}.multiarray.{name}") for f, name in ((reconstruct, "_reconstruct"), (scalar, "scalar"))
             for module in ("numpy.core", "numpy._core")]
    return tuple(named + [np.ndarray, np.dtype] + [type(np.dtype(d)) for d in _NUMPY_DTYPES])


@lru_cache(maxsize=1)
def _numpy_names() -> frozenset:
    """The names a pickle of numeric numpy arrays and scalars refers to."""
    return frozenset([g[1] for g in _numpy_allow_list() if isinstance(g, tuple)] + ["numpy.ndarray", "numpy.dtype"])
