"""Benchmark of the `dyn phase` sweep and of single reduced runs.

What it measures (one run, Markdown tables on stdout):

1. Grid timing: a 16 x 16 grid (x = v0 log-spaced 1e-3..10, y = ||mu||
   log-spaced 0.5..50), 4 seeds, T = 200, n = m = 20, at d = 1000 and
   d = 10000, for the levels ``full`` (weight-space network), ``exact`` and
   ``orthogonal`` -- all three on sampler ``data``, so on the same
   realisations.  Timed: ``for ix in rows: compute_chunk(spec, ix)`` (no
   file I/O).  When the full level would take more than ~3 minutes, only a
   few rows are timed and the total is extrapolated linearly (the table says
   so).  Reports runs/s, the speed ratios exact/full and orthogonal/exact of
   this run, and PASS/MISS against the targets (exact/full >= 100x at
   d = 1000, >= 1000x at d = 10000; orthogonal >= 5x over exact at n = 20).
   Supplementary: the exact level on the d-free sampler ``wishart`` (other
   realisations of the same law), the share of the grid time spent drawing
   statistics, and the test-error agreement of exact and full.
2. Scaling of one reduced run (kernel only: statistics pre-sampled and passed
   via ``stats=``; median of repeats): d = 1e3..1e7 (sampler wishart, must be
   flat within 10%), n = 10..160 (exact and orthogonal, log-log slope), and
   T = 100..800 (exact, log-log slope).
3. Peak memory (``ru_maxrss``) after each section and the store size of the
   default sweep.
4. Parallel speed-up of ``compute_chunk`` over 8 rows of the default
   64 x 64 x 8 exact + wishart grid: 1 Numba thread vs all threads (and the
   single-threaded ``parallel=False`` kernel used on dask workers).
5. (unless --skip-default) The default ``dyn phase`` (64 x 64 x 8, exact,
   wishart) end to end through the CLI (click's CliRunner, in process),
   target < 60 s on 2 cores.

Run from the repository root::

    python benchmarks/phase.py              # full benchmark (~3-4 min on 2 idle cores)
    python benchmarks/phase.py --quick      # smoke test: small grids, few repeats (~30 s)
    python benchmarks/phase.py --skip-default   # without section 5

Timings are wall-clock and sensitive to other load on the machine: the load
average is printed at the start and after each section.
"""
from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time

import numpy as np

try:
    import dynamics  # noqa: F401  (installed, e.g. pip install -e .)
except ImportError:  # run from a checkout without installing
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numba

from compare.phase import _STATS_CACHE, compute_chunk, make_spec, parse_axis
from dynamics import Params, RunSpec, simulate
from dynamics.batch import stacked_stats
from dynamics.data import sample_data, sample_stats

from _common import machine_rows, repeat_times, table

TAU = 0.25
FULL_BUDGET_S = 180.0  # time the full level on a subset of rows above this


# ----------------------------------------------------------------- helpers
def verdict(ok: bool, quick: bool) -> str:
    v = "PASS" if ok else "MISS"
    return f"{v} (quick run, indicative)" if quick else v


def peak_mib() -> float:
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 2**10  # bytes vs KiB


def progress(msg):
    sys.stdout.flush()
    print(f"  [{msg}]", file=sys.stderr, flush=True)


MAX_LOAD = [0.0]  # highest 1-minute load average seen at a checkpoint


def load() -> str:
    try:
        la = os.getloadavg()
    except OSError:
        return "n/a"
    MAX_LOAD[0] = max(MAX_LOAD[0], la[0])
    return "%.2f %.2f %.2f" % la


def median_time(fn, repeats):
    return float(np.median(repeat_times(fn, repeats)))


def min_time(fn, repeats):
    return float(np.min(repeat_times(fn, repeats)))


def slope(x, y) -> float:
    return float(np.polyfit(np.log(x), np.log(y), 1)[0])


def fmt_t(t: float) -> str:
    if t >= 1.0:
        return f"{t:.2f} s"
    if t >= 1e-3:
        return f"{t * 1e3:.3g} ms"
    return f"{t * 1e6:.3g} us"


def dir_bytes(path) -> int:
    total = 0
    for root, _, files in os.walk(path):
        for f in files:
            total += os.path.getsize(os.path.join(root, f))
    return total


