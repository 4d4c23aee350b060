"""Reduced dynamics of benign overfitting with a trainable output layer.

``from dynamics import Params, simulate`` for notebooks; see README.md.
"""
from .data import Stats, sample_data, sample_stats, sample_wishart
from .params import LEVELS, SAMPLERS, Params, ParamError
from .run import DivergenceError, Trajectory, simulate

__version__ = "0.1.0"

__all__ = ["Params", "ParamError", "Stats", "Trajectory", "DivergenceError",
           "LEVELS", "SAMPLERS", "simulate", "sample_data", "sample_stats",
           "sample_wishart", "__version__"]


def solve(params, v0s=None, **kwargs):
    """Phase boundary, scaling and verification (see ``compare.solve.solve``).

    Lives in ``compare`` because the verification runs the full network;
    imported lazily to keep ``dynamics`` free of that dependency.
    """
    from compare.solve import solve as _solve

    return _solve(params, v0s, **kwargs)


__all__.append("solve")
