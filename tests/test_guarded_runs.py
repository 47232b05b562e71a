"""Guarded run folders: one process per folder (lock, stale-lock takeover), a full disk
that names the file and the resume command, output folders inside the input folder
left out of the images, no empty folder after a failed run, messages that name the
options of the command the user ran, flat arrays, unused config keys."""
from __future__ import annotations

import csv
import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conr.cli import main
from conr.engine.runlock import LOCK_NAME, RunLockedError, acquire_run_lock, pid_alive, release_run_lock
from test_cluster_report import N_READABLE, TINY, make_folder, run_cli as _run


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    base = tmp_path_factory.mktemp("guard")
    old = os.environ.get("CONR_CACHE")
    os.environ["CONR_CACHE"] = "off"
    yield make_folder(base / "photos"), base
    if old is None:
        os.environ.pop("CONR_CACHE", None)
    else:
        os.environ["CONR_CACHE"] = old


@pytest.fixture
def other_process():
    """A live process that is not this one (its PID holds a lock)."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    yield proc.pid
    proc.kill()
    proc.wait()


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    assert not pid_alive(proc.pid)
    return proc.pid


def _write_lock(folder: Path, pid: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    import socket

    (folder / LOCK_NAME).write_text(json.dumps({"pid": pid, "host": socket.gethostname(), "since": "earlier"}))


# --------------------------------------------------------------------------- the lock
def test_a_live_lock_stops_a_second_process_and_names_its_pid(tmp_path, other_process):
    _write_lock(tmp_path / "run", other_process)
    with pytest.raises(RunLockedError, match=rf"in use by process {other_process}\b.*--out"):
        acquire_run_lock(tmp_path / "run", "--out")
    assert json.loads((tmp_path / "run" / LOCK_NAME).read_text())["pid"] == other_process  # untouched


def test_a_stale_lock_of_a_dead_process_is_taken_over(tmp_path):
    _write_lock(tmp_path / "run", _dead_pid())
    acquire_run_lock(tmp_path / "run")
    assert json.loads((tmp_path / "run" / LOCK_NAME).read_text())["pid"] == os.getpid()
    acquire_run_lock(tmp_path / "run")  # re-entrant in the holding process
    release_run_lock(tmp_path / "run")
    assert not (tmp_path / "run" / LOCK_NAME).exists()


@pytest.mark.slow  # two Python subprocesses that import conr
def test_lock_between_two_real_processes(tmp_path):
    acquire_run_lock(tmp_path)
    code = ("import sys; from conr.engine.runlock import acquire_run_lock, RunLockedError\n"
            f"try:\n    acquire_run_lock({str(tmp_path)!r}, '--run-dir')\nexcept RunLockedError as e:\n"
            "    print(e); sys.exit(3)\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=Path(__file__).parent.parent)
    assert res.returncode == 3 and f"process {os.getpid()}" in res.stdout and "--run-dir" in res.stdout
    release_run_lock(tmp_path)
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=Path(__file__).parent.parent)
    assert res.returncode == 0, res.stdout + res.stderr


def test_conr_train_refuses_a_run_folder_in_use(tmp_path, other_process, capsys):
    _write_lock(tmp_path / "run", other_process)
    rc = main(["train", "--config", "digits", "--run-dir", str(tmp_path / "run"), "data.subset=64",
               "train.epochs=2", "train.batch_size=32", "stage2.start_epoch=1", "stage2.t_end=2", "run.progress=false"])
    assert rc == 2
    err = capsys.readouterr().err
    assert f"process {other_process}" in err and "--run-dir" in err
    assert not (tmp_path / "run" / "metrics.jsonl").exists()


# --------------------------------------------------------------------------- full disk
@pytest.mark.slow  # trains through `conr cluster`
def test_enospc_names_the_file_the_intact_checkpoint_and_the_resume_command(folder, monkeypatch, capsys):
    import conr.engine.checkpoint as train_mod  # where the checkpoint is written

    photos, base = folder
    real = train_mod.atomic_torch_save
    calls = {"n": 0}

    def full_at_second_epoch(obj, path):
        if Path(path).name == "checkpoint.pt" and obj["epoch"] >= 2:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        calls["n"] += 1
        return real(obj, path)

    monkeypatch.setattr(train_mod, "atomic_torch_save", full_at_second_epoch)
    out = base / "full"
    rc = main(["cluster", str(photos), "--k", "3", "--out", str(out)] + TINY)
    err = capsys.readouterr().err
    assert rc == 2
    ckpt = out / "run" / "checkpoint.pt"
    assert "no space left" in err and str(ckpt) in err
    assert "(epoch 1) is intact" in err
    assert f"conr cluster {photos} --out {out} --resume" in err
    monkeypatch.setattr(train_mod, "atomic_torch_save", real)
    import torch

    assert torch.load(ckpt, weights_only=False)["epoch"] == 1  # the last good checkpoint, untouched
    rc, _ = _run(["cluster", str(photos), "--k", "3", "--out", str(out), "--resume"] + TINY)  # the command works
    assert rc == 0 and torch.load(ckpt, weights_only=False)["epoch"] == 3


def test_enospc_in_conr_train_says_conr_train_resume(tmp_path, monkeypatch, capsys):
    import conr.io as io_mod

    real = io_mod.append_jsonl

    def full(path, record):
        if record.get("epoch") == 2:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))  # no file name: conr adds it
        return real(path, record)

    monkeypatch.setattr("conr.engine.run_folder.append_jsonl", full)
    run = tmp_path / "run"
    rc = main(["train", "--config", "digits", "--run-dir", str(run), "data.subset=64", "train.epochs=3",
               "train.batch_size=32", "stage2.start_epoch=1", "stage2.t_end=2", "run.progress=false"])
    err = capsys.readouterr().err
    assert rc == 2 and "no space left" in err
    assert f"conr train --run-dir {run} --resume" in err and "(epoch 1) is intact" in err


def test_atomic_write_names_the_file_on_enospc(tmp_path, monkeypatch):
    from conr import io as io_mod

    def boom(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(io_mod.os, "fsync", boom)
    with pytest.raises(OSError) as info:
        io_mod.atomic_write_bytes(tmp_path / "report.html", b"x")
    assert info.value.errno == errno.ENOSPC and info.value.filename == str(tmp_path / "report.html")
    assert list(tmp_path.iterdir()) == []  # no temp file left behind


# --------------------------------------------------------------------------- folders
@pytest.mark.slow  # trains through `conr cluster`
def test_an_output_folder_inside_the_input_folder_is_left_out(folder):
    photos, _ = folder
    inner = photos / "clusters-out"
    rc, out = _run(["cluster", str(photos), "--k", "3", "--out", str(inner)] + TINY)
    assert rc == 0 and "left out of the images" in out
    assert len(list(inner.rglob("*.png"))) > 3  # its own grids and plots are PNG images
    # a second run over the same folder sees exactly the user's images again
    rc, _ = _run(["cluster", str(photos), "--k", "3", "--out", str(photos / "again"), "--checkpoint",
                  str(inner / "run"), "--no-plots"])
    assert rc == 0
    with open(photos / "again" / "assignments.csv", newline="") as fh:
        paths = [r["path"] for r in csv.DictReader(fh)]
    assert len(paths) == N_READABLE
    assert not any("clusters-out" in p or "/again/" in p for p in paths)


def test_a_failed_cluster_run_leaves_no_output_folder(folder, capsys):
    photos, base = folder
    for extra in (["--k", "500"], ["--k", "3", "--on-bad-image", "fail"]):
        out = base / f"failed{len(extra)}"
        assert main(["cluster", str(photos), "--out", str(out)] + extra + TINY) == 2
        assert not out.exists(), extra
    capsys.readouterr()


def test_cluster_messages_name_its_own_options(folder, capsys, tmp_path):
    photos, base = folder
    assert main(["cluster", str(photos), "--k", "3", "--out", str(base / "bad"), "--on-bad-image", "fail"] + TINY) == 2
    err = capsys.readouterr().err
    assert "--on-bad-image skip" in err and "data.on_bad_image" not in err
    assert main(["cluster", str(photos), "--k", "500", "--out", str(base / "k500")] + TINY) == 2
    err = capsys.readouterr().err
    assert "--k 500" in err and "cluster.n_clusters" not in err
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert main(["cluster", str(photos), "--k", "3", "--out", str(blocker / "o")]) == 2
    err = capsys.readouterr().err
    assert "--out" in err and "run.out_dir" not in err
    # --resume on a folder that does not exist: said plainly, nothing created
    missing = base / "never-made"
    assert main(["cluster", str(photos), "--k", "3", "--out", str(missing), "--resume"]) == 2
    err = capsys.readouterr().err
    assert "does not exist" in err and "--out" in err and "--run-dir" not in err and not missing.exists()


def test_train_resume_on_a_missing_folder_is_plain(tmp_path, capsys):
    assert main(["train", "--run-dir", str(tmp_path / "nope"), "--resume"]) == 2
    err = capsys.readouterr().err
    assert "does not exist" in err and "cifar10" not in err and len(err.splitlines()) == 1
    assert not (tmp_path / "nope").exists()


def test_a_config_key_the_loader_ignores_is_an_error(capsys):
    assert main(["train", "--config", "digits", "data.root=/my/folder"]) == 2
    err = capsys.readouterr().err
    assert "data.root=/my/folder" in err and "data.name=imagefolder" in err


# --------------------------------------------------------------------------- flat arrays
def test_estimator_accepts_flat_arrays():
    from conr.estimator import as_image_data

    rng = np.random.default_rng(0)
    grey = rng.integers(0, 256, (5, 12, 12), dtype=np.uint8)
    colour = rng.integers(0, 256, (5, 3, 10, 10), dtype=np.uint8)  # N,C,H,W
    hwc = rng.integers(0, 256, (5, 6, 8, 3), dtype=np.uint8)
    # square guesses: H*H grey, 3*H*H colour planes; compared with the unflattened arrays
    assert np.array_equal(as_image_data(grey.reshape(5, -1), 12).images.numpy()[:, 0], grey)
    assert np.array_equal(as_image_data(colour.reshape(5, -1), 10).images.numpy(), colour)
    # explicit image_shape, e.g. pixel-interleaved, non-square
    d = as_image_data(hwc.reshape(5, -1), 8, image_shape=(6, 8, 3)).images
    assert d.shape == (5, 3, 8, 8)
    assert np.array_equal(as_image_data(hwc, 8).images.numpy(), d.numpy())
    with pytest.raises(ValueError, match="neither a square.*image_shape"):
        as_image_data(np.zeros((4, 50), np.uint8), 8)
    with pytest.raises(ValueError, match="image_shape=\\(7, 7\\) holds 49"):
        as_image_data(np.zeros((4, 50), np.uint8), 8, image_shape=(7, 7))
    import conr

    model = conr.CoNR(n_clusters=2, image_shape=(6, 8, 3))
    assert model.load(hwc.reshape(5, -1)).images.shape[0] == 5


def test_a_resnet_override_drops_the_automatic_small_cnn_width():
    # conr cluster ... model.backbone=resnet18_cifar on a CPU used to fail: resnet18_cifar() got 'width'
    import conr
    from conr.auto.resolve import image_settings, user_settings
    from conr.data.survey import survey_images
    from conr.estimator import as_image_data

    data = as_image_data(np.zeros((40, 16, 16, 3), np.uint8), 16)

    def config(**params):
        user = user_settings(conr.CoNR(n_clusters=3, device="cpu", **params).get_params())
        return image_settings(user, survey_images(data.images), data, device_type="cpu", k=3)[0]

    cfg = config(overrides=["model.backbone=resnet18_cifar"])
    assert cfg.model.backbone == "resnet18_cifar" and cfg.model.width is None
    assert config().model.width == 16
    assert config(overrides=["model.width=8"]).model.width == 8
