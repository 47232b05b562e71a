"""The load other processes put on the machine (conr/machine_load.py): the arithmetic
by hand, /proc/stat parsing on a written file, and a real busy neighbour."""
from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
import torch

from conr.auto.machine_load import LoadWindow, busy_cpu_seconds, quiet_factor


def test_quiet_factor_by_hand():
    # 2 threads on 2 cores, a spinning neighbour took 2/3 of a core (3 threads sharing 2 CPUs):
    # the work needs 1.33 / 2 of the measured time (measured: 291 ms quiet, 431 ms beside it)
    assert quiet_factor(2 / 3, threads=2, cores=2) == pytest.approx(2 / 3)
    assert quiet_factor(0.0, threads=2, cores=2) == 1.0
    assert quiet_factor(None, threads=2, cores=2) == 1.0            # unknown load: no correction
    assert quiet_factor(1.0, threads=4, cores=16) == 1.0            # the neighbour left the threads room
    assert quiet_factor(8.0, threads=16, cores=16) == pytest.approx(0.5)
    assert quiet_factor(15.9, threads=16, cores=16) == 0.25         # never more than 4x
    assert quiet_factor(0.93, threads=2, cores=2, floor=1 / 1.5) == pytest.approx(1 / 1.5)


def test_busy_seconds_from_a_stat_file(tmp_path):
    stat = tmp_path / "stat"
    hz = os.sysconf("SC_CLK_TCK")
    # user nice system idle iowait irq softirq steal
    stat.write_text(f"cpu  {3 * hz} 0 {hz} {10 * hz} {hz} 0 0 0 0 0\ncpu0 1 2 3 4\n")
    assert busy_cpu_seconds(str(stat)) == pytest.approx(4.0)       # all but idle and iowait
    assert busy_cpu_seconds(str(tmp_path / "missing")) is None


@pytest.mark.slow  # spins a subprocess for 1.5 s and reads the machine's load
@pytest.mark.skipif(busy_cpu_seconds() is None, reason="no /proc/stat (not Linux): the load is unknown there")
def test_a_busy_neighbour_is_seen():
    window = LoadWindow()
    child = subprocess.Popen([sys.executable, "-c", "import time\nt = time.time()\nwhile time.time() - t < 1.5: pass"])
    child.wait()
    time.sleep(0.1)
    assert window.other_cores() > 0.5    # the child spun about one core for 1.5 s of ~1.6
    assert LoadWindow().other_cores() is None   # a window too short to say


# ------------------------------------------------------------------ budget plans (conr/budget_plans.py)
def test_a_plan_is_recalled_on_the_same_machine_only():
    from conr.auto.plans import plans_path, recall_plan, remember_plan

    remember_plan("cmd", step_seconds=0.2725, epochs=100, image_size=32)
    assert plans_path().is_file() and "conr-cache" in str(plans_path())   # the test's folder (conftest)
    assert recall_plan("cmd", 0.296)["epochs"] == 100     # a quiet re-timing 9 % slower
    assert recall_plan("cmd", 0.431)["epochs"] == 100     # beside a spinning neighbour: 1.6x
    assert recall_plan("cmd", 0.1) is None                # a machine 2.7x faster plans afresh
    assert recall_plan("other command", 0.2725) is None


def test_same_command_same_epochs_through_the_budget():
    from conr.auto.budget import StepCosts, _same_plan
    from conr.config import load_config

    cfg = load_config("digits")
    data = type("Data", (), {"images": torch.zeros(200, 1, 16, 16, dtype=torch.uint8), "image_size": 16,
                             "channels": 1, "__len__": lambda self: 200})()
    first, note = _same_plan(cfg, data, 1.5, False, StepCosts(0.2725, 0.31, 1), 100)
    assert (first, note) == (100, None)
    again, note = _same_plan(cfg, data, 1.5, False, StepCosts(0.296, 0.36, 1), 80)   # the timing alone: 80
    assert again == 100 and "bought 100 epochs on this machine before" in note
    other, _ = _same_plan(cfg, data, 3.0, False, StepCosts(0.296, 0.36, 1), 200)     # another budget
    assert other == 200
    data.images[0] += 1  # other images: another command
    assert _same_plan(cfg, data, 1.5, False, StepCosts(0.296, 0.36, 1), 80)[0] == 80
