"""Asymptotic scaling of the limit boundary ||mu||*(t = inf) in d and n.

Every point is the solver of `dyn solve --times inf --integrator flow`
(``compare.boundaries.make_evaluator`` + ``dynamics.boundary.find_boundaries``
at the single time t = inf; level exact, sampler wishart, tau = 0.25, seeds
seed + k): the normalised gradient flow from t = 0, stopped when the
margin criterion holds or at t = 1e30 GD steps; bisection to --rel-tol 0.03
(dyn solve: 0.01) inside a bracket, then log-linear interpolation.  Grids:
  * d = 10^3 .. 10^8 (half decades) at n = 20;
  * n = 10 .. 320 (doublings; 640 with --max-n 640) at d = 10^5;
for v0 = 1e-3 and v0 = 1 (other parameters at their defaults: m = 20,
sigma0 = 0.01, sigmap = 1, eta = 0.01).  Reported per point: mu* with its
bootstrap interval over seeds, and how many runs met the limit criterion
(all runs of the search, and the runs at the two ||mu|| bracketing mu*).

Exponents: least squares of log mu* on log d (log n) over the whole grid
(``dynamics.boundary.fit_power_law``, t interval), and local slopes over
windows (d: each decade, 3 points; n: sliding windows of 4 points = a factor
8, 0.9 decade) with 95% intervals from a bootstrap over seeds (the seeds of
a window are resampled jointly, the crossing of every point recomputed from
its stored per-seed error curve, the slope refitted).

A third n scan (v0 = 1 only) at d = 10^7, where the large-v0 d slope has
reached 1/4, tests the n half of the fixed-output law (d/n)^(1/4) there; a
fourth repeats it with sigma_0 = 1e-4 (sigma_0 sigma_p sqrt(d) = 0.32 as at
d = 10^3 with the default sigma_0 = 0.01) to separate the d-dependence of
the initial filters' noise response from the law.

Cost: one run is O(m n^2) per step and ~3600 normalised steps; n = 640 runs
take ~15-30 s each on this machine, so n >= --big-n uses --big-n-seeds seeds,
and the n scans stop at --max-n 320 by default (the default run took 25 min
on 2 cores shared with other jobs; n = 640 would add ~25 min per v0).

Run:  python studies/asymptotics.py [--seeds 8] [--big-n 320 --big-n-seeds 4] [--max-n 640]
      python studies/asymptotics.py --quick     # smoke test (< 1 min, temp dir)
Resumable: results are saved (atomically) to OUT/asymptotics.nc after every
point; a rerun with the same settings skips the points already there.
Writes asymptotics.nc, asymptotics.png and local_slopes.png; prints tables.
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import time

import numpy as np
import xarray as xr

from _common import boundary_records_data, log_log_panel  # studies/_common.py
from compare.boundaries import make_evaluator
from compare.dataset import global_attrs, read_netcdf, write_netcdf
from compare.plots import plt, save_figure
from dynamics import Params
from dynamics.boundary import crossing, find_boundaries, fit_power_law, seed_list

TAU = 0.25
LEVEL, SAMPLER, INTEGRATOR = "exact", "wishart", "flow"
V0S = (1e-3, 1.0)
D_GRID = tuple(round(10 ** e) for e in np.arange(3.0, 8.01, 0.5))
N_GRID = (10, 20, 40, 80, 160, 320, 640)
S0 = Params().sigma_0                 # default sigma_0 (0.01)
# scans: (name, axis, v0s, values, fixed value of the other variable, sigma_0)
SCANS = (("d", "d", V0S, D_GRID, 20, S0),
         ("n", "n", V0S, N_GRID, 100_000, S0),
         # large v0 at d = 10^7, where its d slope has reached 1/4 (see the d scan)
         ("n@d=1e7", "n", (1.0,), (10, 20, 40, 80, 160), 10**7, S0),
         # the same with sigma_0 sqrt(d) = 0.32, as at d = 10^3 with the default sigma_0
         ("n@d=1e7,s0=1e-4", "n", (1.0,), (10, 20, 40, 80, 160), 10**7, 1e-4))
N_WINDOW = 4                          # points per local n slope (doublings: a factor 8)
QUICK_SCANS = (("d", "d", V0S, (1000, 10_000, 100_000), 20, S0),
               ("n", "n", V0S, (10, 20, 40), 10_000, S0),
               ("n@d=1e6", "n", (1.0,), (10, 20), 10**6, S0),
               ("n@d=1e6,s0=1e-4", "n", (1.0,), (10, 20), 10**6, 1e-4))
QUICK = {"sizes": {"n_test": 200}, "seeds": 2}
REF = {"d": {"fixed-output law (Kou et al.)": 0.25, "growth-rate law sqrt(d/n)": 0.5},
       "n": {"fixed-output law (Kou et al.)": -0.25, "growth-rate law sqrt(d/n)": -0.5}}


def point(scan, x):
    """(d, n) of value x on a scan."""
    axis, fixed = scan[1], scan[4]
    return (x, fixed) if axis == "d" else (fixed, x)


# ---------------------------------------------------------------- one point
def limit_boundary(params: Params, n_seeds: int, guess, rel_tol: float) -> dict:
    """mu*(t = inf) at ``params`` (the solver of `dyn solve --times inf
    --integrator flow`), plus the per-run limit diagnostics the Boundary does
    not keep: which runs met the criterion at the ||mu|| bracketing mu*."""
    seeds = seed_list(params, n_seeds)
    evaluate, sampler = make_evaluator(params, LEVEL, SAMPLER, seeds, (np.inf,), INTEGRATOR)
    info = {}   # ||mu|| -> (S, 4): converged, final time, RHS evaluations, labels stable

    def recording(mus, upto=None):
        res = evaluate(mus, upto)
        for q, mu in enumerate(np.asarray(mus, float)):
            info[float(mu)] = res["info"][:, q, :].copy()
        return res

    t0 = time.perf_counter()
    b = find_boundaries(recording, params, seeds, (np.inf,), (TAU,), guess=guess,
                        rel_tol=rel_tol, level=LEVEL, sampler=sampler)[0]
    star = b.star()
    near = np.full((n_seeds, 0, 4), np.nan)
    if np.isfinite(star):
        k = int(np.clip(np.searchsorted(b.curve_mu, star), 1, b.curve_mu.size - 1))
        near = np.stack([info[float(b.curve_mu[k - 1])], info[float(b.curve_mu[k])]], axis=1)
    allinfo = np.stack([info[float(m)] for m in b.curve_mu], axis=1)
    return {"mu_star": star, "lo": b.ci[TAU][0], "hi": b.ci[TAU][1],
                "conv_all": b.limit_converged, "stable_all": b.limit_labels_stable,
                "conv_near": float(np.mean(near[..., 0] == 1)) if near.size else np.nan,
                "stable_near": float(np.mean(near[..., 3] == 1)) if near.size else np.nan,
                "t_stop_min": float(np.min(allinfo[..., 1])),
                "loss": b.loss_at_star, "train_error": b.train_error_at_star,
                "margin": b.margin_at_star, "n_diverged": b.n_diverged,
                "curve_mu": b.curve_mu, "curve_test": b.curve_test, "notes": b.notes,
                "wall": time.perf_counter() - t0}


# ---------------------------------------------------------------- storage
SCALARS = ("mu_star", "lo", "hi", "conv_all", "stable_all", "conv_near", "stable_near",
           "t_stop_min", "loss", "train_error", "margin", "n_diverged", "wall")


def key_of(v0, d, n, s, sigma0):
    return (float(v0), int(d), int(n), int(s), float(sigma0))


def to_dataset(records: dict, settings: dict, base: Params) -> xr.Dataset:
    keys = sorted(records)
    data = boundary_records_data(records, keys, SCALARS, n_seeds=lambda k: k[3])
    ds = xr.Dataset(data, coords={
        "v0": ("point", [k[0] for k in keys]), "d": ("point", [k[1] for k in keys]),
        "n": ("point", [k[2] for k in keys]), "n_seeds": ("point", [k[3] for k in keys]),
        "sigma_0": ("point", [k[4] for k in keys])})
    meta = {"mu_star": "critical ||mu|| where the seed-mean clean test error at t = inf = tau",
            "lo": "2.5% bootstrap (over seeds) quantile of mu*",
            "hi": "97.5% bootstrap (over seeds) quantile of mu*",
            "conv_all": "fraction of all runs of the search meeting the limit (margin) criterion",
            "stable_all": "fraction of all runs with test labels stable over the last decade",
            "conv_near": ("fraction meeting the limit criterion, runs at the 2 ||mu|| "
                          "bracketing mu*"),
            "stable_near": "fraction with stable test labels, runs at the 2 ||mu|| bracketing mu*",
            "t_stop_min": "smallest stopping time (GD steps) of any run",
            "loss": "seed-mean training loss at mu* (at the stop)",
            "train_error": "max over seeds of the training error at mu*",
            "margin": "seed-mean normalised margin at mu*",
            "wall": "wall time of the point (s)"}
    for name, text in meta.items():
        ds[name].attrs["long_name"] = text
    ds.attrs = global_attrs(base, swept=("mu_norm", "v0", "d", "n", "sigma_0"),
                            title="dyn asymptotics: scaling of mu*(t = inf) in d and n",
                            level=LEVEL, sampler=SAMPLER, integrator=INTEGRATOR,
                            threshold=TAU, settings_json=json.dumps(settings, sort_keys=True))
    return ds


def load_records(path, settings) -> dict:
    if not os.path.exists(path):
        return {}
    ds = read_netcdf(path)
    if json.loads(ds.attrs.get("settings_json", "{}")) != settings:
        print(f"{path}: other settings; its points are not reused")
        return {}
    out = {}
    for i in range(ds.sizes["point"]):
        p = ds.isel(point=i)
        k = key_of(p.v0, p.d, p.n, p.n_seeds, p.sigma_0 if "sigma_0" in ds.coords else S0)
        mu = p.curve_mu.values
        ok = np.isfinite(mu)
        rec = {name: float(p[name]) for name in SCALARS}
        rec.update(curve_mu=mu[ok], curve_test=p.curve_test_error.values[:k[3], ok],
                   notes=[x for x in str(p.notes.values).split(" | ") if x])
        out[k] = rec
    return out


# ---------------------------------------------------------------- analysis
def boot_stars(rec, idx):
    """mu* of each bootstrap resample of the seeds (rows of idx)."""
    return np.array([crossing(rec["curve_mu"], rec["curve_test"][b].mean(axis=0), TAU)
                     for b in idx])


def window_slope(xs, recs, idx_of):
    """LSQ slope of log mu* on log x over one window: estimate, 95% bootstrap
    interval (seeds resampled jointly across the window), valid replicates."""
    y = np.array([r["mu_star"] for r in recs])
    if not np.all(np.isfinite(y)):
        return np.nan, np.nan, np.nan, 0
    lx = np.log(np.asarray(xs, float))
    est = np.polyfit(lx, np.log(y), 1)[0]
    boots = np.stack([boot_stars(r, idx_of[r["curve_test"].shape[0]]) for r in recs], axis=1)
    ok = np.all(np.isfinite(boots) & (boots > 0), axis=1)
    if ok.sum() < 10:
        return est, np.nan, np.nan, int(ok.sum())
    sl = np.polyfit(lx, np.log(boots[ok]).T, 1)[0]
    lo, hi = np.percentile(sl, [2.5, 97.5])
    return est, lo, hi, int(ok.sum())


def rec_at(records, v0, d, n, sigma0):
    hits = [r for k, r in records.items() if k[:3] == (float(v0), d, n) and k[4] == sigma0]
    return hits[0] if hits else None


def scan_points(records, scan, v0):
    """[(x, record)] of the finished points of a scan at v0, x ascending."""
    pts = [(x, rec_at(records, v0, *point(scan, x), scan[5])) for x in scan[3]]
    return [(x, r) for x, r in pts if r is not None]


def windows(axis, grid):
    if axis == "d":   # each decade: 10^k, 10^(k+1/2), 10^(k+1)
        return [[x for x in grid if 10 ** k <= x <= 10 ** (k + 1)]
                for k in range(int(np.log10(min(grid))), int(np.log10(max(grid))))]
    w = min(N_WINDOW, len(grid))   # sliding windows of N_WINDOW doublings
    return [list(grid[i:i + w]) for i in range(len(grid) - w + 1)]


def analyse(records, scans, n_boot=1000):
    rng = np.random.default_rng(np.random.SeedSequence([0, 2410]))
    idx_of = {s: rng.integers(0, s, size=(n_boot, s)) for s in sorted({k[3] for k in records})}
    slopes, fits = [], {}
    for scan in scans:
        name, axis, v0s, grid = scan[:4]
        for v0 in v0s:
            pts = scan_points(records, scan, v0)
            if len(pts) >= 2:
                f = fit_power_law({axis: [x for x, _ in pts]}, [r["mu_star"] for _, r in pts])
                fits[(name, v0)] = (f["exponents"].get(axis, np.nan),
                                    *f["ci"].get(axis, (np.nan, np.nan)), f["rms"], len(pts))
            have = dict(pts)
            for win in windows(axis, grid):
                if len(win) < 2 or any(x not in have for x in win):
                    continue
                est, lo, hi, nb = window_slope(win, [have[x] for x in win], idx_of)
                slopes.append({"scan": name, "v0": v0, "axis": axis, "x0": win[0], "x1": win[-1],
                                   "slope": est, "lo": lo, "hi": hi, "n_boot": nb,
                                   "seeds": min(have[x]["curve_test"].shape[0] for x in win)})
    return slopes, fits


# ---------------------------------------------------------------- output
def fmt_x(x):
    e = np.log10(x)
    return f"1e{e:g}" if abs(e - round(e)) < 1e-9 else f"10^{e:.1f}"


def format_tables(records, slopes, fits, scans) -> str:
    L = [("mu*(t = inf)  [95% bootstrap CI]  (exact, wishart, flow to the limit criterion "
          "or t = 1e30 GD steps, tau = 0.25)"),
         ("  conv: fraction of runs meeting the margin criterion (all runs of the search / "
          "runs at the 2 ||mu|| bracketing mu*); stable: test labels stable over the last "
          "decade"),
         (f"  {'scan':<16}{'d':>9}{'n':>5}{'v0':>7}{'S':>3}  {'mu*':>8}  {'95% CI':<18}"
          f"{'conv all/near':>14}{'stable all/near':>17}{'loss@mu*':>10}{'time s':>8}")]
    for scan in scans:
        for x in scan[3]:
            d, n = point(scan, x)
            for v0 in scan[2]:
                hit = [(k, r) for k, r in records.items()
                       if k[:3] == (float(v0), d, n) and k[4] == scan[5]]
                if not hit:
                    continue
                (_, _, _, S, _), r = hit[0]
                L.append(f"  {scan[0]:<16}{fmt_x(d):>9}{n:>5}{v0:>7g}{S:>3}  "
                         f"{r['mu_star']:8.4g}  [{r['lo']:.4g}, {r['hi']:.4g}]".ljust(69) +
                         f"{r['conv_all']:>7.0%}/{r['conv_near']:<6.0%}"
                         f"{r['stable_all']:>9.0%}/{r['stable_near']:<7.0%}"
                         f"{r['loss']:>10.2g}{r['wall']:>8.0f}")
    L.append("local slopes d log mu* / d log x  [95% bootstrap over seeds]")
    for s in slopes:
        f = fmt_x if s["axis"] == "d" else str
        win = f"{s['axis']} = {f(s['x0'])}..{f(s['x1'])}"
        L.append(f"  {s['scan']:<16} v0={s['v0']:<6g} {win:<16} slope {s['slope']:+.3f} "
                 f"[{s['lo']:+.3f}, {s['hi']:+.3f}]  (min seeds {s['seeds']})")
    L.append("whole-scan power-law fits mu* ~ x^e  [95% t interval]")
    for (name, v0), (e, lo, hi, rms, k) in fits.items():
        L.append(f"  {name:<16} v0={v0:<6g} e = {e:+.3f} [{lo:+.3f}, {hi:+.3f}]  "
                 f"rms log resid {rms:.3f}  ({k} points)")
    L.append("  reference: fixed-output law (d/n)^(1/4): +0.25 in d, -0.25 in n; "
             "growth-rate law sqrt(d/n): +0.5, -0.5")
    return "\n".join(L)


def _style(scan_index, v0):
    """(colour, marker, line style): colour by v0 on the main scans, marker by scan."""
    colour = V0S.index(v0) if v0 in V0S and scan_index < 2 else scan_index
    return f"C{colour}", "os^D"[min(scan_index, 3)], "-" if scan_index < 2 else "-."


def plot_all(records, slopes, scans, base, out) -> list:
    paths = []
    fig, axes = plt.subplots(1, 2, figsize=(13, 5.5))
    ref_done = set()
    for i, scan in enumerate(scans):
        axis, v0s, fixed, sigma0 = scan[1], scan[2], scan[4], scan[5]
        ax = axes[0 if axis == "d" else 1]
        for v0 in v0s:
            pts = [(x, r) for x, r in scan_points(records, scan, v0) if np.isfinite(r["mu_star"])]
            if not pts:
                continue
            x = np.array([p[0] for p in pts], float)
            y = np.array([p[1]["mu_star"] for p in pts])
            err = np.abs(np.vstack([y - [p[1]["lo"] for p in pts],
                                    np.array([p[1]["hi"] for p in pts]) - y]))
            col, mk, ls = _style(i, v0)
            other = (f"n = {fixed}" if axis == "d" else f"d = {fmt_x(fixed)}") + (
                f", sigma0 = {sigma0:g}" if sigma0 != S0 else "")
            ax.errorbar(x, y, yerr=err, fmt=mk, ls=ls, ms=4, color=col, capsize=3,
                        label=f"v0 = {v0:g}, {other}")
            # reference slopes through the last point of each curve
            for rls, (lab, sl) in zip(("--", ":"), REF[axis].items()):
                xs = np.geomspace(x[0], x[-1], 20)
                first = (axis, lab) not in ref_done
                ax.plot(xs, y[-1] * (xs / x[-1]) ** sl, ls=rls, color=col, lw=1, alpha=0.6,
                        label=f"slope {sl:+g} ({lab})" if first else None)
                ref_done.add((axis, lab))
    for ax, axis in zip(axes, ("d", "n")):
        log_log_panel(ax, "input dimension d" if axis == "d" else "training samples n",
                      ylabel=r"critical signal $\|\mu\|^*(t=\infty)$ (test error 0.25)",
                      fontsize=7.5, loc="upper left" if axis == "d" else "upper right")
    fig.suptitle(f"Limit boundary mu*(t = inf) vs d and n (exact, wishart, normalised flow "
                 f"to t = 1e30; m={base.m}, sigma0={base.sigma_0:g} unless stated, "
                 f"sigmap={base.sigma_p:g}, 95% bootstrap over seeds; reference slopes "
                 f"through the last point)",
                 fontsize=9)
    fig.tight_layout()
    paths.append(save_figure(fig, os.path.join(out, "asymptotics.png")))

    fig, axes = plt.subplots(1, 2, figsize=(13, 4.8))
    for i, scan in enumerate(scans):
        name, axis, v0s, _, fixed, sigma0 = scan
        ax = axes[0 if axis == "d" else 1]
        for v0 in v0s:
            ss = [s for s in slopes if s["scan"] == name and s["v0"] == v0]
            if not ss:
                continue
            col, mk, ls = _style(i, v0)
            shift = 1.04 if v0 == V0S[-1] else 1 / 1.04
            xm = np.array([np.sqrt(s["x0"] * s["x1"]) for s in ss]) * shift
            y = np.array([s["slope"] for s in ss])
            err = np.abs([y - np.array([s["lo"] for s in ss]),
                          np.array([s["hi"] for s in ss]) - y])
            other = (f"n = {fixed}" if axis == "d" else f"d = {fmt_x(fixed)}") + (
                f", sigma0 = {sigma0:g}" if sigma0 != S0 else "")
            ax.errorbar(xm, y, yerr=np.nan_to_num(err), fmt=mk, ls=ls, color=col, capsize=3,
                        label=f"v0 = {v0:g}, {other}")
    for ax, axis in zip(axes, ("d", "n")):
        for ls, (lab, sl) in zip(("--", ":"), REF[axis].items()):
            ax.axhline(sl, color="k", ls=ls, lw=1, label=f"{sl:+g}: {lab}")
        ax.axhline(0, color="grey", lw=0.5)
        ax.set_xscale("log")
        ax.set_xlabel("window centre: " + (
            "d (windows of one decade)" if axis == "d"
            else f"n (windows of {N_WINDOW} points, a factor {2 ** (N_WINDOW - 1)})"))
        ax.set_ylabel(f"local slope d log mu* / d log {axis}")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7.5)
    fig.suptitle("Local exponents of mu*(t = inf), 95% intervals (bootstrap over seeds, "
                 "joint across the window)", fontsize=9.5)
    fig.tight_layout()
    paths.append(save_figure(fig, os.path.join(out, "local_slopes.png")))
    return paths


# ---------------------------------------------------------------- main
def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=8)
    ap.add_argument("--big-n", type=int, default=320, help="n from which --big-n-seeds applies")
    ap.add_argument("--big-n-seeds", type=int, default=4)
    ap.add_argument("--max-n", type=int, default=320,
                    help="stop the n scans here (640: ~25 min per v0 on 2 shared cores)")
    ap.add_argument("--rel-tol", type=float, default=0.03, help="bisection tolerance in ||mu||")
    ap.add_argument("--out", default=None,
                    help="output folder (default figures/asymptotics; --quick: a temp folder)")
    ap.add_argument("--quick", action="store_true",
                    help="smoke test: n_test=200, small scans, 2 seeds, into a temp folder")
    args = ap.parse_args()
    if args.quick:
        sizes, scans = QUICK["sizes"], QUICK_SCANS
        args.seeds = args.big_n_seeds = QUICK["seeds"]
        out = args.out or os.path.join(tempfile.gettempdir(), "dyn-asymptotics-quick")
    else:
        sizes, scans = {}, SCANS
        out = args.out or "figures/asymptotics"
    scans = tuple((nm, ax, v0s, tuple(x for x in vals if ax == "d" or x <= args.max_n), fx, sg)
                  for nm, ax, v0s, vals, fx, sg in scans)
    base = Params(**sizes)
    settings = {"base": json.loads(base.to_json()), "rel_tol": args.rel_tol, "tau": TAU,
                    "level": LEVEL, "sampler": SAMPLER, "integrator": INTEGRATOR}
    os.makedirs(out, exist_ok=True)
    path = os.path.join(out, "asymptotics.nc")
    records = load_records(path, settings)
    if records:
        print(f"resuming: {len(records)} points already in {path}")

    # the plan, scan by scan (d first: its cost does not grow with d), x ascending
    n_seeds = lambda n: args.big_n_seeds if n >= args.big_n else args.seeds
    plan = [(scan, x, v0) for scan in scans for x in scan[3] for v0 in scan[2]]
    keep = set()
    t0 = time.perf_counter()
    for scan, x, v0 in plan:
        d, n = point(scan, x)
        k = key_of(v0, d, n, n_seeds(n), scan[5])
        keep.add(k)
        if k in records:
            continue
        # guess: log-linear extrapolation from the two nearest finished points of the scan
        hist = sorted([(abs(np.log(x2 / x)), x2, r["mu_star"])
                       for x2, r in scan_points(records, scan, v0)
                       if x2 != x and np.isfinite(r["mu_star"])])[:2]
        guess = None
        if len(hist) == 2:
            (_, x1, y1), (_, x2, y2) = hist
            guess = y1 * (x / x1) ** (np.log(y2 / y1) / np.log(x2 / x1))
        elif hist:
            guess = hist[0][2]
        records[k] = r = limit_boundary(base.replace(v0=v0, d=d, n=n, sigma_0=scan[5]),
                                        n_seeds(n), guess, args.rel_tol)
        write_netcdf(to_dataset(records, settings, base), path)
        print(f"{scan[0]:<16} v0={v0:<6g} d={d:<10d} n={n:<4d} S={n_seeds(n)}  "
              f"mu*={r['mu_star']:.4g} [{r['lo']:.4g}, {r['hi']:.4g}]  "
              f"conv {r['conv_all']:.0%}/{r['conv_near']:.0%} "
              f"stable {r['stable_all']:.0%}/{r['stable_near']:.0%}  {r['wall']:.0f} s "
              f"(total {time.perf_counter() - t0:.0f} s)", flush=True)
    records = {k: r for k, r in records.items() if k in keep}
    slopes, fits = analyse(records, scans)
    write_netcdf(to_dataset(records, settings, base), path)
    paths = plot_all(records, slopes, scans, base, out)
    print(format_tables(records, slopes, fits, scans))
    for k, r in sorted(records.items()):
        for note in r["notes"]:
            if not note.startswith("t = inf:"):
                print(f"  note (v0={k[0]:g}, d={k[1]}, n={k[2]}, sigma0={k[4]:g}): {note}")
    print(f"wrote {path}, " + ", ".join(os.path.basename(p) for p in paths) +
          f" ({time.perf_counter() - t0:.0f} s)")


if __name__ == "__main__":
    main()
