"""Atomic file output: a crash, kill or full disk never leaves a half-written file
in place of a good one (write to a temporary file beside it, fsync, rename)."""
from __future__ import annotations

import errno
import io
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

from .errors import OutputError

__all__ = ["atomic_write_bytes", "atomic_write_text", "atomic_torch_save", "append_jsonl", "read_jsonl",
           "check_writable", "OutputError", "is_disk_full"]


def is_disk_full(exc: BaseException) -> bool:
    """ENOSPC (no space left) or EDQUOT (quota exceeded)."""
    return isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", -1))


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_FILE_MODE = 0o666 & ~_umask()  # what open() would give; mkstemp's own 0600 hides reports from others


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        try:
            os.fchmod(fd, _FILE_MODE)
        except OSError:
            pass
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        if is_disk_full(exc) and getattr(exc, "filename", None) is None:  # name the file the user lost
            raise OSError(exc.errno, os.strerror(exc.errno), str(path)) from None
        raise
    try:  # make the rename itself durable
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_torch_save(obj: Any, path: str | Path) -> Path:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return atomic_write_bytes(path, buf.getvalue())


def append_jsonl(path: str | Path, record: dict) -> None:
    """Append one JSON line and fsync; readers skip a torn last line."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(record, sort_keys=True) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
    except OSError as exc:
        if is_disk_full(exc) and getattr(exc, "filename", None) is None:
            raise OSError(exc.errno, os.strerror(exc.errno), str(path)) from None
        raise


def read_jsonl(path: str | Path) -> list[dict]:
    out = []
    path = Path(path)
    if not path.exists():
        return out
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # torn final line of a killed run
    return out


def check_writable(folder: str | Path, need_bytes: int = 0) -> Path:
    """Create ``folder`` if needed and prove a file can be written there and that
    ``need_bytes`` are free; raise OutputError naming the fix otherwise."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-test-", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        from .options import option

        raise OutputError(f"cannot write to the output folder {folder}: {exc.strerror or exc}; "
                          f"choose another with {option('run.out_dir', '...')} or fix its permissions") from None
    free = shutil.disk_usage(folder).free
    if need_bytes and free < need_bytes:
        from .options import option

        raise OutputError(f"only {free / 2**20:.0f} MiB free in {folder} but the run needs about "
                          f"{need_bytes / 2**20:.0f} MiB for checkpoints; free space or set {option('run.out_dir')}")
    return folder
