"""Depth: what of the depth-1 picture carries over to L = 2, 3 hidden layers.

Network of docs/theory.md#depth: L hidden ReLU layers per class (L = 1 is the paper's
network; L >= 2 adds L-1 trained m x m layers U, init N(0, sigma_u^2),
sigma_u = sqrt(2/m)); level exact, sampler wishart (d-free), tau = 0.25,
other parameters at their defaults (n = m = 20, d = 1000, sigma0 = 0.01,
sigmap = 1, eta = 0.01, T = 200).  Four pieces, each saved when finished:

  1. mu* versus v0 (``compare.boundaries.make_evaluator`` +
     ``dynamics.boundary.find_boundaries``, the solver of `dyn solve`):
       * T = 200: every v0 of --v0s, --seeds seeds;
       * late training: as `dyn solve --times 200,1e30` (GD to T = 200, then
         the normalised flow to t = LATE = 1e30 GD steps, the test error of
         that state), --inf-seeds seeds (the first seeds of the T = 200 set),
         v0 in --inf-v0s.  A late finite time, not the limit: the limit
         program of t = inf exists at depth 1 only
         (docs/guide/time-and-limit.md).  This search also gives a T = 200 mu*
         on those seeds (printed as a check).
  2. phase diagrams v0 x ||mu|| at T = 200 per L: the rows of `dyn phase`
     (``compare.phase.compute_chunk``: same grid values and seeding as
     `dyn phase --depth L --x v0=1e-3..10:K --y mu=0.5..50:K`), without its
     Zarr store (results go to depth.nc).
  3. per-layer relative change ||theta_l(T) - theta_l(0)|| / ||theta_l(0)||
     for blocks W, U1..U{L-1}, v (``Trajectory.layer_change``) at
     ||mu|| = --lc-mu, T = 200, per v0 and seed (seeds 0..--seeds-1).
  4. mu*(T = 200) over d = 10^3 .. 10^6 (half decades, wishart) for
     v0 in --d-v0s; exponent of mu* ~ d^a: least squares over the grid with
     a 95% t interval (``fit_power_law``) and a 95% bootstrap interval over
     seeds (seeds resampled jointly across the grid, every crossing
     recomputed from its stored per-seed error curve, the slope refitted);
     local slopes over the first (10^3..10^4.5) and last (10^4.5..10^6) half
     of the grid with the same bootstrap.  With eta = 0.01, v0 = 10 diverges
     at depth >= 2 for large d (the U layers blow up); for v0 in D_SMALL_V0S
     the grid is repeated at eta = 1e-3, T = 2000 (same flow time eta*T = 2;
     docs/theory.md#training-time-and-flow: the boundary is in the flow regime) at every depth.

Run:  nice -n 10 python studies/depth.py            (~30 min on 2 shared cores)
      python studies/depth.py --quick               # smoke test (< 1 min, temp dir)
Resumable: OUT/depth.nc is rewritten atomically after every finished piece;
a rerun with the same settings skips what is there.  Writes depth.nc,
mu_star_vs_v0.png, phase_L1_L2_L3.png, layer_change_vs_v0.png,
mu_star_vs_d.png; prints the tables.
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
from compare.phase import assemble, compute_chunk, make_spec, parse_axis, template
from compare.plots import plt, save_figure
from dynamics import Params, RunSpec
from dynamics.boundary import crossing, find_boundaries, fit_power_law
from dynamics.run import DivergenceError, simulate

TAU = 0.25
LEVEL, SAMPLER = "exact", "wishart"
DEPTHS = (1, 2, 3)
V0S = (1e-3, 1e-2, 0.1, 0.3, 1.0, 10.0)
INF_V0S = (1e-3, 0.1, 1.0, 10.0)
D_V0S = (1e-3, 1.0, 10.0)
D_GRID = tuple(round(10 ** e) for e in np.arange(3.0, 6.01, 0.5))
# v0 = 10 at depth >= 2 diverges with eta = 0.01 at large d: the d grid is
# repeated there with a 10x smaller step at the same flow time eta * T = 2
SMALL_STEP = dict(eta=1e-3, steps=2000)
D_SMALL_V0S = (10.0,)
PHASE_X, PHASE_Y = "v0=1e-3..10:16", "mu=0.5..50:16"
BLOCKS = ("W", "U1", "U2", "v")
QUICK = dict(sizes=dict(n=8, m=4, n_test=200, steps=60), depths=(1, 2, 3), v0s=(1e-3, 1.0),
             inf_v0s=(1.0,), d_v0s=(1e-3,), d_small_v0s=(1e-3,),
             small_step=dict(eta=1e-3, steps=120),
             d_grid=(1000, 10_000, 100_000),
             phase_x="v0=1e-3..10:4", phase_y="mu=0.5..50:4", seeds=2, inf_seeds=2,
             phase_seeds=2)


# ---------------------------------------------------------------- pieces
def boundary_search(params: Params, n_seeds: int, times, guess, rel_tol) -> dict:
    """mu* at each time in ``times`` from the same runs (the solver of `dyn
    solve --times`); returns {time: record}."""
    run = RunSpec(params, LEVEL, SAMPLER, n_seeds, times)
    evaluate, _ = make_evaluator(run)
    t0 = time.perf_counter()
    bs = find_boundaries(evaluate, run, taus=(TAU,), guess=guess, rel_tol=rel_tol)
    wall = time.perf_counter() - t0
    return {float(b.steps): dict(
        mu_star=b.star(), lo=b.ci[TAU][0], hi=b.ci[TAU][1], loss=b.loss_at_star,
        train_error=b.train_error_at_star, n_diverged=b.n_diverged,
        wall=wall,
        curve_mu=b.curve_mu, curve_test=b.curve_test,
        notes=[x for x in b.notes if not x.startswith("t = inf:")]) for b in bs}


def layer_changes(params: Params, n_seeds: int) -> dict:
    """Relative change per block (S, 4: W, U1, U2, v; NaN where absent) at
    T, test error and loss (S,) at params.mu_norm, seeds params.seed + s."""
    S = n_seeds
    ch, test, loss = np.full((S, len(BLOCKS)), np.nan), np.full(S, np.nan), np.full(S, np.nan)
    for s in range(S):
        try:
            tr = simulate(params.replace(seed=params.seed + s), LEVEL, SAMPLER,
                          record_every=params.steps)
        except DivergenceError:
            continue
        lc = tr.layer_change()[-1]
        L = params.depth
        ch[s, 0] = lc[0]
        ch[s, 1:L] = lc[1:L]
        ch[s, -1] = lc[-1]
        test[s], loss[s] = tr.test_error, tr.loss[-1]
    return dict(change=ch, test=test, loss=loss)


def phase_rows(params: Params, x, y, n_seeds: int) -> dict:
    """All rows of the v0 x ||mu|| sweep at depth params.depth (seeding of `dyn phase`)."""
    spec = make_spec(RunSpec(params, LEVEL, SAMPLER, n_seeds), x, y, tau=TAU)
    ds = template(spec)
    for ix in range(len(x[1])):
        row = compute_chunk(spec, ix)
        for k in ("test_error", "loss", "train_error"):
            ds[k][ix] = row[k]
    ds = assemble(spec, ds)
    return dict(test=ds.test_error.isel(steps=0).fillna(0.5).values,
                loss=ds.loss.isel(steps=0).values,
                train=ds.train_error.isel(steps=0).values,
                mu_star=ds.mu_star.isel(steps=0).values)


# ---------------------------------------------------------------- storage
SCALARS = ("mu_star", "lo", "hi", "loss", "train_error", "n_diverged", "wall")
LATE = 1e30  # the late time of piece 1b (GD steps): finite; t = inf exists at depth 1 only


def bkey(L, v0, d, S, steps):
    return (int(L), float(v0), int(d), int(S), float(steps))


def to_dataset(state, settings, base: Params, fits=None) -> xr.Dataset:
    """The state (boundaries, layer changes, phase rows) as one Dataset."""
    B = state["bounds"]
    keys = sorted(B)
    data = boundary_records_data(B, keys, SCALARS, n_seeds=lambda k: k[3])
    coords = {"depth": ("point", [k[0] for k in keys]), "v0": ("point", [k[1] for k in keys]),
              "d": ("point", [k[2] for k in keys]), "n_seeds": ("point", [k[3] for k in keys]),
              "steps": ("point", [k[4] for k in keys])}
    lc = state["lc"]
    lkeys = sorted(lc)
    Slc = settings["seeds"]
    if lkeys:
        data["layer_change"] = (("lc_point", "lc_seed", "block"),
                                np.stack([lc[k]["change"] for k in lkeys]))
        data["lc_test_error"] = (("lc_point", "lc_seed"), np.stack([lc[k]["test"] for k in lkeys]))
        data["lc_loss"] = (("lc_point", "lc_seed"), np.stack([lc[k]["loss"] for k in lkeys]))
        coords.update(lc_depth=("lc_point", [k[0] for k in lkeys]),
                      lc_v0=("lc_point", [k[1] for k in lkeys]),
                      lc_seed=np.arange(Slc), block=list(BLOCKS))
    ph = state["phase"]
    pL = sorted(ph)
    if pL:
        (_, xv), (_, yv) = parse_axis(settings["phase_x"]), parse_axis(settings["phase_y"])
        data["phase_test_error"] = (("phase_depth", "phase_v0", "phase_mu", "phase_seed"),
                                    np.stack([ph[L]["test"] for L in pL]))
        data["phase_loss"] = (("phase_depth", "phase_v0", "phase_mu", "phase_seed"),
                              np.stack([ph[L]["loss"] for L in pL]))
        data["phase_train_error"] = (("phase_depth", "phase_v0", "phase_mu", "phase_seed"),
                                     np.stack([ph[L]["train"] for L in pL]))
        data["phase_mu_star"] = (("phase_depth", "phase_v0"),
                                 np.stack([ph[L]["mu_star"] for L in pL]))
        coords.update(phase_depth=pL, phase_v0=xv, phase_mu=yv,
                      phase_seed=np.arange(settings["phase_seeds"]))
    ds = xr.Dataset(data, coords=coords)
    if fits:
        fk = sorted(fits)
        fd = {"fit_depth": ("fit", [k[0] for k in fk]), "fit_v0": ("fit", [k[1] for k in fk]),
              "fit_steps": ("fit", [k[2] for k in fk])}
        ds = ds.assign_coords(**fd)
        for j, name in enumerate(("d_exponent", "d_exponent_t_lo", "d_exponent_t_hi",
                                  "d_exponent_boot_lo", "d_exponent_boot_hi",
                                  "d_slope_low", "d_slope_low_lo", "d_slope_low_hi",
                                  "d_slope_high", "d_slope_high_lo", "d_slope_high_hi")):
            ds[name] = ("fit", [fits[k][j] for k in fk])
        ds["d_exponent"].attrs["long_name"] = "least-squares exponent a of mu*(T) ~ d^a"
    meta = {"mu_star": "critical ||mu|| where the seed-mean clean test error = 0.25",
            "lo": "2.5% bootstrap (over seeds) quantile of mu*",
            "hi": "97.5% bootstrap (over seeds) quantile of mu*",
            "wall": "wall time of the search (s; shared by the times of one search)"}
    for name, text in meta.items():
        ds[name].attrs["long_name"] = text
    if "layer_change" in ds:
        ds["layer_change"].attrs["long_name"] = (
            "||theta_l(T) - theta_l(0)|| / ||theta_l(0)|| per block at ||mu|| = lc_mu")
    ds["steps"].attrs["long_name"] = "training time in GD steps (1e30: late training, reached by the normalised flow)"
    ds.attrs = global_attrs(base, swept=("mu_norm", "v0", "d", "depth"),
                            title="dyn depth study: mu*, phase, layer change, d-scaling at "
                                  "L = 1, 2, 3", level=LEVEL, sampler=SAMPLER, threshold=TAU,
                            settings_json=json.dumps(settings, sort_keys=True))
    return ds


def load_state(path, settings) -> dict:
    state = {"bounds": {}, "lc": {}, "phase": {}}
    if not os.path.exists(path):
        return state
    ds = read_netcdf(path)
    old = json.loads(ds.attrs.get("settings_json", "{}"))
    same_base = all(old.get(k) == settings[k] for k in ("base", "rel_tol", "tau"))
    if not same_base:
        print(f"{path}: other base settings; nothing reused")
        return state
    for i in range(ds.sizes.get("point", 0)):
        p = ds.isel(point=i)
        k = bkey(p.depth, p.v0, p.d, p.n_seeds, p.steps)
        mu = p.curve_mu.values
        ok = np.isfinite(mu)
        rec = {name: float(p[name]) for name in SCALARS}
        rec.update(curve_mu=mu[ok], curve_test=p.curve_test_error.values[:k[3], ok],
                   notes=[x for x in str(p.notes.values).split(" | ") if x])
        state["bounds"][k] = rec
    if "layer_change" in ds and old.get("seeds") == settings["seeds"] and \
            old.get("lc_mu") == settings["lc_mu"]:
        for i in range(ds.sizes["lc_point"]):
            p = ds.isel(lc_point=i)
            state["lc"][(int(p.lc_depth), float(p.lc_v0))] = dict(
                change=p.layer_change.values, test=p.lc_test_error.values, loss=p.lc_loss.values)
    if "phase_test_error" in ds and all(old.get(k) == settings[k] for k in
                                        ("phase_x", "phase_y", "phase_seeds")):
        for L in ds.phase_depth.values:
            p = ds.sel(phase_depth=L)
            state["phase"][int(L)] = dict(test=p.phase_test_error.values,
                                          loss=p.phase_loss.values,
                                          train=p.phase_train_error.values,
                                          mu_star=p.phase_mu_star.values)
    return state


# ---------------------------------------------------------------- analysis
def boot_stars(rec, idx):
    return np.array([crossing(rec["curve_mu"], rec["curve_test"][b].mean(axis=0), TAU)
                     for b in idx])


def slope_with_boot(xs, recs, idx):
    """LSQ slope of log mu* on log x and its 95% bootstrap interval (seeds
    resampled jointly across the points)."""
    y = np.array([r["mu_star"] for r in recs])
    if len(recs) < 2 or not np.all(np.isfinite(y)):
        return np.nan, np.nan, np.nan
    lx = np.log(np.asarray(xs, float))
    est = np.polyfit(lx, np.log(y), 1)[0]
    boots = np.stack([boot_stars(r, idx) for r in recs], axis=1)
    ok = np.all(np.isfinite(boots) & (boots > 0), axis=1)
    if ok.sum() < 10:
        return est, np.nan, np.nan
    sl = np.polyfit(lx, np.log(boots[ok]).T, 1)[0]
    return (est, *np.percentile(sl, [2.5, 97.5]))


def d_fits(state, depths, d_v0s, d_grid, S, steps, n_boot=1000):
    """(L, v0) -> (a, t lo, t hi, boot lo, boot hi, low-half slope, lo, hi,
    high-half slope, lo, hi)."""
    rng = np.random.default_rng(np.random.SeedSequence([0, 2410, 11]))
    idx = rng.integers(0, S, size=(n_boot, S))
    out = {}
    mid = np.sqrt(d_grid[0] * d_grid[-1])
    for L in depths:
        for v0 in d_v0s:
            pts = [(d, state["bounds"].get(bkey(L, v0, d, S, steps))) for d in d_grid]
            pts = [(d, r) for d, r in pts if r is not None]
            if len(pts) < 2:
                continue
            f = fit_power_law({"d": [d for d, _ in pts]}, [r["mu_star"] for _, r in pts])
            a = f["exponents"].get("d", np.nan)
            tlo, thi = f["ci"].get("d", (np.nan, np.nan))
            _, blo, bhi = slope_with_boot([d for d, _ in pts], [r for _, r in pts], idx)
            low = [(d, r) for d, r in pts if d <= mid * 1.01]
            high = [(d, r) for d, r in pts if d >= mid / 1.01]
            sl = slope_with_boot([d for d, _ in low], [r for _, r in low], idx)
            sh = slope_with_boot([d for d, _ in high], [r for _, r in high], idx)
            out[(L, v0, float(steps))] = (a, tlo, thi, blo, bhi, *sl, *sh)
    return out


# ---------------------------------------------------------------- output
def fmt_ci(r):
    if r is None:
        return "-"
    return f"{r['mu_star']:.3g} [{r['lo']:.3g}, {r['hi']:.3g}]"


def format_tables(state, cfg, fits, base) -> str:
    B, T = state["bounds"], float(base.steps)
    S, Si = cfg["seeds"], cfg["inf_seeds"]
    Ls = cfg["depths"]
    out = [(f"1. mu* (clean test error = {TAU}) [95% bootstrap CI over seeds]; exact, "
            f"wishart, d={base.d}, n={base.n}, m={base.m}, eta={base.eta:g}"),
           (f"   T={base.steps}: {S} seeds; T={LATE:g}: GD to T={base.steps} then the "
            f"normalised flow to t = {LATE:g} GD steps (late training, not the limit), "
            f"{Si} seeds")]
    cols = list(dict.fromkeys([(L, T, S) for L in Ls] + [(L, T, Si) for L in Ls]
                              + [(L, LATE, Si) for L in Ls]))
    head = "".join(f"L={L} T={t:g}/{s}".rjust(22)
                   for L, t, s in cols)
    out.append(f"   {'v0':>6}{head}")
    for v0 in cfg["v0s"]:
        row = "".join(f"{fmt_ci(B.get(bkey(L, v0, base.d, s, t))):>22}" for L, t, s in cols)
        if row.strip(" -"):
            out.append(f"   {v0:>6g}{row}")
    out.append(f"   at t = {LATE:g}: training loss at mu*")
    for L in Ls:
        for v0 in cfg["inf_v0s"]:
            r = B.get(bkey(L, v0, base.d, Si, LATE))
            if r is not None:
                out.append(f"     L={L} v0={v0:<6g} loss@mu* {r['loss']:.2g}  "
                           f"(search {r['wall']:.0f} s)")
    notes = [(k, n) for k, r in sorted(B.items()) for n in r["notes"]]
    for k, n in notes:
        out.append(f"   note (L={k[0]}, v0={k[1]:g}, d={k[2]}, S={k[3]}, T={k[4]:g}): {n}")

    out.append(f"2. per-layer relative change ||theta_l(T)-theta_l(0)||/||theta_l(0)|| at "
               f"||mu|| = {cfg['lc_mu']:g}, T = {base.steps}: median [min, max] over {S} seeds; "
               f"test error (mean)")
    out.append(f"   {'L':>2} {'v0':>6} " + "".join(f"{b:>26}" for b in BLOCKS) + f"{'test err':>10}")
    for L in Ls:
        for v0 in cfg["v0s"]:
            r = state["lc"].get((L, v0))
            if r is None:
                continue
            cells = ""
            for j in range(len(BLOCKS)):
                c = r["change"][:, j]
                c = c[np.isfinite(c)]
                cells += (f"{np.median(c):.3g} [{c.min():.2g}, {c.max():.2g}]" if c.size
                          else "-").rjust(26)
            out.append(f"   {L:>2} {v0:>6g} {cells}{np.nanmean(r['test']):10.3f}")

    out.append(f"3. exponent a of mu* ~ d^a at T = {base.steps} (eta = {base.eta:g}), "
               f"d = {cfg['d_grid'][0]:g}.."
               f"{cfg['d_grid'][-1]:g} ({len(cfg['d_grid'])} points, half decades, {S} seeds): "
               f"LSQ [95% t] [95% seed bootstrap]; local slopes low / high half [bootstrap]")
    small = cfg["small_step"]
    for (L, v0, st), f in sorted(fits.items(), key=lambda kv: (kv[0][2], kv[0][0], kv[0][1])):
        tag = ("" if st == T else
               f" (eta={small['eta']:g}, T={small['steps']})")
        out.append(f"   L={L} v0={v0:<6g}{tag} a = {f[0]:+.3f} [{f[1]:+.3f}, {f[2]:+.3f}] "
                   f"[{f[3]:+.3f}, {f[4]:+.3f}]   low {f[5]:+.3f} [{f[6]:+.3f}, {f[7]:+.3f}]"
                   f"   high {f[8]:+.3f} [{f[9]:+.3f}, {f[10]:+.3f}]")
        pts = "  ".join(f"{d:g}:{B[bkey(L, v0, d, S, st)]['mu_star']:.3g}"
                        for d in cfg["d_grid"] if bkey(L, v0, d, S, st) in B)
        out.append(f"      mu* over d  {pts}")
    out.append("   reference: fixed-output law (d/n)^(1/4): +0.25; growth-rate law sqrt(d/n): +0.5")

    ph = state["phase"]
    if ph:
        (_, xv), (_, yv) = parse_axis(cfg["phase_x"]), parse_axis(cfg["phase_y"])
        out.append(f"4. seed-to-seed spread of mu* (T = {base.steps}): each seed's own crossing "
                   f"of {TAU} on the phase grid ({len(yv)} ||mu|| values {yv[0]:g}..{yv[-1]:g}, "
                   f"{cfg['phase_seeds']} seeds, phase seeding): median [q25, q75] (min-max)")
        cols = sorted({int(np.argmin(np.abs(np.log(xv / v0)))) for v0 in cfg["v0s"]})
        out.append("   " + f"{'L':>2} " + "".join(f"v0={xv[i]:.3g}".rjust(30) for i in cols))
        for L in sorted(ph):
            cells = ""
            for i in cols:
                te = ph[L]["test"][i]  # (mu, seed)
                c = np.array([crossing(yv, te[:, s_], TAU) for s_ in range(te.shape[1])])
                c = c[np.isfinite(c)]
                cells += (f"{np.median(c):.3g} [{np.percentile(c, 25):.3g}, "
                          f"{np.percentile(c, 75):.3g}] ({c.min():.3g}-{c.max():.3g})"
                          if c.size else "-").rjust(30)
            out.append(f"   {L:>2} {cells}")
    return "\n".join(out)


def _err(y, lo, hi):
    return np.abs(np.array([y - lo, hi - y]))


def plot_mu_star_vs_v0(state, cfg, base, path):
    B, T = state["bounds"], float(base.steps)
    fig, ax = plt.subplots(figsize=(8, 5.2))
    for c, L in enumerate(cfg["depths"]):
        for t, s, ls, mk, lab in ((T, cfg["seeds"], "-", "o", f"T = {base.steps}"),
                                  (LATE, cfg["inf_seeds"], "--", "s",
                                   f"t = {LATE:g} (late training)")):
            pts = [(v0, B.get(bkey(L, v0, base.d, s, t))) for v0 in cfg["v0s"]]
            pts = [(v0, r) for v0, r in pts if r is not None and np.isfinite(r["mu_star"])]
            if not pts:
                continue
            x = np.array([p[0] for p in pts]) * (1.0 + 0.06 * (c - 1))  # dodge
            y = np.array([p[1]["mu_star"] for p in pts])
            lo = np.array([p[1]["lo"] for p in pts])
            hi = np.array([p[1]["hi"] for p in pts])
            ax.errorbar(x, y, yerr=_err(y, lo, hi), fmt=mk, ls=ls, color=f"C{c}", capsize=3,
                        ms=5, mfc="white" if t == LATE else f"C{c}",
                        label=f"L = {L}, {lab} ({s} seeds)")
    log_log_panel(ax, r"output-layer initialisation $v_0$",
                  ylabel=rf"critical signal $\|\mu\|^*$ (mean clean test error = {TAU:g})",
                  fontsize=8, ncol=2, loc="upper right")
    ax.set_title(f"Phase boundary vs v0 at depth L = 1, 2, 3 (exact, wishart; 95% bootstrap "
                 f"over seeds)\n{base.caption(('mu_norm', 'v0', 'steps', 'seed'))}", fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path)


def plot_phase(state, cfg, base, path):
    ph = state["phase"]
    (_, xv), (_, yv) = parse_axis(cfg["phase_x"]), parse_axis(cfg["phase_y"])
    Ls = [L for L in cfg["depths"] if L in ph]
    fig, axes = plt.subplots(1, len(Ls), figsize=(5.0 * len(Ls) + 1.2, 4.8), sharey=True,
                             squeeze=False)
    mesh = None
    T = float(base.steps)
    for ax, L in zip(axes[0], Ls):
        mean = ph[L]["test"].mean(axis=-1)
        mesh = ax.pcolormesh(xv, yv, mean.T, shading="nearest", cmap="viridis", vmin=0, vmax=0.5)
        star = ph[L]["mu_star"]
        ok = np.isfinite(star)
        ax.plot(xv[ok], star[ok], "w-o", ms=3, lw=2, label=r"grid $\|\mu\|^*$ (error = 0.25)")
        pts = [(v0, state["bounds"].get(bkey(L, v0, base.d, cfg["seeds"], T)))
               for v0 in cfg["v0s"]]
        pts = [(v0, r) for v0, r in pts if r is not None and np.isfinite(r["mu_star"])]
        if pts:
            ax.plot([p[0] for p in pts], [p[1]["mu_star"] for p in pts], "rx", ms=8, mew=2, clip_on=False, zorder=5,
                    label=rf"solver $\|\mu\|^*$ ({cfg['seeds']} seeds)")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlim(xv[0], xv[-1])
        ax.set_ylim(yv[0], yv[-1])
        ax.set_xlabel(r"output-layer initialisation $v_0$")
        ax.set_title(f"L = {L}", fontsize=10)
        ax.legend(fontsize=7, loc="upper right", framealpha=0.8)
    axes[0, 0].set_ylabel(r"signal strength $\|\mu\|$")
    cbar = fig.colorbar(mesh, ax=axes[0].tolist(), fraction=0.025, pad=0.02)
    cbar.set_label(f"clean test error (mean over {cfg['phase_seeds']} seeds)")
    fig.suptitle(f"Test error over v0 x ||mu|| at T = {base.steps}, depth L = 1, 2, 3 "
                 f"({len(xv)} x {len(yv)} grid, seeding of `dyn phase`; exact, wishart)\n"
                 f"{base.caption(('mu_norm', 'v0', 'seed'))}", fontsize=9)
    return save_figure(fig, path)


def plot_layer_change(state, cfg, base, path):
    Ls = cfg["depths"]
    fig, axes = plt.subplots(1, len(Ls), figsize=(4.6 * len(Ls), 4.4), sharey=True,
                             squeeze=False)
    colors = {"W": "C0", "U1": "C1", "U2": "C2", "v": "C3"}
    for ax, L in zip(axes[0], Ls):
        v0s = [v0 for v0 in cfg["v0s"] if (L, v0) in state["lc"]]
        for j, b in enumerate(BLOCKS):
            ch = np.array([state["lc"][(L, v0)]["change"][:, j] for v0 in v0s])
            if not ch.size or np.all(np.isnan(ch)):
                continue
            med = np.nanmedian(ch, axis=1)
            ax.plot(v0s, med, "o-", color=colors[b],
                    label=f"{b}" + (" (output)" if b == "v" else " (first layer)" if b == "W"
                                    else f" (upper layer {b[1]})"))
            ax.fill_between(v0s, np.nanmin(ch, axis=1), np.nanmax(ch, axis=1),
                            color=colors[b], alpha=0.2)
        log_log_panel(ax, r"output-layer initialisation $v_0$", f"L = {L}", fontsize=8,
                      loc="best")
    axes[0, 0].set_ylabel(r"relative change $\|\theta_l(T)-\theta_l(0)\| / \|\theta_l(0)\|$")
    fig.suptitle(f"Which layers move: relative change per block at ||mu|| = {cfg['lc_mu']:g}, "
                 f"T = {base.steps} (median, band = min..max over {cfg['seeds']} seeds)\n"
                 f"{base.caption(('mu_norm', 'v0', 'seed'))}", fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path)


def plot_mu_star_vs_d(state, cfg, fits, base, path):
    B, T, S = state["bounds"], float(base.steps), cfg["seeds"]
    small = cfg["small_step"]
    Ts = float(small["steps"])
    v0s = cfg["d_v0s"]
    fig, axes = plt.subplots(1, len(v0s), figsize=(5.4 * len(v0s), 5.0), sharey=True,
                             squeeze=False)
    d_grid = np.array(cfg["d_grid"], float)
    for ax, v0 in zip(axes[0], v0s):
        has_small = v0 in cfg["d_small_v0s"]
        curves = [(T, f"eta = {base.eta:g}, T = {base.steps}")]
        if has_small:
            curves.append((Ts, f"eta = {small['eta']:g}, T = {small['steps']}"))
        for steps, tag in curves:
            faint = has_small and steps == T
            for c, L in enumerate(cfg["depths"]):
                pts = [(d, B.get(bkey(L, v0, d, S, steps))) for d in cfg["d_grid"]]
                pts = [(d, r) for d, r in pts if r is not None and np.isfinite(r["mu_star"])]
                if not pts:
                    continue
                x = np.array([p[0] for p in pts], float) * (1.0 + 0.05 * (c - 1))
                y = np.array([p[1]["mu_star"] for p in pts])
                lo = np.array([p[1]["lo"] for p in pts])
                hi = np.array([p[1]["hi"] for p in pts])
                f = fits.get((L, v0, steps))
                n_div = sum(p[1]["n_diverged"] for p in pts)
                parts = ([f"a = {f[0]:+.2f} [{f[3]:+.2f}, {f[4]:+.2f}]"]
                         if f and np.isfinite(f[3]) and n_div < 10 else [])
                parts += [f"{n_div:g} runs diverged"] if n_div else []
                lab = f"L = {L}, {tag}" + (": " + "; ".join(parts) if parts else "")
                ax.errorbar(x, y, yerr=_err(y, lo, hi), fmt="o" + (":" if faint else "-"),
                            ms=4, color=f"C{c}", capsize=2 if faint else 3,
                            mfc="white" if faint else f"C{c}", alpha=0.45 if faint else 1.0,
                            label=lab)
        ref = B.get(bkey(cfg["depths"][0], v0, cfg["d_grid"][0], S, Ts if has_small else T))
        if ref is not None and np.isfinite(ref["mu_star"]):
            y0 = ref["mu_star"]
            for ls, sl, lab in (("--", 0.25, "slope 1/4 (fixed-output law)"),
                                ((0, (1, 3)), 0.5, "slope 1/2 (growth-rate law)")):
                ax.plot(d_grid, y0 * (d_grid / d_grid[0]) ** sl, ls=ls, color="k", lw=1,
                        label=lab)
        log_log_panel(ax, f"input dimension d (n = {base.n})", f"v0 = {v0:g}", fontsize=7,
                      loc="upper left")
    axes[0, 0].set_ylabel(rf"critical signal $\|\mu\|^*$ (mean test error {TAU:g})")
    fig.suptitle(f"Scaling of mu* in d at depth L = 1, 2, 3 (exact, wishart, {S} seeds, 95% "
                 f"bootstrap bars; a: LSQ exponent [95% seed bootstrap]; reference slopes "
                 f"through L = {cfg['depths'][0]} (solid curves) at d = {cfg['d_grid'][0]:g})\n"
                 f"{base.caption(('mu_norm', 'v0', 'd', 'seed', 'eta', 'steps'))}, flow time "
                 f"eta*T = {base.eta * base.steps:g}", fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path)


# ---------------------------------------------------------------- main
def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=8, help="seeds at T = 200 and for layer change")
    ap.add_argument("--inf-seeds", type=int, default=8, help="seeds of the late-time (t = 1e30) searches")
    ap.add_argument("--phase-seeds", type=int, default=8)
    ap.add_argument("--lc-mu", type=float, default=5.0, help="||mu|| of the layer-change runs")
    ap.add_argument("--rel-tol", type=float, default=0.02, help="bisection tolerance in ||mu||")
    ap.add_argument("--out", default=None,
                    help="output folder (default figures/depth; --quick: a temp folder)")
    ap.add_argument("--quick", action="store_true",
                    help="smoke test: n=8, m=4, T=60, 2 seeds, tiny grids, into a temp folder")
    args = ap.parse_args()
    if args.quick:
        q = QUICK
        sizes = q["sizes"]
        cfg = dict(depths=q["depths"], v0s=q["v0s"], inf_v0s=q["inf_v0s"], d_v0s=q["d_v0s"],
                   d_small_v0s=q["d_small_v0s"], small_step=q["small_step"], d_grid=q["d_grid"], phase_x=q["phase_x"], phase_y=q["phase_y"],
                   seeds=q["seeds"], inf_seeds=q["inf_seeds"], phase_seeds=q["phase_seeds"])
        out = args.out or os.path.join(tempfile.gettempdir(), "dyn-depth-quick")
    else:
        sizes = {}
        cfg = dict(depths=DEPTHS, v0s=V0S, inf_v0s=INF_V0S, d_v0s=D_V0S,
                   d_small_v0s=D_SMALL_V0S, small_step=SMALL_STEP, d_grid=D_GRID,
                   phase_x=PHASE_X, phase_y=PHASE_Y, seeds=args.seeds,
                   inf_seeds=args.inf_seeds, phase_seeds=args.phase_seeds)
        out = args.out or "figures/depth"
    cfg["lc_mu"] = args.lc_mu
    base = Params(**sizes)
    T = float(base.steps)
    settings = dict(base=json.loads(base.to_json()), rel_tol=args.rel_tol, tau=TAU,
                    level=LEVEL, sampler=SAMPLER, **{k: (list(v) if isinstance(v, tuple) else v)
                                                      for k, v in cfg.items()})
    os.makedirs(out, exist_ok=True)
    path = os.path.join(out, "depth.nc")
    state = load_state(path, settings)
    if any(state.values()):
        print(f"resuming from {path}: {len(state['bounds'])} boundaries, "
              f"{len(state['lc'])} layer-change points, {len(state['phase'])} phase diagrams")
    t0 = time.perf_counter()
    S, Si = cfg["seeds"], cfg["inf_seeds"]

    def save(msg):
        write_netcdf(to_dataset(state, settings, base), path)
        print(f"{msg}  (total {time.perf_counter() - t0:.0f} s)", flush=True)

    def star_of(L, v0, d, s, t):
        r = state["bounds"].get(bkey(L, v0, d, s, t))
        return r["mu_star"] if r is not None and np.isfinite(r["mu_star"]) else None

    # 1a. mu* vs v0 at T (cheap)
    for L in cfg["depths"]:
        for i, v0 in enumerate(cfg["v0s"]):
            if bkey(L, v0, base.d, S, T) in state["bounds"]:
                continue
            guess = star_of(L - 1, v0, base.d, S, T) or (
                star_of(L, cfg["v0s"][i - 1], base.d, S, T) if i else None)
            rec = boundary_search(base.replace(depth=L, v0=v0), S, (base.steps,), guess,
                                  args.rel_tol)
            state["bounds"].update({bkey(L, v0, base.d, S, t): r for t, r in rec.items()})
            r = rec[T]
            save(f"L={L} v0={v0:<6g} T={base.steps}: mu* = {fmt_ci(r)}  ({r['wall']:.1f} s)")
    # 2. layer change (cheap)
    for L in cfg["depths"]:
        todo = [v0 for v0 in cfg["v0s"] if (L, v0) not in state["lc"]]
        for v0 in todo:
            state["lc"][(L, v0)] = layer_changes(
                base.replace(depth=L, v0=v0, mu_norm=cfg["lc_mu"]), S)
        if todo:
            save(f"L={L}: layer change at ||mu|| = {cfg['lc_mu']:g} for {len(todo)} v0")
    # 3. phase diagrams
    x, y = parse_axis(cfg["phase_x"]), parse_axis(cfg["phase_y"])
    for L in cfg["depths"]:
        if L not in state["phase"]:
            state["phase"][L] = phase_rows(base.replace(depth=L), x, y, cfg["phase_seeds"])
            save(f"L={L}: phase diagram {len(x[1])} x {len(y[1])} x {cfg['phase_seeds']} seeds")
    # 4. d scaling (walk up in d, extrapolating the last local slope); then the
    #    small-step repeat for D_SMALL_V0S (same flow time)
    small = base.replace(**cfg["small_step"])
    plan = [(base, v0) for v0 in cfg["d_v0s"]] + [(small, v0) for v0 in cfg["d_small_v0s"]]
    for pb, v0 in plan:
        for L in cfg["depths"]:
            hist = []
            for d in cfg["d_grid"]:
                k = bkey(L, v0, d, S, pb.steps)
                if k not in state["bounds"]:
                    guess = None
                    if len(hist) >= 2:
                        (x1, y1), (x2, y2) = hist[-2:]
                        guess = y2 * (d / x2) ** (np.log(y2 / y1) / np.log(x2 / x1))
                    elif hist:
                        guess = hist[-1][1]
                    else:
                        guess = star_of(L, v0, d, S, T)
                    rec = boundary_search(pb.replace(depth=L, v0=v0, d=d), S,
                                          (pb.steps,), guess, args.rel_tol)
                    state["bounds"][k] = rec[float(pb.steps)]
                    save(f"L={L} v0={v0:<6g} d={d:<8d} eta={pb.eta:g} T={pb.steps}: mu* = "
                         f"{fmt_ci(state['bounds'][k])}  ({state['bounds'][k]['wall']:.1f} s)")
                if np.isfinite(state["bounds"][k]["mu_star"]):
                    hist.append((d, state["bounds"][k]["mu_star"]))
    # 1b. mu* late in training (t = LATE; expensive: last), depth ascending
    for L in cfg["depths"]:
        for v0 in cfg["inf_v0s"]:
            if bkey(L, v0, base.d, Si, LATE) in state["bounds"]:
                continue
            guess = star_of(L, v0, base.d, S, T)
            rec = boundary_search(base.replace(depth=L, v0=v0), Si, (base.steps, LATE),
                                  guess, args.rel_tol)
            for t, r in rec.items():  # never replace the T-sweep record (same seeds)
                state["bounds"].setdefault(bkey(L, v0, base.d, Si, t), r)
            state["bounds"][bkey(L, v0, base.d, Si, LATE)] = rec[LATE]
            r = rec[LATE]
            save(f"L={L} v0={v0:<6g} t={LATE:g} ({Si} seeds): mu* = {fmt_ci(r)}  "
                 f"({r['wall']:.0f} s)")

    # keep only what this plan asks for (e.g. drop searches with another seed count)
    keep = {bkey(L, v0, base.d, S, T) for L in cfg["depths"] for v0 in cfg["v0s"]}
    keep |= {bkey(L, v0, d, S, pb.steps) for pb, v0 in plan for L in cfg["depths"]
             for d in cfg["d_grid"]}
    keep |= {bkey(L, v0, base.d, Si, t) for L in cfg["depths"] for v0 in cfg["inf_v0s"]
             for t in (T, LATE)}
    state["bounds"] = {k: r for k, r in state["bounds"].items() if k in keep}
    fits = d_fits(state, cfg["depths"], cfg["d_v0s"], cfg["d_grid"], S, T)
    fits.update(d_fits(state, cfg["depths"], cfg["d_small_v0s"], cfg["d_grid"], S,
                       float(small.steps)))
    write_netcdf(to_dataset(state, settings, base, fits), path)
    paths = [plot_mu_star_vs_v0(state, cfg, base, os.path.join(out, "mu_star_vs_v0.png")),
             plot_phase(state, cfg, base, os.path.join(out, "phase_L1_L2_L3.png")),
             plot_layer_change(state, cfg, base, os.path.join(out, "layer_change_vs_v0.png")),
             plot_mu_star_vs_d(state, cfg, fits, base, os.path.join(out, "mu_star_vs_d.png"))]
    print(format_tables(state, cfg, fits, base))
    print(f"wrote {path}, " + ", ".join(os.path.basename(p) for p in paths) +
          f" ({time.perf_counter() - t0:.0f} s)")


if __name__ == "__main__":
    main()
