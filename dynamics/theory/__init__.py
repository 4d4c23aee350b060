"""Theory of the two-layer dynamics (docs/theory.md#exact-recursion, #identities, #mechanisms-and-laws), in two modules:

``dynamics.theory.symbolic``  sympy: the derived recursion, its small-v0
    linearisation, stage-1 threshold, candidate laws for mu* and their
    exponents (``law_exponents``), printable ``formulas``.
``dynamics.theory.measure``   numpy: the same closed forms measured on a
    ``Trajectory`` (``mechanisms``, ``stage1_end``, ``growth_rates``,
    ``summarize``); it never imports sympy.

Names of both are re-exported lazily (``from dynamics.theory import
mechanisms`` loads only ``measure``; sympy is loaded on first use of a
``symbolic`` name).  Solver runs and text tables: ``compare.laws``.
"""
from __future__ import annotations

import importlib

_MEASURE = ("lprime", "CLOSED_FORMS", "predicted_noise_ratio", "predicted_signal_ratio",
            "predicted_rates", "linear_prediction", "f_threshold", "lprime_deviation",
            "stage1_end", "mechanisms", "MECHANISM_ATTRS", "ratio_agreement",
            "growth_rates", "summarize", "report")
_SYMBOLIC = ("relu", "activation_expr", "increment_funcs", "derive_recursion", "spec4_recursion", "increments", "linear_blocks",
             "linear_funcs", "f_threshold_expr", "LAW_VARS", "FIT_LAWS", "laws",
             "law_funcs", "law_exponents", "formulas")
# f_threshold: the numpy closed form (measure); symbolic.f_threshold is its reference
_WHERE = {**{k: "symbolic" for k in _SYMBOLIC}, **{k: "measure" for k in _MEASURE}}

__all__ = sorted(_WHERE)


def __getattr__(name):
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)


def __dir__():
    return sorted(set(globals()) | set(_WHERE))
