"""Shared fixtures and reference configurations (fixtures only: test modules
import nothing from here, they ask for fixtures by name)."""
import numpy as np
import pytest
from click.testing import CliRunner

from compare.cli import main
from compare.verify import run_pair
from dynamics import Params

# Tiny sizes for command-line checks (fast, wishart-valid: d - 1 >= 2m + n).
TINY_ARGS = ("--n", "8", "--m", "4", "--d", "200", "--steps", "30", "--n-test", "200")


def _rel_err(a, b):
    """Normwise relative error max|a - b| / max|b| over the whole array."""
    a, b = np.asarray(a), np.asarray(b)
    scale = np.max(np.abs(b))
    return float(np.max(np.abs(a - b)) / scale) if scale > 0 else float(np.max(np.abs(a)))


@pytest.fixture(scope="session")
def rel_err():
    """The function rel_err(a, b) = max|a - b| / max|b| (max|a| if b == 0)."""
    return _rel_err


@pytest.fixture(scope="session")
def small_params():
    """A small configuration for quick end-to-end checks."""
    return Params(n=8, d=200, m=4, steps=50, n_test=200, mu_norm=3.0, v0=0.1)


@pytest.fixture(scope="session")
def pair():
    """Factory pair(params, level="exact", record_every=1) -> (reduced, full):
    the reduced level and the weight-space network on one data realisation
    (``compare.verify.run_pair``; the full network's V is frozen for
    level "fixed-output")."""
    def make(params, level="exact", record_every=1):
        return run_pair(params, level, record_every)
    return make


@pytest.fixture(scope="session")
def tiny_args():
    """CLI options of a tiny, fast configuration (a list, copy before editing)."""
    return list(TINY_ARGS)


@pytest.fixture
def cli():
    """cli(*args) -> click Result of ``dyn args`` run in process (CliRunner)."""
    def invoke(*args):
        return CliRunner().invoke(main, [str(a) for a in args])
    return invoke


@pytest.fixture(scope="session")
def one_line_error():
    """Check a click Result is a one-line error: returns that line.

    Exactly one line starts with 'Error:', no traceback, and a non-zero exit.
    """
    def check(res, code=None):
        assert res.exit_code != 0, res.output
        if code is not None:
            assert res.exit_code == code, res.output
        assert "Traceback" not in res.output, res.output
        if res.exception is not None and not isinstance(res.exception, SystemExit):
            raise AssertionError(f"uncaught {type(res.exception).__name__}: {res.exception}")
        lines = [ln for ln in res.output.splitlines() if ln.startswith("Error:")]
        assert len(lines) == 1, res.output
        return lines[0]
    return check
