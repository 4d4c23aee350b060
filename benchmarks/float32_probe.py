"""What float32 could buy the sweeps: a probe, not a feature.

The group GD path (``kernels._gd_group``: forward, l', increments of C jobs of
one seed) is compiled a second time with every float64 array of the group
state and of the statistics cast to float32.  The kernels are not float32
clean: their literals and the ``KConfig`` scalars stay float64, so part of the
arithmetic is promoted; the float32 time is therefore an upper bound on what
a float32-clean path would cost.  Both precisions run the same 200 steps from
the same start, alternating, in one process, on one thread; the script prints
the time per job-step of each, their ratio, and how far the float32 outputs
drift from float64 after 200 steps.

    python benchmarks/float32_probe.py            # ~1 minute (compiles once)
    python benchmarks/float32_probe.py --jobs 32 --repeats 9
"""
from __future__ import annotations

import argparse
import os
import sys

import numba
import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from _common import machine_rows, repeat_times, table  # noqa: E402

from dynamics import kernels as K  # noqa: E402
from dynamics.boundary import stacked_stats  # noqa: E402
from dynamics.params import Params  # noqa: E402
from dynamics.run import kernel_config  # noqa: E402


def cast(nt, dtype):
    """The NamedTuple nt with its float64 arrays as dtype (garbage in np.empty
    buffers may overflow float32: harmless, they are written before use)."""
    with np.errstate(over="ignore"):
        return type(nt)(*[x.astype(dtype) if isinstance(x, np.ndarray) and x.dtype == np.float64
                          else x for x in nt])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", type=int, default=64, help="jobs C in the group (default 64)")
    ap.add_argument("--repeats", type=int, default=7, help="timed repeats per precision")
    args = ap.parse_args(argv)
    if args.jobs < 1 or args.repeats < 1:
        ap.error("--jobs and --repeats must be >= 1")
    numba.set_num_threads(1)
    p = Params()
    s = K._job_stats(stacked_stats(p, "wishart", [p.seed]), 0)
    cfg = kernel_config(p, "exact")
    C, T = args.jobs, 200
    mus, v0s = np.geomspace(0.5, 50, C), np.full(C, 1e-3)
    status = np.zeros((C, 2), dtype=np.int64)
    stats = {dt: cast(s, dt) for dt in (np.float64, np.float32)}
    final = {}

    def run(dt):
        gr = cast(K._group(s, mus, v0s), dt)
        K._gd_group(gr, stats[dt], cfg, float(T), 0, status)
        final[dt] = gr
    for dt in stats:
        run(dt)  # compile
    times = {dt: [] for dt in stats}
    for _ in range(args.repeats):  # alternate: drifts of the machine hit both
        for dt in stats:
            times[dt].append(repeat_times(lambda: run(dt), 1)[0])
    per = {dt: np.median(t) / (C * T) * 1e6 for dt, t in times.items()}
    f64, f32 = final[np.float64].f, final[np.float32].f.astype(np.float64)
    table(["precision", "us per job-step (median)", "min", "f after 200 steps vs float64"],
          [["float64", f"{per[np.float64]:.3f}", f"{min(times[np.float64]) / (C * T) * 1e6:.3f}",
            "-"],
           ["float32 (promoted literals)", f"{per[np.float32]:.3f}",
            f"{min(times[np.float32]) / (C * T) * 1e6:.3f}",
            f"max rel. diff {np.max(np.abs(f32 - f64) / np.abs(f64)):.2e}"]])
    print(f"float64 / float32 = {per[np.float64] / per[np.float32]:.2f}x "
          f"(C = {C}, n = m = 20, one thread, {args.repeats} alternating repeats)\n")
    table(["item", "value"], machine_rows())


if __name__ == "__main__":
    main()
