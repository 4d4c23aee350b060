"""Shared fixtures and reference configurations."""
import numpy as np
import pytest

from dynamics import Params, sample_data, simulate
from fullsim import simulate_full


def rel_err(a, b):
    """Normwise relative error max|a - b| / max|b| over the whole array."""
    a, b = np.asarray(a), np.asarray(b)
    scale = np.max(np.abs(b))
    return float(np.max(np.abs(a - b)) / scale) if scale > 0 else float(np.max(np.abs(a)))


@pytest.fixture(scope="session")
def small_params():
    """A small configuration for quick end-to-end checks."""
    return Params(n=8, d=200, m=4, steps=50, n_test=200, mu_norm=3.0, v0=0.1)


def reduced_and_full(params, level="exact", record_every=1, **full_kw):
    """Run the reduced level and the full network on the same realisation."""
    real = sample_data(params)
    red = simulate(params, level, "data", record_every, stats=real.stats)
    full = simulate_full(params, record_every, real=real, **full_kw)
    return real, red, full