# ----------------------------------------------------------------- warm-up
def warm_up():
    """Compile / load the Numba caches of every level and kernel, tiny sizes."""
    from fullsim import simulate_full
    t0 = time.perf_counter()
    p = Params(n=4, m=2, d=50, steps=3, n_test=10)
    for level in ("exact", "orthogonal", "fixed-output"):
        for sampler in ("wishart", "data"):
            simulate(p, level, sampler, record_every=1)
    simulate_full(p, record_every=1)
    xs, ys = ("v0", np.array([1e-3, 1.0])), ("mu", np.array([1.0, 5.0]))
    for level in ("exact", "orthogonal", "full"):
        spec = make_spec(RunSpec(p, level, "data", 2), xs, ys, tau=TAU)
        compute_chunk(spec, 0, parallel=True)
        if level != "full":
            compute_chunk(spec, 0, parallel=False)
    return time.perf_counter() - t0


# --------------------------------------------------------------- section 1
def time_grid(params, xs, ys, seeds, level, subset_rows, budget, sampler="data"):
    """Time compute_chunk over the rows; the full level may use a row subset.

    For the full level one untimed-for-the-table probe run predicts the grid
    time; above ``budget`` seconds only ``subset_rows`` evenly spaced rows are
    timed and the total is extrapolated linearly in the number of rows.
    """
    spec = make_spec(RunSpec(params, level, sampler, seeds), xs, ys, tau=TAU)
    nx = len(xs[1])
    runs = nx * len(ys[1]) * seeds
    rows = list(range(nx))
    predicted = None
    if level == "full":
        from fullsim import simulate_full
        p1 = params.replace(v0=float(xs[1][0]), mu_norm=float(ys[1][0]))
        t0 = time.perf_counter()
        simulate_full(p1, record_every=p1.steps)
        predicted = (time.perf_counter() - t0) * runs
        if predicted > budget:
            k = max(1, min(subset_rows, nx))
            rows = sorted({int(i) for i in np.linspace(0, nx - 1, k)})
    outs, elapsed = {}, 0.0
    _STATS_CACHE.clear()  # every level pays for drawing its statistics
    for ix in rows:
        t0 = time.perf_counter()
        outs[ix] = compute_chunk(spec, ix)
        elapsed += time.perf_counter() - t0
    total = elapsed * nx / len(rows)
    return dict(level=level, sampler=sampler, d=params.d, elapsed=elapsed, rows=rows, nx=nx,
                total=total, runs=runs, rate=runs / total, outs=outs,
                extrapolated=len(rows) < nx, predicted=predicted)


