"""`dyn phase --precision float32` against float64: speed and boundaries, one run.

Workload: two adjacent rows of the default `dyn phase` sweep (64 ||mu||
log-spaced in [0.5, 50] x 8 seeds at v0 and the next v0 of the default axis,
exact level, sampler wishart, n = m = 20, d = 1000: 1024 jobs, one batch
call, as `dyn phase` runs float32 rows in pairs; float64 groups hold 64
jobs, float32 groups 128), checkpoints T = 200 (the default sweep) and
T = 200, inf (the converged sweep), through ``run_batch`` with all Numba
threads.  Statistics
are drawn outside the timing; both precisions run the same jobs alternately
(float64, float32, float64, ...), so drifts of the machine hit both.

Reported per row: ms per job of each precision (median of the repeats), the
ratio, the 64 x 64 x 8 sweep extrapolated from the float32 time, and how far
float32 moves the results (first row): max |difference| of the seed-mean
test-error curves, mu* (mean test error crosses 0.25) of both and the 95%
bootstrap interval over seeds of the float64 mu* (the "seed interval" of
`dyn solve`).

    python benchmarks/precision.py              # ~2 minutes on 2 cores (compiles first)
    python benchmarks/precision.py --repeats 5 --skip-limit
"""
from __future__ import annotations

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from _common import machine_rows, repeat_times, table  # noqa: E402

from dynamics.batch import run_batch, stacked_stats  # noqa: E402
from dynamics.boundary import crossing  # noqa: E402
from dynamics.params import Params  # noqa: E402
from dynamics.spec import RunSpec  # noqa: E402

S, N_MU, TAU = 8, 64, 0.25


def seed_interval(mus, test, rng, n_boot=1000):
    """95% bootstrap interval over seeds (rows of test) of the mean curve's crossing."""
    boots = np.array([crossing(mus, test[rng.integers(0, len(test), len(test))].mean(0), TAU)
                      for _ in range(n_boot)])
    boots = boots[np.isfinite(boots)]
    return np.percentile(boots, [2.5, 97.5]) if boots.size else (np.nan, np.nan)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3, help="timed runs per precision and row")
    ap.add_argument("--skip-limit", action="store_true", help="only T = 200")
    args = ap.parse_args(argv)
    if args.repeats < 1:
        ap.error("--repeats must be >= 1")
    print("# float32 vs float64 group kernels (rows of the default dyn phase sweep)\n")
    mus = np.geomspace(0.5, 50.0, N_MU)
    step = (10.0 / 1e-3) ** (1 / 63)  # ratio of adjacent v0 of the default axis 1e-3..10:64
    job_seed, job_mu = np.tile(np.arange(S), 2 * N_MU), np.tile(np.repeat(mus, S), 2)
    rows = []
    for v0 in (1e-3, 1.0):
        job_v0 = np.repeat([v0, v0 * step], N_MU * S)
        p = Params(v0=v0)
        stacked = stacked_stats(p, "wishart", p.seed + np.arange(S))
        for cps in ([200.0],) + (() if args.skip_limit else ([200.0, np.inf],)):
            def run(prec, cps=cps):
                return run_batch(RunSpec(p, times=cps, precision=prec), stacked, job_seed,
                                 job_mu, job_v0)
            res = {prec: run(prec) for prec in ("float64", "float32")}  # compile + results
            times = {"float64": [], "float32": []}
            for _ in range(args.repeats):
                for prec in times:
                    times[prec].append(repeat_times(lambda: run(prec), 1)[0])
            ms = {prec: np.median(t) / job_mu.size * 1e3 for prec, t in times.items()}
            test = {prec: r["test_error"][:N_MU * S, -1].reshape(N_MU, S).T
                    for prec, r in res.items()}
            star = {prec: crossing(mus, t.mean(0), TAU) for prec, t in test.items()}
            lo, hi = seed_interval(mus, test["float64"], np.random.default_rng(0))
            label = ",".join("inf" if np.isinf(c) else f"{c:g}" for c in cps)
            inside = "yes" if lo <= star["float32"] <= hi else "NO"
            rows.append([f"v0 = {v0:g}, {v0 * step:.3g}", label, f"{ms['float64']:.3f}", f"{ms['float32']:.3f}",
                         f"{ms['float64'] / ms['float32']:.2f}x",
                         f"{ms['float32'] * 64 * 64 * 8 / 1e3:.0f} s",
                         f"{np.abs(test['float32'].mean(0) - test['float64'].mean(0)).max():.4f}",
                         f"{star['float64']:.4g} / {star['float32']:.4g}",
                         f"[{lo:.4g}, {hi:.4g}] ({inside})"])
    table(["row", "times (last is compared)", "ms/job float64", "ms/job float32", "speed-up",
           "64x64x8 sweep, float32 (extrapolated)", "max |d mean test error|",
           "mu* float64 / float32", "float64 seed interval (float32 inside?)"], rows)
    table(["item", "value"], machine_rows())


if __name__ == "__main__":
    main()
