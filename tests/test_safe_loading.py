"""Safe loading (conr/engine/safe_pickle.py): a checkpoint someone hands over cannot run code.

Each crafted file carries a payload that creates a marker file when unpickled. The
payloads are first shown to be live with Python's own unpickler (the marker appears), so
a later test that finds no marker shows that conr refused the file, not that the payload
was a dud. Every way conr reads a checkpoint is tried: load_checkpoint,
Trainer.from_checkpoint, CoNR.from_checkpoint, a resumed run, ``init_from`` and the
commands eval, plot, predict, cluster --checkpoint and train --init-from.

A real tiny run's checkpoint is then checked the other way: it names nothing beyond
torch's defaults, reads back (with ``weights_only=True``) exactly what the unrestricted
unpickler reads, and resumes and predicts. An older checkpoint's numpy values load as
tensors and Python numbers.
"""
from __future__ import annotations

import builtins
import collections
import enum
import os
import pickle
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from conr import CoNR
from conr.cli import main
from conr.config import load_config
from conr.engine import (CHECKPOINT_NAME, Trainer, UnsafeCheckpointError, load_checkpoint, plain_data,
                         safe_torch_load)

TINY = ["model.width=8", "model.hidden_dim=64", "model.proj_dim=32", "train.batch_size=128",
        "train.epochs=2", "stage2.start_epoch=1", "stage2.t_end=2", "cluster.eval_every=1",
        "cluster.n_init=1", "run.progress=false", "run.tensorboard=false", "train.warmup_epochs=1"]
QUIET = dict(log=lambda *a, **k: None)


