"""The documentation builds with warnings as errors (what CI runs).

``sphinx-build -W -b html docs OUT`` in a subprocess: every page, the API
reference from the numpydoc docstrings, and the output reference, whose tables
come from toy runs of the real commands (``docs/_ext/dyn_outputs.py``, Numba's
JIT off, seconds).  A variable without a ``long_name`` and without a
description in ``docs/_ext/descriptions.py`` fails this build.
"""
from __future__ import annotations

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_docs_build_without_warnings(tmp_path):
    out = tmp_path / "html"
    proc = subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html",
         "-d", str(tmp_path / "doctrees"), os.path.join(ROOT, "docs"), str(out)],
        capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    for page in ("index", "getting-started", "theory", "results", "api", "performance",
                 "developer", "guide/solve", "guide/time-and-limit", "reference/outputs"):
        assert (out / f"{page}.html").exists(), page
    outputs = (out / "reference" / "outputs.html").read_text()
    for name in ("mu_star", "curve_test_error", "test_error_mean", "gamma", "rel_err_per_step"):
        assert name in outputs, name
    api = (out / "api.html").read_text()
    for name in ("simulate_full", "trajectory_dataset", "SweepStore", "find_boundary"):
        assert name in api, name
