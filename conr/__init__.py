"""conr: deep image clustering with CoNR (and HaDis, BYOL, SimSiam, MoCo baselines).

``conr.CoNR`` is the scikit-learn style estimator (conr/estimator.py); it is
imported on first use so that ``import conr`` and the command line stay fast.
"""

import os as _os

# PyTorch's OpenMP worker threads spin while they wait. Beside another busy process that makes a
# CPU step 4 to 12x slower; sleeping waiters cost 2 to 3.4x on a quiet machine for small steps
# (benchmarks/omp_wait.py, docs/time-budget.md). Set before torch loads OpenMP (a program that
# imported torch first keeps the spinning default); export the variable to override.
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"
__all__ = ["CoNR", "__version__"]


def __getattr__(name):
    if name == "CoNR":
        from .estimator import CoNR

        return CoNR
    raise AttributeError(f"module 'conr' has no attribute {name!r}")