def section_grid(cfg, quick):
    print(f"## 1. Grid: {cfg['g']} x {cfg['g']} (v0 x ||mu||), {cfg['seeds']} seeds, "
          f"T = 200, n = m = 20, sampler data (same realisations for all levels)\n")
    base = Params(n=20, m=20, steps=200)
    xs = ("v0", np.geomspace(1e-3, 10.0, cfg["g"]))
    ys = ("mu", np.geomspace(0.5, 50.0, cfg["g"]))
    res = {}
    rows = []
    for d in (1000, 10000):
        p = base.replace(d=d)
        for level in ("full", "exact", "orthogonal"):
            r = time_grid(p, xs, ys, cfg["seeds"], level, cfg["full_rows"], cfg["full_budget"])
            res[(d, level)] = r
            how = (f"extrapolated from {len(r['rows'])} of {r['nx']} rows "
                   f"({fmt_t(r['elapsed'])} measured)" if r["extrapolated"]
                   else f"all {r['nx']} rows measured")
            rows.append([d, level, r["runs"], f"{r['total']:.2f} s", how,
                         f"{r['rate']:.1f}", f"{1e3 / r['rate']:.3g}"])
            progress(f"d={d} {level}: {r['total']:.1f} s, load {load()}")
        # supplementary: the d-free sampler (other realisations, same law)
        r = time_grid(p, xs, ys, cfg["seeds"], "exact", 0, 0, sampler="wishart")
        res[(d, "exact-wishart")] = r
        rows.append([d, "exact, sampler wishart (suppl.)", r["runs"], f"{r['total']:.2f} s",
                     f"all {r['nx']} rows measured", f"{r['rate']:.1f}",
                     f"{1e3 / r['rate']:.3g}"])
    table(["d", "level", "runs", "time (grid)", "timing", "runs/s", "ms/run"], rows)

    # ratios and targets
    trows = []
    for d, target in ((1000, 100.0), (10000, 1000.0)):
        ef = res[(d, "exact")]["rate"] / res[(d, "full")]["rate"]
        trows.append([d, "exact / full", f"{ef:.1f}x", f">= {target:g}x",
                      verdict(ef >= target, quick)])
    for d in (1000, 10000):
        ew = res[(d, "exact-wishart")]["rate"] / res[(d, "full")]["rate"]
        trows.append([d, "suppl.: exact (wishart) / full (other realisations)", f"{ew:.1f}x",
                      "-", "-"])
    for d in (1000, 10000):
        oe = res[(d, "orthogonal")]["rate"] / res[(d, "exact")]["rate"]
        trows.append([d, "orthogonal / exact (grid, n = 20)", f"{oe:.2f}x", ">= 5x",
                      verdict(oe >= 5.0, quick)])
    table(["d", "speed ratio (runs/s)", "measured", "target", "verdict"], trows)

    # where the time of the reduced levels goes, and a correctness check
    nrows = []
    for d in (1000, 10000):
        p = base.replace(d=d)
        full, exact = res[(d, "full")], res[(d, "exact")]
        seeds = exact["outs"][0]["point_seed"][0]
        pkey = p.replace(mu_norm=1.0, v0=1.0, seed=0)
        t_stats = min_time(lambda: stacked_stats(pkey, "data", seeds), cfg["reps_small"])
        t_draw = min_time(lambda: sample_data(p.replace(seed=int(seeds[0]))),
                             cfg["reps_small"])
        share = t_stats / exact["total"]
        diffs = np.concatenate([np.abs(full["outs"][ix]["test_error"]
                                       - exact["outs"][ix]["test_error"]).ravel()
                                for ix in full["rows"]])
        nrows.append([d, fmt_t(t_draw), f"{fmt_t(t_stats)} ({100 * share:.0f}%)",
                      f"{full['runs']} ({fmt_t(t_draw * full['runs'])} est.)",
                      f"{diffs.max():.3g} / {diffs.mean():.2g} over {diffs.size} runs"])
    table(["d", "one sample_data draw", "exact: stats sampling in grid time (share, est.)",
           "full: data draws per grid (time)", "max / mean abs diff test error exact vs full"],
          nrows)
    print("Sampling estimate = min over repeats of one stacked_stats call (4 seeds). "
          "The reduced levels draw the statistics once per grid here (cached across rows: "
          "the seeds are common along v0 and mu); the full level draws the data again "
          "for every run (every mu and v0).\n")
    return res


