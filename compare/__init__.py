"""Both models side by side: boundaries, Datasets, metrics, sweeps, I/O,
figures and the ``dyn`` CLI (``compare.cli``) on top.

For notebooks: ``from compare import solve`` (the whole ``dyn solve`` job),
``from dynamics import Params, simulate`` (one reduced run),
``from fullsim import simulate_full`` (the weight-space network).
"""
import importlib

_WHERE = {"find_boundary": "boundaries", "find_boundaries_at": "boundaries", "solve": "solve"}
__all__ = sorted(_WHERE)


def __getattr__(name):
    """Lazy: ``import compare.cli`` (the ``dyn`` entry point) loads only what
    the command needs (xarray, scipy, the solver are ~1-2 s of imports)."""
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
    globals()[name] = value  # the function, not the submodule compare.solve of the same name
    return value
