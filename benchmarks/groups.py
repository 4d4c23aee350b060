"""Configuration batching (``dynamics.kernels._run_group``): side-by-side timing.

One run, one process, same jobs: the batch kernel with jobs of one seed
stepped together in groups (default, ``group_size=GROUP_MAX``) against the
job-by-job path (``group_size=1``, the kernels before batching).  Results are
asserted equal bit for bit before a time is reported.

Workloads (statistics drawn outside the timing, sampler wishart, n = m = 20,
d = 1000, exact level):

* ``phase row``: one row of the default `dyn phase` sweep (64 ||mu|| x 8 seeds
  at one v0), checkpoints T = 200 (the default sweep) and T = 200, inf
  (`dyn phase --times 200,inf`); the per-job time x 64 x 64 x 8 extrapolates
  the whole sweep on this machine.

`dyn solve` evaluates one ||mu|| x 8 seeds per bisection step: too few jobs per
seed to group (``GROUP_MIN``), so it runs job by job; time it with the CLI.

Run from the repository root::

    python benchmarks/groups.py            # a few minutes on 2 idle cores
    python benchmarks/groups.py --quick    # 16 ||mu|| per row instead of 64
    python benchmarks/groups.py --mus 24   # groups of 24 (GROUP_MIN tuning)
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

try:
    import dynamics  # noqa: F401
except ImportError:
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from _common import machine_rows, table  # noqa: E402
from dynamics import Params, RunSpec
from dynamics.batch import run_batch, stacked_stats
from dynamics.kernels import GROUP_MAX


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def compare(params, stacked, job_seed, job_mu, checkpoints):
    """(seconds grouped, seconds job by job) for the same jobs; asserts equality."""
    def run(gs, cps=checkpoints):
        return run_batch(RunSpec(params, times=cps), stacked, job_seed, job_mu, group_size=gs)
    run(GROUP_MAX, [1.0]), run(1, [1.0])  # compile outside the timing (one step is enough)
    tg, grouped = timed(lambda: run(GROUP_MAX))
    t1, single = timed(lambda: run(1))
    for key in single:
        np.testing.assert_array_equal(grouped[key], single[key], err_msg=key)
    return tg, t1


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--mus", type=int, default=None,
                    help="||mu|| values per row (default 64, --quick 16); a seed's jobs "
                         "split into groups of at most GROUP_MAX")
    args = ap.parse_args(argv)
    print("# Configuration batching: grouped vs job by job (same jobs, one process)\n")
    table(["item", "value"], machine_rows())
    S = 8
    n_mu = args.mus or (16 if args.quick else 64)
    rows = []
    for v0 in (1e-3, 1.0):
        p = Params(v0=v0)
        stacked = stacked_stats(p, "wishart", p.seed + np.arange(S))
        mus = np.geomspace(0.5, 50.0, n_mu)
        job_seed, job_mu = np.tile(np.arange(S), n_mu), np.repeat(mus, S)
        for cps in ([200.0], [200.0, np.inf]):
            tg, t1 = compare(p, stacked, job_seed, job_mu, cps)
            Q = job_mu.size
            label = ",".join("inf" if np.isinf(c) else f"{c:g}" for c in cps)
            rows.append([f"phase row, v0={v0:g}", label, Q, f"{t1 / Q * 1e3:.2f}",
                         f"{tg / Q * 1e3:.2f}", f"{t1 / tg:.2f}x",
                         f"{tg / Q * 64 * 64 * 8 / 60:.1f} min"])
    table(["workload", "times", "jobs", "ms/job (job by job)", "ms/job (grouped)",
           "speed-up", "64x64x8 sweep (grouped, extrapolated)"], rows)


if __name__ == "__main__":
    main()
