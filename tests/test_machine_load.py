"""The load other processes put on the machine (conr/machine_load.py): the arithmetic
by hand, /proc/stat parsing on a written file, and a real busy neighbour."""
from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from conr.machine_load import LoadWindow, busy_cpu_seconds, quiet_factor


def test_quiet_factor_by_hand():
    # 2 threads on 2 cores, a spinning neighbour took 2/3 of a core (3 threads sharing 2 CPUs):
    # the work needs 1.33 / 2 of the measured time (measured: 291 ms quiet, 431 ms beside it)
    assert quiet_factor(2 / 3, threads=2, cores=2) == pytest.approx(2 / 3)
    assert quiet_factor(0.0, threads=2, cores=2) == 1.0
    assert quiet_factor(None, threads=2, cores=2) == 1.0            # unknown load: no correction
    assert quiet_factor(1.0, threads=4, cores=16) == 1.0            # the neighbour left the threads room
    assert quiet_factor(8.0, threads=16, cores=16) == pytest.approx(0.5)
    assert quiet_factor(15.9, threads=16, cores=16) == 0.25         # never more than 4x


def test_busy_seconds_from_a_stat_file(tmp_path):
    stat = tmp_path / "stat"
    hz = os.sysconf("SC_CLK_TCK")
    # user nice system idle iowait irq softirq steal
    stat.write_text(f"cpu  {3 * hz} 0 {hz} {10 * hz} {hz} 0 0 0 0 0\ncpu0 1 2 3 4\n")
    assert busy_cpu_seconds(str(stat)) == pytest.approx(4.0)       # all but idle and iowait
    assert busy_cpu_seconds(str(tmp_path / "missing")) is None


@pytest.mark.skipif(busy_cpu_seconds() is None, reason="no /proc/stat (not Linux): the load is unknown there")
def test_a_busy_neighbour_is_seen():
    window = LoadWindow()
    child = subprocess.Popen([sys.executable, "-c", "import time\nt = time.time()\nwhile time.time() - t < 1.5: pass"])
    child.wait()
    time.sleep(0.1)
    assert window.other_cores() > 0.5    # the child spun about one core for 1.5 s of ~1.6
    assert LoadWindow().other_cores() is None   # a window too short to say
