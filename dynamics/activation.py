"""Activations of the model family (docs/theory.md#general-reduction), numpy side: sigma and sigma'.

relu (code 0): max(x, 0); relu^q (1): max(x, 0)^q; leaky:alpha (2): x for
x > 0, alpha x otherwise.  sigma'(0) = 0 for relu and relu^q, alpha for leaky.
The Numba kernels carry (code, a) as plain numbers (``kernels.primitives._sig``,
``_dsig``); the weight-space networks and ``run.reduced_forward`` use
these functions.
"""
from __future__ import annotations

import numpy as np

from .params import Params

ACTIVATION_CODES = {"relu": 0, "relu^": 1, "leaky": 2}


def activation_code(params: Params) -> tuple[int, float]:
    """(code, a) for the kernels: relu (0, 0), relu^q (1, q), leaky (2, alpha)."""
    kind, args = params.activation_spec
    return ACTIVATION_CODES[kind], float(args[0]) if args else 0.0


def activation(x, code: int, a: float):
    """sigma(x) elementwise."""
    x = np.asarray(x, dtype=np.float64)
    if code == 0:
        return np.maximum(x, 0.0)
    if code == 1:
        return np.where(x > 0.0, np.maximum(x, 0.0) ** a, 0.0)
    return np.where(x > 0.0, x, a * x)


def activation_grad(x, code: int, a: float):
    """sigma'(x) elementwise, sigma'(0) = 0 (relu, relu^q) or alpha (leaky)."""
    x = np.asarray(x, dtype=np.float64)
    if code == 0:
        return (x > 0.0).astype(np.float64)
    if code == 1:
        return np.where(x > 0.0, a * np.maximum(x, 0.0) ** (a - 1.0), 0.0)
    return np.where(x > 0.0, 1.0, a)
