"""How busy the rest of the machine was while conr timed itself.

A time budget times a few training steps; another process busy beside them makes every
step slower (on 2 cores a spinning neighbour made the step 48 % slower: 431 ms against
291 ms) and the budget then buys fewer epochs, so the same command trains a different
run. :class:`LoadWindow` measures the CPU time *other* processes used over a window
(Linux ``/proc/stat`` less this process's own ``os.times``), and :func:`quiet_factor`
turns it into the share of the measured time the same work needs on the quiet machine.
Where ``/proc/stat`` is missing the load is unknown and taken as none.
"""
from __future__ import annotations

import os
import time

__all__ = ["LoadWindow", "quiet_factor", "busy_cpu_seconds"]

MIN_WINDOW_SECONDS = 0.5


def busy_cpu_seconds(stat_path: str = "/proc/stat") -> float | None:
    """CPU seconds all processes spent busy since boot (every CPU summed; None off Linux)."""
    try:
        with open(stat_path) as fh:
            fields = fh.readline().split()
    except OSError:
        return None
    if not fields or fields[0] != "cpu":
        return None
    ticks = [int(v) for v in fields[1:9]]   # user nice system idle iowait irq softirq steal
    idle = ticks[3] + (ticks[4] if len(ticks) > 4 else 0)
    return (sum(ticks) - idle) / os.sysconf("SC_CLK_TCK")


def _own_cpu_seconds() -> float:
    t = os.times()
    return t.user + t.system   # every thread of this process


class LoadWindow:
    """CPU use of other processes from construction (or :meth:`restart`) until asked."""

    def __init__(self):
        self.restart()

    def restart(self) -> None:
        self._wall, self._own, self._busy = time.perf_counter(), _own_cpu_seconds(), busy_cpu_seconds()

    def other_cores(self) -> float | None:
        """Cores' worth of CPU other processes used over the window (None: unknown, or a
        window too short to say)."""
        wall = time.perf_counter() - self._wall
        busy = busy_cpu_seconds()
        if busy is None or self._busy is None or wall < MIN_WINDOW_SECONDS:
            return None
        others = (busy - self._busy) - (_own_cpu_seconds() - self._own)
        return max(0.0, others / wall)


def quiet_factor(other_cores: float | None, threads: int, cores: int | None = None, floor: float = 0.25) -> float:
    """The share of its measured wall time that work of ``threads`` threads would take on
    the quiet machine, when other processes used ``other_cores`` of the ``cores`` CPUs:
    the threads had ``cores - other_cores`` CPUs between them instead of
    ``min(threads, cores)``. 1.0 when the load is unknown or left the threads room; never
    below ``floor``. An upper bound of the slowdown: a neighbour also fills the moments
    the threads leave a CPU idle (measured: 0.93 of 2 cores taken, 1.48x slower, where
    the bound says 1.87x)."""
    if other_cores is None:
        return 1.0
    cores = cores or os.cpu_count() or 1
    wanted = max(1, min(threads, cores))
    return max(floor, min(1.0, (cores - other_cores) / wanted))
