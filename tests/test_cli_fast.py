"""`conr --help`, `conr <command> --help` and `conr methods` answer without importing
torch (it takes seconds to import); the static method list matches the registry."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PROBE = ("import sys, contextlib, io\n"
         "from conr.cli import main\n"
         "buf = io.StringIO()\n"
         "with contextlib.redirect_stdout(buf):\n"
         "    try:\n"
         "        main(sys.argv[1:])\n"
         "    except SystemExit:\n"
         "        pass\n"
         "heavy = sorted(m for m in ('torch', 'torchvision', 'sklearn', 'matplotlib', 'scipy') if m in sys.modules)\n"
         "print('HEAVY=' + ','.join(heavy)); print('OUT=' + str(len(buf.getvalue())))\n")


@pytest.mark.parametrize("argv", [["--help"], ["methods"], ["cluster", "--help"], ["train", "--help"],
                                  ["demo", "--help"], ["predict", "--help"]])
def test_help_and_methods_do_not_import_torch(argv):
    res = subprocess.run([sys.executable, "-c", PROBE, *argv], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert res.returncode == 0, res.stderr
    assert "HEAVY=\n" in res.stdout, res.stdout
    assert int(res.stdout.split("OUT=")[1]) > 100  # it did print the help / the list


def test_importtime_of_help_has_no_torch():
    res = subprocess.run([sys.executable, "-X", "importtime", "-m", "conr", "--help"], capture_output=True, text=True,
                         cwd=ROOT, timeout=120)
    assert res.returncode == 0
    modules = {line.rsplit("|", 1)[-1].strip() for line in res.stderr.splitlines() if line.startswith("import time:")}
    assert "conr.cli" in modules and "torch" not in modules


def test_static_method_list_matches_the_registry():
    from conr.commands.common import METHOD_SUMMARIES
    from conr.methods import METHODS

    assert METHOD_SUMMARIES == {name: cls.description for name, cls in METHODS.items()}


def test_demo_schedule_scales_with_epochs():
    from conr.commands.demo import demo_config, scaled_schedule

    # the shipped 120 / 80 / 95 / every 20, scaled by hand
    assert scaled_schedule(50, 120, 80, 95, 20) == ["stage2.start_epoch=33", "stage2.t_end=40",
                                                    "cluster.eval_every=8"]
    assert scaled_schedule(120, 120, 80, 95, 20) == ["stage2.start_epoch=80", "stage2.t_end=95",
                                                     "cluster.eval_every=20"]
    assert scaled_schedule(2, 120, 80, 95, 20)[:2] == ["stage2.start_epoch=1", "stage2.t_end=2"]
    cfg = demo_config("runs", "demo-x", ["train.epochs=50"])  # what `conr demo --help` used to suggest
    assert (cfg.train.epochs, cfg.stage2.start_epoch, cfg.stage2.t_end) == (50, 33, 40)
    cfg = demo_config("runs", "demo-x", ["train.epochs=50", "stage2.start_epoch=45"])  # the user's value wins
    assert cfg.stage2.start_epoch == 45
    assert demo_config("runs", "demo-x", []).stage2.start_epoch == 80


def test_heartbeat_says_when_the_next_line_comes(monkeypatch):
    from types import SimpleNamespace

    import conr.engine.callbacks as callbacks

    clock = iter([0.0, 40.0, 80.0, 85.0])
    monkeypatch.setattr(callbacks.time, "perf_counter", lambda: next(clock))
    said = []
    fake = SimpleNamespace(epoch=0, cfg=SimpleNamespace(train=SimpleNamespace(epochs=100)), log=said.append,
                           next_scores_epoch=lambda e, last: 20)
    beat = callbacks.Heartbeat(fake, 100)
    beat.after_epoch(1, {"stage": 1, "loss": 1.0})  # 40 s per epoch, next scores after epoch 20: ~760 s away
    assert said == ["epoch 1/100 (stage 1): 40.0 s per epoch; next update after epoch 20 in ~760 s"]
    beat.after_epoch(2, {"stage": 1})  # 40 s after the last message: quiet (at most one a minute)
    assert len(said) == 1


def test_tensorboard_missing_falls_back_and_says_so_once(monkeypatch, tmp_path):
    import conr.engine.callbacks as callbacks
    from conr.config import RunConfig

    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import raises ImportError
    monkeypatch.setattr(callbacks, "_TB_NOTE_SHOWN", False)
    said = []
    for _ in range(2):  # two runs in one process: one note
        run_cfg = RunConfig(tensorboard=True)
        assert callbacks.TensorBoard(tmp_path, run_cfg, log=said.append).writer() is None
        assert run_cfg.tensorboard is False
    assert len(said) == 1 and "not installed" in said[0] and "conr[tensorboard]" in said[0]
