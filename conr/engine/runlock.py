"""One process per run folder.

A run folder holds a ``.lock`` file with the PID and host of the process that
writes to it. A second process that wants the folder stops with an error naming
that PID; a lock left by a process that no longer exists (killed with SIGKILL, a
crash, a reboot) is taken over. Re-acquiring in the process that holds it is a
no-op, so one program may train, cluster and resume in the same folder.
"""
from __future__ import annotations

import atexit
import json
import os
import socket
import time
from pathlib import Path

from ..errors import RunLockedError

__all__ = ["RunLockedError", "acquire_run_lock", "release_run_lock", "LOCK_NAME", "pid_alive"]

LOCK_NAME = ".lock"
_HELD: set[Path] = set()


def pid_alive(pid: int) -> bool:
    """Whether a process with this PID exists on this machine."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _read(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def acquire_run_lock(folder: str | Path, folder_option: str = "the run folder") -> Path:
    """Take the lock of ``folder`` (created if needed) for this process, or raise
    RunLockedError naming the PID that holds it. ``folder_option``: how the user's
    command names the folder (e.g. ``--out``), for the message."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_NAME
    me = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%Y-%m-%d %H:%M:%S")}
    for _ in range(3):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            held = _read(path)
            pid, host = int(held.get("pid", -1) or -1), held.get("host")
            if pid == os.getpid() and host == me["host"]:
                _HELD.add(path)
                return path
            if host not in (None, me["host"]) or pid_alive(pid):
                where = f" on {host}" if host and host != me["host"] else ""
                raise RunLockedError(
                    f"{folder} is in use by process {pid}{where} (since {held.get('since', '?')}): two runs "
                    f"writing one folder would mix their epochs. Wait for it to finish, stop it (kill {pid}), "
                    f"or choose another {folder_option}") from None
            # stale: its process is gone; remove and retry (another taker may race us: O_EXCL decides)
            try:
                path.unlink()
            except FileNotFoundError:
                pass
            continue
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(me, fh)
        _HELD.add(path)
        return path
    raise RunLockedError(f"could not take the lock {path}; another process keeps taking it")


def release_run_lock(folder: str | Path) -> None:
    """Remove the lock of ``folder`` if this process holds it."""
    path = Path(folder) / LOCK_NAME
    if path not in _HELD:
        return
    _HELD.discard(path)
    held = _read(path)
    if held.get("pid") == os.getpid():
        try:
            path.unlink()
        except FileNotFoundError:
            pass


@atexit.register
def _release_all() -> None:
    for path in list(_HELD):
        release_run_lock(path.parent)
