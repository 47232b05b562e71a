"""Experiment grids (``conr sweep GRID.yaml``): the paper's ablations and sweeps as one
resumable command. grid.py reads and checks a grid file (its format is described there),
run.py trains its rows and writes the tables, plot.py draws the results figure."""
from .grid import PLOT_TYPES, SWEEP_DIR, Sweep, SweepRow, Warmup, load_sweep, shipped_grids
from .run import run_purity_sweep, run_sweep, sweep_results, write_outputs
from .plot import plot_sweep

__all__ = ["Sweep", "SweepRow", "Warmup", "load_sweep", "run_sweep", "sweep_results", "SWEEP_DIR",
           "shipped_grids", "PLOT_TYPES", "write_outputs", "run_purity_sweep", "plot_sweep"]
