"""Reduced dynamics of benign overfitting with a trainable output layer.

The bottom layer of ``dyn``: parameters, samplers, Numba kernels, runs and the
boundary solver.  It imports nothing above it (``fullsim``, ``compare``).
``from dynamics import Params, simulate`` for notebooks; the whole job
(``solve``) lives in ``compare``: ``from compare import solve``.
"""
from .data import Stats, sample_data, sample_stats, sample_wishart
from .params import ALL_LEVELS, LEVELS, PARAMS, SAMPLERS, Params, ParamError
from .run import DivergenceError, Trajectory, simulate

__version__ = "0.2.0"

__all__ = ["Params", "ParamError", "PARAMS", "Stats", "Trajectory", "DivergenceError",
           "LEVELS", "ALL_LEVELS", "SAMPLERS", "simulate", "sample_data", "sample_stats",
           "sample_wishart", "__version__"]
