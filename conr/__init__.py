"""conr: deep image clustering with CoNR (and HaDis, BYOL, SimSiam, MoCo baselines).

``conr.CoNR`` is the scikit-learn style estimator (conr/estimator.py); it is
imported on first use so that ``import conr`` and the command line stay fast.
"""

import os as _os

# PyTorch's OpenMP worker threads spin while they wait. When the cores are shared with other
# processes that makes CPU training up to 10x slower (measured on 2 busy cores); sleeping waiters
# cost little when the cores are free. Set before torch loads OpenMP; export the variable to override.
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"
__all__ = ["CoNR", "__version__"]


def __getattr__(name):
    if name == "CoNR":
        from .estimator import CoNR

        return CoNR
    raise AttributeError(f"module 'conr' has no attribute {name!r}")
