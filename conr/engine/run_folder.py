"""The run folder: its default name, the checks and lock before the first write, the
config.yaml that says how the run was set up (and why, for automatic settings), the
per-epoch metrics.jsonl, and the lock's release at the end."""
from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

from ..config import Config, config_to_dict
from ..io import append_jsonl, atomic_write_text, check_writable
from ..options import option
from .runlock import acquire_run_lock, release_run_lock
from .checkpoint import disk_full_note

__all__ = ["RunFolder", "default_run_dir", "write_config"]


def default_run_dir(cfg: Config) -> Path:
    r = cfg.run
    name = r.name or f"{cfg.data.name}-{cfg.method}-{datetime.now():%Y%m%d-%H%M%S}"
    return Path(r.out_dir) / name


def write_config(run_dir: Path, cfg: Config, notes: list[str] | None = None) -> None:
    """config.yaml: the full config, headed by the reasons of the automatic settings (``notes``)."""
    import yaml

    header = "".join(f"# {line}\n" for line in
                     (["automatic settings (conr/autoconfig.py), why each was chosen:"] + notes if notes else []))
    atomic_write_text(Path(run_dir) / "config.yaml", header + yaml.safe_dump(config_to_dict(cfg), sort_keys=False))


class RunFolder:
    """One run's folder on disk (rank 0 only writes)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def prepare(self, cfg: Config, notes: list[str], resume: bool, history: list[dict], need_bytes: int) -> None:
        """Check the folder is writable with room for the run, take its lock (one process
        per run folder), refuse to overwrite a finished run, clean what a killed run left
        (on resume) and write config.yaml."""
        check_writable(self.path, need_bytes=need_bytes)
        acquire_run_lock(self.path, option("--run-dir"))
        if not resume and (self.path / "metrics.jsonl").exists():
            raise FileExistsError(f"{self.path} already holds a run; pass --resume to continue it or "
                                  f"choose another {option('run.name')}")
        if resume:
            for stale in self.path.glob(".*.tmp"):  # temp files of an atomic write that was killed
                stale.unlink(missing_ok=True)
            # a run killed after logging an epoch but before its checkpoint replays that epoch:
            # keep exactly the epochs the checkpoint holds, so no line is duplicated
            lines = "".join(json.dumps(r, sort_keys=True) + "\n" for r in history)
            atomic_write_text(self.path / "metrics.jsonl", lines)
        write_config(self.path, cfg, notes)

    def append_metrics(self, record: dict) -> None:
        with disk_full_note(self.path):
            append_jsonl(self.path / "metrics.jsonl", record)

    def append_event(self, record: dict) -> None:
        append_jsonl(self.path / "events.jsonl", record)

    def release(self) -> None:
        release_run_lock(self.path)
