"""Reduced dynamics of benign overfitting with a trainable output layer.

The bottom layer of ``dyn``: parameters, samplers, Numba kernels, runs and the
boundary solver.  It imports nothing above it (``fullsim``, ``compare``).
``from dynamics import Params, simulate`` for notebooks; the whole job
(``solve``) lives in ``compare``: ``from compare import solve`` and
``solve(RunSpec(Params(...), seeds=8), v0s=[...])``.
"""
from . import numba_cache

numba_cache.setup()  # before any @njit(cache=True) runs: a cache keyed by this package's source

from .data import Stats, sample_data, sample_stats, sample_wishart  # noqa: E402
from .params import ALL_LEVELS, LEVELS, PARAMS, SAMPLERS, Params, ParamError  # noqa: E402
from .run import DivergenceError, Trajectory, simulate  # noqa: E402
from .spec import RunSpec  # noqa: E402

def _version() -> str:
    """The installed distribution's version (declared once, in pyproject.toml)."""
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version("dyn")
    except PackageNotFoundError:  # a source tree that was never installed
        return "0+unknown"


__version__ = _version()

__all__ = ["Params", "ParamError", "PARAMS", "RunSpec", "Stats", "Trajectory", "DivergenceError",
           "LEVELS", "ALL_LEVELS", "SAMPLERS", "simulate", "sample_data", "sample_stats",
           "sample_wishart", "__version__"]