class _Payload:
    """Unpickling calls ``func(*args)``: what a crafted checkpoint does."""

    def __init__(self, func, args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def _payload(kind: str, marker: Path) -> _Payload:
    if kind == "os.system":
        return _Payload(os.system, (f"touch {marker}",))
    if kind == "exec":
        return _Payload(builtins.exec, (f"open({str(marker)!r}, 'w').close()",))
    return _Payload(subprocess.call, (["touch", str(marker)],))


PAYLOADS = ("os.system", "exec", "subprocess")
# torch's default zip format, a newer pickle protocol (other opcodes), the legacy non-zip format
FORMATS = {"zip": {}, "protocol4": {"pickle_protocol": 4}, "legacy": {"_use_new_zipfile_serialization": False}}


def _crafted(path: Path, kind: str, marker: Path, fmt: str = "zip") -> Path:
    """A file that looks like a conr checkpoint and runs the payload when unpickled."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"version": 1, "method_state": {"w": torch.zeros(2)}, "history": [_payload(kind, marker)]},
               path, **FORMATS[fmt])
    return path


@pytest.mark.parametrize("kind", PAYLOADS)
def test_the_payloads_are_live(tmp_path: Path, kind: str):
    marker = tmp_path / "ran"
    pickle.loads(pickle.dumps(_payload(kind, marker)))  # the unrestricted unpickler runs it
    assert marker.exists()


@pytest.mark.filterwarnings("ignore:Detected pickle protocol 4")
@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("kind", PAYLOADS)
def test_load_checkpoint_refuses_code_and_runs_nothing(tmp_path: Path, kind: str, fmt: str):
    marker = tmp_path / "ran"
    path = _crafted(tmp_path / "run" / CHECKPOINT_NAME, kind, marker, fmt)
    for target in (path, path.parent):  # a file or its run folder
        with pytest.raises(UnsafeCheckpointError, match=r"refused .*checkpoint\.pt.*does not run code"):
            load_checkpoint(target)
    assert not marker.exists()


def test_the_refusal_names_the_global(tmp_path: Path):
    path = _crafted(tmp_path / CHECKPOINT_NAME, "exec", tmp_path / "ran")
    with pytest.raises(UnsafeCheckpointError, match=r"builtins\.exec") as err:
        load_checkpoint(path)
    assert isinstance(err.value, ValueError)  # the command line prints it as one line, status 2
    assert "other than tensors and numbers" in str(err.value) and "weights_only=False" in str(err.value)


def test_an_environment_override_cannot_turn_the_restricted_reader_off(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    marker = tmp_path / "ran"
    with pytest.raises(UnsafeCheckpointError):
        load_checkpoint(_crafted(tmp_path / CHECKPOINT_NAME, "os.system", marker))
    assert not marker.exists()


def test_every_python_entry_point_refuses(tmp_path: Path):
    marker = tmp_path / "ran"
    run = _crafted(tmp_path / "evil" / CHECKPOINT_NAME, "os.system", marker).parent
    cfg = load_config("digits", TINY + [f"run.out_dir={tmp_path / 'runs'}", "run.name=r"])
    attempts = {
        "Trainer.from_checkpoint": lambda: Trainer.from_checkpoint(run, **QUIET),
        "CoNR.from_checkpoint": lambda: CoNR.from_checkpoint(run),
        "init_from": lambda: Trainer(cfg, write=False, init_from=run, **QUIET),
        "resume": lambda: Trainer(cfg, run_dir=run, resume=True, **QUIET),
    }
    for name, attempt in attempts.items():
        with pytest.raises(UnsafeCheckpointError, match="does not run code"):
            attempt()
        assert not marker.exists(), name


def test_every_command_refuses(tmp_path: Path, capsys):
    marker = tmp_path / "ran"
    run = _crafted(tmp_path / "evil" / CHECKPOINT_NAME, "os.system", marker).parent
    images = tmp_path / "images"
    images.mkdir()
    commands = {
        "eval": ["eval", str(run)],
        "plot": ["plot", str(run)],
        "predict": ["predict", str(run), str(images), "--out", str(tmp_path / "p.csv")],
        "cluster": ["cluster", str(images), "--checkpoint", str(run), "--out", str(tmp_path / "out")],
        "train": ["train", "--config", "digits", "--init-from", str(run / CHECKPOINT_NAME),
                  f"run.out_dir={tmp_path / 'runs'}", "run.name=t"] + TINY,
    }
    for name, argv in commands.items():
        assert main(argv) == 2, name
        err = capsys.readouterr().err
        assert "refused" in err and "posix.system" in err and "does not run code" in err, (name, err)
        assert not marker.exists(), name


def test_plain_data_converts_numpy_and_refuses_objects():
    Pair = collections.namedtuple("Pair", "a b")

    class Level(enum.IntEnum):
        HIGH = 3

    raw = {"arr": np.arange(6, dtype=np.float32).reshape(2, 3), "swapped": np.array([1.5, 2.5], dtype=">f8"),
           "f": np.float64(0.25), "i": np.int64(7), "b": np.bool_(True), "s": np.str_("x"),
           "path": Path("/a/b"), "pair": Pair(1, np.float32(2.0)), "set": {4}, "level": Level.HIGH,
           "words": np.array(["u", "v"]), 3: [None, "t"], "od": collections.OrderedDict(w=torch.ones(1))}
    out = plain_data(raw)
    assert torch.equal(out["arr"], torch.tensor([[0.0, 1.0, 2.0], [3.0, 4.0, 5.0]]))
    assert torch.equal(out["swapped"], torch.tensor([1.5, 2.5], dtype=torch.float64))
    assert (out["f"], out["i"], out["b"], out["s"]) == (0.25, 7, True, "x")
    assert [type(out[k]) for k in ("f", "i", "b", "s", "level")] == [float, int, bool, str, int]
    assert out["path"] == "/a/b" and type(out["pair"]) is tuple and out["pair"] == (1, 2.0)
    assert out["set"] == [4] and out["words"] == ["u", "v"] and out[3] == [None, "t"]
    assert type(out["od"]) is collections.OrderedDict
    with pytest.raises(TypeError, match=r"checkpoint\['history'\]\[1\] is a .*_Payload"):
        plain_data({"history": [1, _payload("exec", Path("never"))]})


def _old_numpy_checkpoint(ckpt: dict) -> dict:
    """``ckpt`` the way an older conr might have saved it: numpy arrays and scalars."""
    old = dict(ckpt)
    old["pseudo_labels"] = ckpt["pseudo_labels"].numpy()
    old["centers"] = ckpt["centers"].numpy()
    old["history"] = [{k: (np.float64(v) if isinstance(v, float) else v) for k, v in rec.items()}
                      for rec in ckpt["history"]]
    old["data"] = {**ckpt["data"], "mean": [np.float64(m) for m in ckpt["data"]["mean"]], "n": np.int64(1797)}
    return old


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    """A two-epoch CoNR run on digits (stage 2 from epoch 2): checkpoint.pt and stage1.pt."""
    base = tmp_path_factory.mktemp("safe")
    Trainer(load_config("digits", TINY + [f"run.out_dir={base}", "run.name=r"]), **QUIET).fit()
    return base / "r"


def _same(a, b) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, dict):
        return type(a) is type(b) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return type(a) is type(b) and (a == b or (a != a and b != b))  # NaN equals NaN here


def _leaf_types(obj, seen: set) -> set:
    seen.add(type(obj))
    if isinstance(obj, dict):
        for k, v in obj.items():
            _leaf_types(k, seen)
            _leaf_types(v, seen)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            _leaf_types(v, seen)
    return seen


def test_a_real_checkpoint_is_plain_data(tiny_run: Path):
    plain = {torch.Tensor, torch.nn.Parameter, int, float, str, bool, type(None), list, tuple, dict,
             collections.OrderedDict}
    for name in (CHECKPOINT_NAME, "stage1.pt"):
        path = tiny_run / name
        assert torch.serialization.get_unsafe_globals_in_checkpoint(path) == []
        safe = load_checkpoint(path)
        assert _leaf_types(safe, set()) <= plain
        # the reference: the unrestricted unpickler reads the same (this file is our own)
        assert _same(torch.load(path, weights_only=False), safe)


def test_a_real_checkpoint_resumes_and_predicts(tiny_run: Path, tmp_path: Path):
    run = Path(shutil.copytree(tiny_run, tmp_path / "r"))
    cfg = load_config("digits", TINY + ["train.epochs=3", f"run.out_dir={tmp_path}", "run.name=r"])
    trainer = Trainer(cfg, run_dir=run, resume=True, **QUIET)
    assert trainer.epoch == 2
    trainer.fit()
    assert load_checkpoint(run)["epoch"] == 3
    est = CoNR.from_checkpoint(run)
    images = Trainer.from_checkpoint(run, **QUIET).data.images[:40]
    labels = est.predict(images)
    assert labels.shape == (40,) and 0 <= labels.min() and labels.max() < 10


def test_an_old_checkpoint_with_numpy_values_loads(tiny_run: Path, tmp_path: Path):
    ckpt = load_checkpoint(tiny_run)
    path = tmp_path / "old" / CHECKPOINT_NAME
    path.parent.mkdir()
    torch.save(_old_numpy_checkpoint(ckpt), path)
    assert any(g.startswith("numpy") for g in torch.serialization.get_unsafe_globals_in_checkpoint(path))
    before = list(torch.serialization.get_safe_globals())
    again = load_checkpoint(path)
    assert list(torch.serialization.get_safe_globals()) == before  # the numpy allow-list was scoped to the load
    assert _same(again, ckpt)  # tensors and Python numbers, as a new checkpoint holds
    trainer = Trainer.from_checkpoint(path, **QUIET)
    assert trainer.epoch == ckpt["epoch"] and torch.equal(trainer.pseudo_labels.cpu(), ckpt["pseudo_labels"])


@pytest.mark.parametrize("bad", ["object array", "numpy and os.system"])
def test_numpy_beyond_numbers_is_refused(tmp_path: Path, bad: str):
    marker = tmp_path / "ran"
    extra = np.array([1, "x"], dtype=object) if bad == "object array" else \
        [np.float64(1.0), _payload("os.system", marker)]
    path = tmp_path / CHECKPOINT_NAME
    torch.save({"method_state": {}, "pseudo_labels": np.zeros(3), "extra": extra}, path)
    with pytest.raises(UnsafeCheckpointError, match="does not run code"):
        safe_torch_load(path)
    assert not marker.exists()
