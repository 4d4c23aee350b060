"""The limit t = inf: how mu*(inf) depends on the pattern time, and what the
limit costs (run from the repository root).

    python benchmarks/limit.py pattern [--seeds 8] [--times 1e5,1e10,1e30,1e100]
    python benchmarks/limit.py timing  [--seeds 8]
    python benchmarks/limit.py speed   [--columns 4]

``pattern``: mu*(inf) (tau = 0.25, wishart) at v0 = 1e-3 and 0.1 with the
program seeded by the flow's pattern at each pattern time, with bootstrap
intervals, certification rate, repair moves and the wall time; the earliest
pattern time whose mu* lies inside the latest's interval is the candidate
default (``dynamics.limit.PATTERN_TIME``).

``timing``: where one limit job's time goes (flow to the pattern time in the
kernel, the cone programs, the evaluation of the optimum), per job, in one
process and with the programs in worker processes, side by side in one run.

``speed``: the wall time of ``dyn solve --v0 0.001 --v0 1 --times 200,inf``
and of a slice of the default ``dyn phase --times 200,inf`` (with one and two
threads): --columns v0 columns spread over the default range, each with all
64 ||mu|| rows and 8 seeds (one batch of 512 jobs per column, as in the
default sweep), extrapolated to the default 64 columns.
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from _common import machine_rows, table
from dynamics import Params, RunSpec
from dynamics.batch import seed_list, stacked_stats
from dynamics.boundary import find_boundaries, reduced_evaluator
from dynamics.kernels import Jobs
from dynamics.limit_run import limit_batch


def pattern(args):
    rows = []
    times = [float(x) for x in args.times.split(",")]
    for v0 in (1e-3, 0.1):
        p = Params(v0=v0)
        seeds = seed_list(p, args.seeds)
        for tp in times:
            t0 = time.perf_counter()
            ev = reduced_evaluator(p, "exact", "wishart", seeds, [np.inf], t_pattern=tp)
            b = find_boundaries(ev, RunSpec(p, seeds=tuple(seeds), times=[np.inf]),
                                guess=9.0)[0]
            lo, hi = b.ci[b.taus[0]]
            moves = np.nanmean(b.limit["flips"])
            rows.append([f"{v0:g}", f"{tp:g}", f"{b.star():.3f} [{lo:.3f}, {hi:.3f}]",
                         f"{b.limit_converged:.0%}", f"{moves:.2f}",
                         f"{time.perf_counter() - t0:.1f}"])
            print(rows[-1], flush=True)
    table(["v0", "pattern time (GD steps)", "mu*(inf) [95% CI]", "certified",
           "repair moves / run", "wall (s)"], rows)


def timing(args):
    p = Params(v0=1e-3)
    seeds = seed_list(p, args.seeds)
    st = stacked_stats(p, "wishart", seeds)
    cp = np.array([200.0, np.inf])
    job_seed = np.tile(np.arange(args.seeds), 3)
    job_mu = np.repeat([6.0, 9.0, 12.0], args.seeds)
    jobs = Jobs(job_seed, job_mu, np.full(job_mu.shape, p.v0))
    limit_batch(p, "exact", st, Jobs(*(x[:1] for x in jobs)), cp, use_flow=False)  # compile

    import dynamics.limit_run as lr

    spent = {"programs": 0.0, "evaluation": 0.0}

    def timed(fn, key):
        def wrapper(*a, **k):
            t0 = time.perf_counter()
            out = fn(*a, **k)
            spent[key] += time.perf_counter() - t0
            return out
        return wrapper
    orig = lr.map_programs, lr.evaluate_limit
    lr.map_programs = timed(orig[0], "programs")
    lr.evaluate_limit = timed(orig[1], "evaluation")
    rows = []
    try:
        for tp in (1e10, 1e100):
            for parallel in (False, True):
                spent.update(programs=0.0, evaluation=0.0)
                t0 = time.perf_counter()
                limit_batch(p, "exact", st, jobs, cp, use_flow=False, parallel=parallel,
                            t_pattern=tp)
                total = time.perf_counter() - t0
                Q = job_mu.size
                flow = total - spent["programs"] - spent["evaluation"]
                rows.append([f"{tp:g}", "yes" if parallel else "no", Q,
                             f"{1e3 * flow / Q:.1f}", f"{1e3 * spent['programs'] / Q:.1f}",
                             f"{1e3 * spent['evaluation'] / Q:.1f}", f"{1e3 * total / Q:.1f}"])
    finally:
        lr.map_programs, lr.evaluate_limit = orig
    table(["pattern time", "parallel", "jobs", "flow ms/job", "programs ms/job",
           "evaluation ms/job", "total ms/job"], rows)


def speed(args):
    """The issue's two targets, measured: dyn solve (8 seeds, grids, verification)
    and a slice of the default dyn phase at --times 200,inf (--columns v0
    columns spread over the default range, all 64 mu rows, 8 seeds: the
    default sweep's batches of 512 jobs, so the programs' worker pool costs
    what it costs there), extrapolated to the default 64 x 64 x 8 grid; the
    phase slice with one and with two Numba threads (the programs' worker
    processes follow it)."""
    import os
    import subprocess
    import sys
    import tempfile

    dyn = os.path.join(os.path.dirname(sys.executable), "dyn")

    def run(argv, threads):
        env = dict(os.environ, NUMBA_NUM_THREADS=str(threads))
        with tempfile.TemporaryDirectory() as out:
            t0 = time.perf_counter()
            subprocess.run([dyn, *argv, "--out", out, "--quiet"], check=True, env=env,
                           stdout=subprocess.DEVNULL)
            return time.perf_counter() - t0

    run(["phase", "--times", "200,inf", "--x", "v0=1e-3..10:4", "--y", "mu=0.5..50:4",
         "--seeds", "2"], 2)  # compile (warm cache afterwards)
    run(["solve", "--v0", "0.001", "--times", "200,inf", "--seeds", "2", "--d-grid", "none",
         "--n-grid", "none", "--verify-seeds", "1"], 2)  # compile solve's paths too
    rows = []
    wall = run(["solve", "--v0", "0.001", "--v0", "1", "--times", "200,inf"], 2)
    rows.append(["dyn solve --v0 0.001 --v0 1 --times 200,inf", 2, f"{wall:.1f} s", "",
                 "< 60 s"])
    jobs = 64 * args.columns * 8
    for threads in (1, 2):
        wall = run(["phase", "--times", "200,inf", "--x", f"v0=1e-3..10:{args.columns}"],
                   threads)
        rows.append([f"dyn phase --times 200,inf --x v0=1e-3..10:{args.columns} ({jobs} jobs)",
                     threads, f"{wall:.1f} s ({1e3 * wall / jobs:.1f} ms/job)",
                     f"{wall * 32768 / jobs / 60:.1f} min", "< 10 min" if threads == 2 else ""])
    table(["command", "threads", "wall", "default phase (32,768 jobs), extrapolated",
           "target"], rows)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("what", choices=("pattern", "timing", "speed"))
    ap.add_argument("--seeds", type=int, default=8)
    ap.add_argument("--times", default="1e5,1e10,1e30,1e100")
    ap.add_argument("--columns", type=int, default=4, help="speed: v0 columns of the phase slice")
    args = ap.parse_args()
    table(["item", "value"], machine_rows())
    {"pattern": pattern, "timing": timing, "speed": speed}[args.what](args)


if __name__ == "__main__":
    main()
