"""Helpers shared by the benchmark scripts (run them from the repository root)."""
from __future__ import annotations

import os
import platform
import time

import numba
import numpy as np


def table(headers, rows):
    """Print a Markdown table."""
    print("| " + " | ".join(headers) + " |")
    print("|" + "|".join("---" for _ in headers) + "|")
    for r in rows:
        print("| " + " | ".join(str(c) for c in r) + " |")
    print()


def repeat_times(fn, repeats) -> np.ndarray:
    """Wall times (s) of ``repeats`` calls of ``fn``."""
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return np.array(ts)


def machine_rows():
    """Rows (item, value) describing the machine and library versions."""
    rows = [["python", platform.python_version()], ["numpy", np.__version__],
            ["numba", numba.__version__], ["os.cpu_count()", os.cpu_count()],
            ["numba threads", numba.get_num_threads()],
            ["platform", platform.platform(terse=True)]]
    try:
        rows.append(["load avg (1/5/15 min)", "%.2f %.2f %.2f" % os.getloadavg()])
    except OSError:
        pass
    return rows
