"""Both models side by side: boundaries, Datasets, metrics, sweeps, I/O,
figures and the ``dyn`` CLI (``compare.cli``) on top.

For notebooks: ``from compare import solve`` (the whole ``dyn solve`` job),
``from dynamics import Params, simulate`` (one reduced run),
``from fullsim import simulate_full`` (the weight-space network).
"""
from .boundaries import find_boundaries_at, find_boundary
from .solve import solve

__all__ = ["find_boundary", "find_boundaries_at", "solve"]