# --------------------------------------------------------------- section 2
def section_scaling(cfg, quick):
    print("## 2. One reduced run (kernel only, stats pre-sampled), median of "
          f"{cfg['reps']} repeats; base n = m = 20, d = 1000, T = 200\n")
    base = Params(n=20, m=20, d=1000, steps=200)

    def run_time(p, level):
        st = sample_stats(p, "wishart")
        simulate(p, level, "wishart", record_every=p.steps, stats=st)  # untimed
        return median_time(lambda: simulate(p, level, "wishart", record_every=p.steps,
                                            stats=st), cfg["reps"])

    # d
    ds = [10**k for k in range(3, 8)]
    td, ts = [], []
    for d in ds:
        p = base.replace(d=d)
        td.append(run_time(p, "exact"))
        ts.append(median_time(lambda: sample_stats(p, "wishart"), cfg["reps"]))
    ratio = max(td) / min(td)
    print("### d (exact, sampler wishart)\n")
    table(["d", "run time", "sample_stats (wishart) time"],
          [[f"1e{int(np.log10(d))}", fmt_t(t), fmt_t(s)] for d, t, s in zip(ds, td, ts)])
    print(f"max/min run time over d: {ratio:.3f} (target <= 1.10): "
          f"{verdict(ratio <= 1.10, quick)}\n")

    # n
    ns = [10, 20, 40, 80, 160]
    tn = {lv: [run_time(base.replace(n=n), lv) for n in ns] for lv in ("exact", "orthogonal")}
    print("### n (sampler wishart)\n")
    table(["n", "exact", "orthogonal", "exact / orthogonal"],
          [[n, fmt_t(a), fmt_t(b), f"{a / b:.2f}x"]
           for n, a, b in zip(ns, tn["exact"], tn["orthogonal"])])
    se, so = slope(ns, tn["exact"]), slope(ns, tn["orthogonal"])
    se_hi, so_hi = slope(ns[-3:], tn["exact"][-3:]), slope(ns[-3:], tn["orthogonal"][-3:])
    table(["level", "log-log slope (all n)", "slope (n = 40..160)", "expected"],
          [["exact", f"{se:.2f}", f"{se_hi:.2f}", "~2"],
           ["orthogonal", f"{so:.2f}", f"{so_hi:.2f}", "~1"]])
    i20 = ns.index(20)
    oe20 = tn["exact"][i20] / tn["orthogonal"][i20]
    print(f"orthogonal / exact speed at n = 20 (kernel only): {oe20:.2f}x "
          f"(target >= 5x): {verdict(oe20 >= 5.0, quick)}\n")

    # T
    Ts = [100, 200, 400, 800]
    tT = [run_time(base.replace(steps=T), "exact") for T in Ts]
    print("### T (exact, sampler wishart)\n")
    table(["T", "run time", "per step"], [[T, fmt_t(t), fmt_t(t / T)] for T, t in zip(Ts, tT)])
    print(f"log-log slope in T: {slope(Ts, tT):.2f} (expected 1)\n")
    return dict(ratio=ratio, slope_exact=se, slope_orth=so, oe20=oe20)


# --------------------------------------------------------------- section 4
def section_parallel(cfg, quick):
    g, S, k = cfg["par_grid"], 8, cfg["par_rows"]
    xs = parse_axis(f"v0=1e-3..10:{g}")
    ys = parse_axis(f"mu=0.5..50:{g}")
    spec = make_spec(RunSpec(Params(), "exact", "wishart", S), xs, ys, tau=TAU)
    nthreads = numba.config.NUMBA_NUM_THREADS
    before = numba.get_num_threads()
    print(f"## 4. Parallel speed-up: compute_chunk over {k} rows of the {g} x {g} x {S} "
          f"exact + wishart grid ({k * g * S} runs)\n")
    times, outs = {}, {}
    try:
        for nt in (1, nthreads):
            numba.set_num_threads(nt)
            compute_chunk(spec, 0)  # untimed, same thread count
            t0 = time.perf_counter()
            outs[nt] = [compute_chunk(spec, ix) for ix in range(k)]
            times[nt] = time.perf_counter() - t0
        numba.set_num_threads(before)
        compute_chunk(spec, 0, parallel=False)
        t0 = time.perf_counter()
        outs["serial"] = [compute_chunk(spec, ix, parallel=False) for ix in range(k)]
        times["serial"] = time.perf_counter() - t0
    finally:
        numba.set_num_threads(before)
    same = all(np.array_equal(a["test_error"], b["test_error"], equal_nan=True)
               and np.array_equal(a["loss"], b["loss"], equal_nan=True)
               for other in ("serial", nthreads) for a, b in zip(outs[1], outs[other]))
    runs = k * g * S
    label = {1: "1 (group_kernel)", nthreads: f"{nthreads} (group_kernel, threads)",
             "serial": "1 (parallel=False: group_kernel on one thread, as on dask workers)"}
    table(["numba threads", "time", "runs/s"],
          [[label[nt], f"{t:.2f} s", f"{runs / t:.0f}"] for nt, t in times.items()])
    sp = times[1] / times[nthreads]
    print(f"speed-up {nthreads} threads vs 1: {sp:.2f}x "
          f"(ideal {nthreads}x); results identical bit for bit: {same}; "
          f"thread count restored to {numba.get_num_threads()}; "
          f"parallel=False vs one Numba thread: {times['serial'] / times[1]:.2f}x "
          f"the time\n")
    return sp


