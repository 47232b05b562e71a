"""Resilience: a `conr train` killed with SIGKILL (before its first checkpoint and
again mid-run) and resumed ends bit-identical to an uninterrupted run on a CPU in
deterministic mode; a NaN/inf loss stops the run with a clear message and leaves
the last good checkpoint byte-identical; output files are replaced atomically;
a full disk is reported before training starts."""
from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from conr.cli import main
from conr.config import config_from_dict
from conr.io import atomic_write_bytes, read_jsonl
from conr.engine import NonFiniteLossError, Trainer, load_checkpoint

TIMING_KEYS = {"epoch_seconds", "cluster_seconds"}
EPOCHS = 6


def _images(n=192, size=16, seed=0):
    """Three visually distinct synthetic classes: stripes, checkerboards, blobs."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size]
    out = np.zeros((n, size, size, 3), np.float32)
    labels = np.arange(n) % 3
    for i, c in enumerate(labels):
        if c == 0:
            out[i, ..., 0] = np.where((y // 2) % 2 == 0, 230, 50)
        elif c == 1:
            out[i, ..., 2] = np.where((x // 3 + y // 3) % 2 == 0, 230, 40)
            out[i, ..., 0] = 60
        else:
            out[i, ..., 1] = np.where((x - size / 2) ** 2 + (y - size / 2) ** 2 < 16, 220, 30)
    out += rng.normal(0, 15, out.shape)
    return np.clip(out, 0, 255).astype(np.uint8), labels


def _config(tmp: Path, **train) -> Path:
    images, labels = _images()
    np.savez(tmp / "data.npz", images=images, labels=labels)
    cfg = {
        "method": "conr",
        "data": {"name": "numpy", "root": str(tmp / "data.npz"), "split": "all", "image_size": 16},
        "model": {"backbone": "small_cnn", "width": 8, "hidden_dim": 64, "proj_dim": 32},
        "train": {"epochs": EPOCHS, "batch_size": 32, "lr": 0.05, "warmup_epochs": 1, "ema_base": 0.99,
                  "device": "cpu", "deterministic": True, "threads": 1, **train},
        "stage2": {"start_epoch": min(3, train.get("epochs", EPOCHS) - 1), "t_end": 5, "k": 5, "k1": 5, "k2": 2},
        "cluster": {"n_clusters": 3, "eval_every": 1},
        "run": {"progress": False, "tensorboard": False, "log_every": 1, "save_every": 2},
    }
    path = tmp / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _train_cmd(*args) -> list[str]:
    return [sys.executable, "-m", "conr", "train", *args]


def _kill_when(proc: subprocess.Popen, ready, delay: float, timeout: float = 120.0) -> None:
    """SIGKILL ``proc`` ``delay`` seconds after ``ready()`` holds; fail if it finished first."""
    end = time.monotonic() + timeout
    while not ready():
        assert proc.poll() is None, f"the run ended (rc {proc.returncode}) before it could be killed"
        assert time.monotonic() < end, "timed out waiting to kill the run"
        time.sleep(0.005)
    time.sleep(delay)
    assert proc.poll() is None, "the run ended before it could be killed; make the test run longer"
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(30) == -signal.SIGKILL


def _strip(history):
    return [{k: v for k, v in r.items() if k not in TIMING_KEYS} for r in history]


def _same_state(a, b, where=""):
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for k in a:
            _same_state(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _same_state(x, y, f"{where}[{i}]")
    else:
        assert a == b, where


@pytest.mark.slow  # trains in subprocesses, kills one and resumes it
def test_sigkill_and_resume_equals_an_uninterrupted_run(tmp_path):
    cfg = _config(tmp_path)
    env = dict(os.environ, CONR_CACHE="off", PYTHONUNBUFFERED="1")
    # the reference: one uninterrupted run (in a subprocess too, so both sides start alike)
    ref_dir, run_dir = tmp_path / "ref", tmp_path / "killed"
    ref = subprocess.Popen(_train_cmd("--config", str(cfg), "--run-dir", str(ref_dir)), env=env,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    # kill 1: during epoch 1, before any checkpoint exists
    proc = subprocess.Popen(_train_cmd("--config", str(cfg), "--run-dir", str(run_dir)), env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _kill_when(proc, lambda: (run_dir / "config.yaml").exists(), 0.0)
    assert not (run_dir / "checkpoint.pt").exists()

    out, _ = ref.communicate(timeout=300)
    assert ref.returncode == 0, out
    ref_hist = read_jsonl(ref_dir / "metrics.jsonl")
    epoch_s = float(np.median([r["epoch_seconds"] for r in ref_hist]))

    # kill 2: mid-run, about half an epoch after epoch 3 was logged (inside epoch 4, stage 2)
    proc = subprocess.Popen(_train_cmd("--run-dir", str(run_dir), "--resume"), env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _kill_when(proc, lambda: len(read_jsonl(run_dir / "metrics.jsonl")) >= 3, 0.5 * epoch_s)
    killed_at = load_checkpoint(run_dir)["epoch"]
    assert 1 <= killed_at < EPOCHS

    # finish
    done = subprocess.run(_train_cmd("--run-dir", str(run_dir), "--resume"), env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr

    a, b = load_checkpoint(ref_dir), load_checkpoint(run_dir)
    assert a["epoch"] == b["epoch"] == EPOCHS
    _same_state(a["method_state"], b["method_state"], "weights")
    # the optimiser's numbers (momentum buffers, LRs); implementation flags such as foreach may differ
    _same_state(a["optimizer_state"]["state"], b["optimizer_state"]["state"], "optimizer")
    assert [g["lr"] for g in a["optimizer_state"]["param_groups"]] == \
        [g["lr"] for g in b["optimizer_state"]["param_groups"]]
    assert torch.equal(a["pseudo_labels"], b["pseudo_labels"])
    assert torch.equal(a["centers"], b["centers"])
    assert _strip(a["history"]) == _strip(b["history"])
    # metrics.jsonl: every epoch exactly once, equal to the uninterrupted run's
    hist = read_jsonl(run_dir / "metrics.jsonl")
    assert [r["epoch"] for r in hist] == list(range(1, EPOCHS + 1))
    assert _strip(hist) == _strip(ref_hist)
    assert {"nmi", "acc", "ari"} <= hist[-1].keys()
    assert (run_dir / "stage1.pt").exists() and (run_dir / "epoch0006.pt").exists()
    assert not list(run_dir.glob(".*.tmp"))
    # the printed closing line is the same too
    assert out.strip().splitlines()[-1] == done.stdout.strip().splitlines()[-1]


def _trainer(tmp_path, **train):
    cfg = config_from_dict(yaml.safe_load(_config(tmp_path, **train).read_text()))
    return Trainer(cfg, run_dir=tmp_path / "run", log=lambda *a: None)


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path):
    trainer = _trainer(tmp_path, epochs=3)
    run = tmp_path / "run"
    saved = {}
    save = trainer.save_checkpoint

    def save_and_record():
        save()
        saved[trainer.epoch] = (run / "checkpoint.pt").read_bytes()

    trainer.save_checkpoint = save_and_record
    loss_fn = trainer.method.training_loss

    def poisoned(v1, v2, ctx):  # epoch 2 diverges
        loss = loss_fn(v1, v2, ctx)
        return loss * float("nan") if ctx.epoch == 2 else loss

    trainer.method.training_loss = poisoned
    with pytest.raises(NonFiniteLossError) as info:
        trainer.fit()
    msg = str(info.value)
    assert "loss became NaN/inf in epoch 2" in msg
    assert f"the last good checkpoint (epoch 1) is kept at {run / 'checkpoint.pt'}" in msg
    assert "Lower train.lr" in msg
    assert list(saved) == [1]
    assert (run / "checkpoint.pt").read_bytes() == saved[1]
    assert load_checkpoint(run)["epoch"] == 1
    assert not list(run.glob(".*.tmp"))


def test_absurd_learning_rate_on_the_command_line(tmp_path, capsys):
    cfg = _config(tmp_path, epochs=1)
    run = tmp_path / "run"
    assert main(["train", "--config", str(cfg), "--run-dir", str(run)]) == 0
    good = (run / "checkpoint.pt").read_bytes()
    capsys.readouterr()
    # continue to epoch 3 with an absurd learning rate: the run stops, epoch 1's checkpoint stays
    rc = main(["train", "--run-dir", str(run), "--resume", "train.epochs=3", "train.lr=1e30"])
    assert rc == 2
    err = capsys.readouterr().err
    assert "NaN/inf" in err and "checkpoint" in err and "Lower train.lr" in err
    assert (run / "checkpoint.pt").read_bytes() == good


def test_weights_that_diverge_on_the_last_step_are_never_saved(tmp_path):
    trainer = _trainer(tmp_path, epochs=2)
    trainer.train_epoch(1)
    trainer.epoch = 1
    trainer.save_checkpoint()
    good = (tmp_path / "run" / "checkpoint.pt").read_bytes()
    with torch.no_grad():
        next(trainer.method.parameters()).fill_(float("inf"))
    trainer.epoch = 2
    with pytest.raises(NonFiniteLossError, match="weights became NaN/inf at epoch 2"):
        trainer.save_checkpoint()
    assert (tmp_path / "run" / "checkpoint.pt").read_bytes() == good


def test_atomic_write_keeps_the_old_file_when_the_disk_fills(tmp_path, monkeypatch):
    target = tmp_path / "report.html"
    atomic_write_bytes(target, b"the good report")

    def full(_fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("conr.io.os.fsync", full)
    with pytest.raises(OSError, match="No space left"):
        atomic_write_bytes(target, b"a half-written report" * 1000)
    assert target.read_bytes() == b"the good report"
    assert [p.name for p in tmp_path.iterdir()] == ["report.html"]  # no temp file left behind


def test_full_disk_is_reported_before_training(tmp_path, monkeypatch, capsys):
    import shutil
    from collections import namedtuple

    folder = tmp_path / "imgs"
    folder.mkdir()
    from PIL import Image

    for i in range(6):
        Image.new("RGB", (20, 20), (40 * i, 0, 0)).save(folder / f"{i}.png")
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage(10**9, 10**9 - 2**20, 2**20))
    rc = main(["cluster", str(folder), "--k", "2", "--out", str(tmp_path / "out")])
    assert rc == 2
    err = capsys.readouterr().err
    assert "only 1 MiB free" in err
    assert not (tmp_path / "out" / "run").exists()
