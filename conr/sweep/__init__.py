"""Experiment grids (``conr sweep GRID.yaml``); see grid.py."""
from .grid import (PLOT_TYPES, SWEEP_DIR, Sweep, SweepRow, Warmup, load_sweep, plot_sweep, run_purity_sweep,
                   run_sweep, shipped_grids, sweep_results, write_outputs)

__all__ = ["Sweep", "SweepRow", "Warmup", "load_sweep", "run_sweep", "sweep_results", "SWEEP_DIR",
           "shipped_grids", "PLOT_TYPES", "write_outputs", "run_purity_sweep", "plot_sweep"]
