"""The limit t = inf: how mu*(inf) depends on the pattern time, and what the
limit costs (run from the repository root).

    python benchmarks/limit.py pattern [--seeds 8] [--times 2e3,1e5,1e10,1e30]
    python benchmarks/limit.py timing  [--seeds 8]

``pattern``: mu*(inf) (tau = 0.25, wishart) at v0 = 1e-3 and 0.1 with the
program seeded by the flow's pattern at each pattern time, with bootstrap
intervals, certification rate, repair moves and the wall time; the earliest
pattern time whose mu* lies inside the latest's interval is the candidate
default (``dynamics.limit.PATTERN_TIME``).

``timing``: where one limit job's time goes (flow to the pattern time in the
kernel vs the cone programs in Python), per job, side by side in one run.
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from _common import machine_rows, table
from dynamics import Params
from dynamics.boundary import find_boundaries, reduced_evaluator, seed_list, \
    stacked_stats
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
            b = find_boundaries(ev, p, seeds, [np.inf], guess=9.0)[0]
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
    limit_batch(p, "exact", st, job_seed[:1], job_mu[:1], None, cp, False)  # compile
    import dynamics.limit as lm
    from dynamics import kernels

    spent = {"programs": 0.0}
    orig = lm.evaluate_limit

    def timed(*a, **k):
        t0 = time.perf_counter()
        out = orig(*a, **k)
        spent["programs"] += time.perf_counter() - t0
        return out
    lm.evaluate_limit = timed
    rows = []
    for tp in (1e5, 1e30):
        spent["programs"] = 0.0
        t0 = time.perf_counter()
        limit_batch(p, "exact", st, job_seed, job_mu, None, cp, False, tp)
        total = time.perf_counter() - t0
        Q = job_mu.size
        rows.append([f"{tp:g}", Q, f"{1e3 * (total - spent['programs']) / Q:.1f}",
                     f"{1e3 * spent['programs'] / Q:.1f}", f"{1e3 * total / Q:.1f}"])
    lm.evaluate_limit = orig
    table(["pattern time", "jobs", "flow ms/job (1 thread)", "programs ms/job",
           "total ms/job"], rows)
    del kernels


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("what", choices=("pattern", "timing"))
    ap.add_argument("--seeds", type=int, default=8)
    ap.add_argument("--times", default="2e3,1e5,1e10,1e30")
    args = ap.parse_args()
    table(["item", "value"], machine_rows())
    {"pattern": pattern, "timing": timing}[args.what](args)


if __name__ == "__main__":
    main()
