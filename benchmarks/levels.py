"""Wall time of one training run per level: full network vs the reduced model.

What it measures (Markdown tables on stdout): the median wall time
(``time.perf_counter``) of one run at n = m = 20, T = 200, other parameters at
their ``Params`` defaults, record_every = T:

* levels ``full`` (``fullsim.simulate_full``), ``exact`` and ``orthogonal``
  (``dynamics.simulate(..., "data", stats=real.stats)``) at d = 1e3, 1e4, 1e5,
  all on the same realisation ``real = dynamics.sample_data(params)``; the
  draw is not part of the run time and is reported in its own column;
* ``exact`` on the d-free sampler ``wishart`` at d = 1e7, sampler + run timed
  together (``simulate(params, "exact", "wishart")``), with the sampler alone
  (``dynamics.sample_wishart``) in the draw column.

Then the speed ratios full/exact and full/orthogonal at each d of this run
(target: full/exact >= 50x at d = 1e4), and the machine info.  Every level is
warmed up once at a tiny size first (Numba compilation / cache loading is
excluded).  Each cell is the median of R repeats (R = --repeats, default 5;
min(R, 3) for full at d = 1e5).

Run from the repository root::

    python benchmarks/levels.py                # ~1 min on 2 cores
    python benchmarks/levels.py --repeats 9
    python benchmarks/levels.py --quick        # smoke test: d <= 1e4, 2 repeats
    python benchmarks/levels.py --depth 2      # the deep network (docs/theory.md#depth), same table,
                                               # plus exact at depth L vs depth 1
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time

import numpy as np

try:
    import dynamics  # noqa: F401  (installed, e.g. pip install -e .)
except ImportError:  # run from a checkout without installing
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


from dynamics import Params, sample_data, sample_wishart, simulate
from dynamics.data import upper_layers
from fullsim import simulate_full

from _common import machine_rows, repeat_times, table

BASE = Params(n=20, m=20, steps=200)
REC = BASE.steps  # record only the first and the last step


def median_ms(fn, repeats):
    return 1e3 * float(np.median(repeat_times(fn, repeats)))


def warm_up(depth=1):
    """One untimed call of every timed path at a tiny size."""
    p = Params(n=4, m=2, d=50, steps=3, n_test=10, depth=depth)
    real = sample_data(p)
    simulate_full(p, record_every=p.steps, real=real)
    for level in ("exact", "orthogonal"):
        simulate(p, level, "data", record_every=p.steps, stats=real.stats)
    simulate(p, "exact", "wishart", record_every=p.steps)


def machine_info():
    rows = machine_rows()
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        rows.append(["threadpoolctl", "not installed (BLAS info skipped)"])
    else:
        for i in threadpool_info():
            rows.append([f"threadpool {i['user_api']}",
                         f"{i['internal_api']} {i.get('version')}, {i['num_threads']} threads"])
    table(["item", "value"], rows)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=5, help="repeats per cell (median)")
    ap.add_argument("--quick", action="store_true",
                    help="smoke test: d in {1e3, 1e4} and wishart at 1e7, 2 repeats")
    ap.add_argument("--depth", type=int, default=1, help="hidden layers L (default 1)")
    args = ap.parse_args(argv)
    R = 2 if args.quick else max(1, args.repeats)
    ds = (1000, 10000) if args.quick else (1000, 10000, 100000)
    base = BASE.replace(depth=args.depth)

    t_start = time.perf_counter()
    warm_up(1)
    warm_up(args.depth)
    t_warm = time.perf_counter() - t_start

    rows, ms = [], {}
    for d in ds:
        p = base.replace(d=d)
        t0 = time.perf_counter()
        real = sample_data(p)
        t_draw = 1e3 * (time.perf_counter() - t0)
        runs = {"full": (lambda: simulate_full(p, record_every=REC, real=real),
                         min(R, 3) if d >= 100000 else R)}
        for level in ("exact", "orthogonal"):
            runs[level] = (lambda lv=level: simulate(p, lv, "data", record_every=REC,
                                                     stats=real.stats), R)
        if args.depth > 1:  # same W0, xi (U0 has its own seed stream), no upper layers
            p1 = p.replace(depth=1)
            st1 = dataclasses.replace(real.stats, U0=upper_layers(p1))
            runs["exact, depth 1"] = (lambda: simulate(p1, "exact", "data", record_every=REC,
                                                       stats=st1), R)
        for level, (fn, reps) in runs.items():
            ms[level, d] = median_ms(fn, reps)
            rows.append([level, "data", f"{d:.0e}", f"{ms[level, d]:.3g}", reps,
                         f"{t_draw:.3g} (one draw, untimed in run)"])
        del real
    p = base.replace(d=10**7)
    t_run = median_ms(lambda: simulate(p, "exact", "wishart", record_every=REC), R)
    t_samp = median_ms(lambda: sample_wishart(p), R)
    rows.append(["exact", "wishart", "1e+07", f"{t_run:.3g}", R,
                 f"{t_samp:.3g} (sampler only, included in run)"])

    print(f"# Wall time of one run per level (n = m = 20, T = 200, depth {args.depth})"
          + (" (--quick)" if args.quick else "") + "\n")
    table(["level", "sampler", "d", "median time per run (ms)", "repeats",
           "sample time (ms)"], rows)
    table(["d", "full / exact", "full / orthogonal"],
          [[f"{d:.0e}", f"{ms['full', d] / ms['exact', d]:.1f}x",
            f"{ms['full', d] / ms['orthogonal', d]:.1f}x"] for d in ds])
    if args.depth > 1:
        table(["d", f"exact depth {args.depth} / exact depth 1"],
              [[f"{d:.0e}", f"{ms['exact', d] / ms['exact, depth 1', d]:.2f}x"] for d in ds])
    machine_info()
    print(f"Warm-up: {t_warm:.2f} s; total: {time.perf_counter() - t_start:.1f} s")


if __name__ == "__main__":
    main()