# --------------------------------------------------------------- section 5
def section_default(cfg, quick):
    from click.testing import CliRunner
    from compare.cli import main as cli_main

    argv = ["phase", "--quiet"] + cfg["cli_args"]
    desc = "default 64 x 64 x 8" if not cfg["cli_args"] else " ".join(cfg["cli_args"])
    print(f"## 5. `dyn phase` end to end ({desc}; exact, wishart; CliRunner in process)\n")
    with tempfile.TemporaryDirectory(prefix="dyn-phase-bench-") as tmp:
        out = os.path.join(tmp, "store")
        t0 = time.perf_counter()
        result = CliRunner().invoke(cli_main, argv + ["--out", out])
        wall = time.perf_counter() - t0
        if result.exit_code != 0:
            print(f"CLI failed (exit code {result.exit_code}):\n```\n{result.output}```\n")
            if result.exception is not None:
                raise result.exception
        store = dir_bytes(out)
        nc = os.path.getsize(os.path.join(out, "phase.nc"))
        chunks = dir_bytes(os.path.join(out, "phase.zarr"))
    print("```")
    print(result.output.rstrip())
    print("```\n")
    ok = wall < 60.0
    cores = os.cpu_count()
    table(["wall time", "target", "verdict", "store size (total)", "phase.nc", "phase.zarr/"],
          [[f"{wall:.1f} s", f"< 60 s on 2 cores (here {cores} CPUs)", verdict(ok, quick),
            f"{store / 2**20:.2f} MiB", f"{nc / 2**20:.2f} MiB", f"{chunks / 2**20:.2f} MiB"]])
    return dict(wall=wall, store=store)


# -------------------------------------------------------------------- main
def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true",
                    help="smoke test: 8 x 8 grids, few repeats, small default sweep")
    ap.add_argument("--skip-default", action="store_true",
                    help="skip section 5 (the default-size phase diagram via the CLI)")
    args = ap.parse_args(argv)
    quick = args.quick
    cfg = dict(g=16, seeds=4, full_rows=2, full_budget=FULL_BUDGET_S, reps=7, reps_small=3,
               par_grid=64, par_rows=8, cli_args=[])
    if quick:
        cfg.update(g=8, full_rows=1, full_budget=10.0, reps=3, reps_small=2,
                   par_grid=16, par_rows=4,
                   cli_args=["--x", "v0=1e-3..10:8", "--y", "mu=0.5..50:8", "--seeds", "4"])

    t_start = time.perf_counter()
    print("# dyn phase benchmark" + (" (--quick)" if quick else "") + "\n")
    load()
    table(["item", "value"], machine_rows())
    t_warm = warm_up()
    print(f"Warm-up (Numba cache load / compile, every level): {t_warm:.2f} s\n")

    mem = [["after warm-up", f"{peak_mib():.0f}", load(), f"{t_warm:.1f} s"]]

    def mark(name, t0):
        mem.append([name, f"{peak_mib():.0f}", load(), f"{time.perf_counter() - t0:.1f} s"])

    t0 = time.perf_counter()
    section_grid(cfg, quick)
    mark("1. grid timing", t0)
    t0 = time.perf_counter()
    section_scaling(cfg, quick)
    mark("2. scaling", t0)
    t0 = time.perf_counter()
    section_parallel(cfg, quick)
    mark("4. parallel speed-up", t0)
    default = None
    if not args.skip_default:
        t0 = time.perf_counter()
        default = section_default(cfg, quick)
        mark("5. default phase (CLI)", t0)

    print("## 3. Peak memory (ru_maxrss, cumulative) after each section\n")
    table(["after section", "peak RSS (MiB)", "load avg (1/5/15 min)", "section time"], mem)
    if default is not None:
        print(f"Store size of the {'quick' if quick else 'default'} sweep: "
              f"{default['store'] / 2**20:.2f} MiB\n")
    else:
        print("Store size of the default sweep: n/a (--skip-default)\n")
    ncpu = os.cpu_count() or 1
    if MAX_LOAD[0] > ncpu + 0.5:
        print(f"NOTE: the 1-minute load average reached {MAX_LOAD[0]:.2f} on {ncpu} CPUs "
              f"(this benchmark itself uses up to {numba.config.NUMBA_NUM_THREADS} threads): "
              f"other processes competed for the CPU, timings are noisy.\n")
    print(f"Total benchmark time: {time.perf_counter() - t_start:.1f} s")


if __name__ == "__main__":
    main()
