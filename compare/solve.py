"""`dyn solve`: phase boundary, its scaling in d and n, and a full-network check.

For each v0: (1) mu* at the given parameters (dynamics.boundary); (2) mu*
over a d grid and an n grid, with least-squares exponents of
mu* ~ d^a n^b; (3) verification: reduced level vs the weight-space network
(sampler data, same realisations) at mu*/2, mu*, 2 mu*.  Everything goes into
one Dataset (dim v0), written atomically with the figures.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

import numpy as np
import xarray as xr

from dynamics.batch import seed_list
from dynamics.boundary import Boundary, fit_exponents
from dynamics.data import check_sampler
from dynamics.params import D_GRID, N_GRID, SPEC_OF, TAU, TRANSITION_TAUS, Params, \
    ParamError, check_count, check_int_values, check_threshold
from dynamics.spec import RunSpec, check_spec

FAMILY_FIELDS = ("activation", "noise_model", "signal", "train_v")  # shown when not default

from .boundaries import find_boundaries_at, find_boundary
from .dataset import global_attrs, times_text, write_netcdf

# Exponents (a, b) of mu* ~ d^a n^b quoted in docs/theory.md#mechanisms-and-laws
def theory_exponents() -> dict:
    """label -> exponents (a, b) of mu* ~ d^a n^b for each law of docs/theory.md#mechanisms-and-laws, read
    off the sympy expressions (``dynamics.theory.symbolic.law_exponents``, kept
    on disk by ``dynamics.theory.lawcache``)."""
    from dynamics.theory.lawcache import law_exponents

    return {f"{e['label']}: a={e['exponents']['d']:g}, b={e['exponents']['n']:g}":
            (e["exponents"]["d"], e["exponents"]["n"]) for e in law_exponents().values()}

VERIFY_LABELS = ("mu*/2", "mu*", "2mu*")


@dataclass
class V0Result:
    """Everything `solve` finds for one v0."""

    v0: float
    main: Boundary
    d_grid: list = field(default_factory=list)   # Boundary per d
    n_grid: list = field(default_factory=list)   # Boundary per n
    fit: dict = field(default_factory=dict)
    by_time: list = field(default_factory=list)  # Boundary per --times entry
    verify: xr.Dataset | None = None
    example: tuple | None = None                 # (reduced, full) at mu*
    wall_time: float = 0.0


def _grid(spec: RunSpec, values, key, tau, main, progress):
    """Boundaries along one axis, continuing each guess from its neighbour."""
    values = list(values)
    if not values:
        return []
    params = spec.params
    out = [None] * len(values)
    start = getattr(params, key)
    # walk outwards from the point nearest the main parameters
    centre = int(np.argmin([abs(np.log(v / start)) for v in values]))
    order = list(range(centre, len(values))) + list(range(centre - 1, -1, -1))
    guess = {centre: main.star()}
    for k in order:
        p = params.replace(**{key: int(values[k])})
        if p == main.params:
            out[k] = main
        else:
            g = guess.get(k, main.star())
            out[k] = find_boundary(spec.replace(params=p), taus=(tau,), guess=g)
        nxt = k + 1 if k >= centre else k - 1
        if np.isfinite(out[k].star()):
            guess[nxt] = out[k].star()
        if progress:
            progress(1)
    return out


def check_grid(params: Params, option: str, field: str, values, sampler: str):
    """Every grid value must make valid Params for the sampler (errors name the grid)."""
    for x in values:
        try:
            check_sampler(params.replace(**{field: int(x)}), sampler)
        except ParamError as exc:
            if exc.param not in ("n", "d"):
                raise  # not about this grid (e.g. noise vs sampler)
            raise ParamError(option, int(x), exc.allowed) from None
    ints = [int(x) for x in values]
    if len(ints) == 1:
        raise ParamError(option, str(ints[0]), "a scaling fit needs at least 2 values "
                         "('none' to skip it)")
    if any(b <= a for a, b in zip(ints, ints[1:])):
        raise ParamError(option, ",".join(map(str, ints)), "strictly ascending values "
                         "(the scaling fit needs distinct points)")


def solve(spec: RunSpec, v0s=None, *, tau=TAU, d_grid=D_GRID, n_grid=N_GRID, verify=True,
          verify_seeds=3, progress=None) -> list[V0Result]:
    """Run the whole `dyn solve` job for the runs ``spec`` (``dynamics.RunSpec``:
    params, level, sampler, seeds); ``progress(k)`` is called per unit of work.

    ``spec.times`` (GD steps, inf = the limit; with ``spec.integrator``): mu*
    at each time from the same runs (``by_time``); the main boundary, the
    scaling grids and the verification stay at params.steps with GD.
    """
    params, level, times = check_spec(spec).params, spec.level, spec.times
    if v0s is not None:
        if isinstance(v0s, (str, bytes)) or not hasattr(v0s, "__iter__"):
            raise ParamError("v0s", v0s, "must be a list of v0 values (e.g. [0.01, 0.1])")
        v0s = list(v0s)
        if not v0s:
            raise ParamError("v0s", v0s, "at least one v0 (None: params.v0)")
    d_grid = check_int_values("d_grid", d_grid)  # 2000.5 refused, never truncated
    n_grid = check_int_values("n_grid", n_grid)
    v0s = [params.v0] if v0s is None else [params.replace(v0=v).v0 for v in v0s]
    repeated = sorted({v for v in v0s if v0s.count(v) > 1})
    if repeated:
        raise ParamError("v0", ", ".join(f"{v:g}" for v in repeated), "given more than once "
                         "(each v0 is solved once; drop the repeats)")
    check_grid(params, "d_grid", "d", d_grid, spec.run_sampler)
    check_grid(params, "n_grid", "n", n_grid, spec.run_sampler)
    tau = check_threshold(tau, n_test=params.n_test)
    if times is not None and 0 in times:
        raise ParamError("times", ",".join(f"{float(t):g}" for t in times),
                         "times >= 1 (at t = 0 the network is its initialisation: "
                         "no boundary)")
    verify_seeds = check_count("verify_seeds", verify_seeds)
    kind = params.optimizer_spec[0]
    if verify and level == "full" and kind in ("adam", "sign"):  # before any run
        raise ParamError("optimizer", params.optimizer,
                         f"{kind} acts per weight coordinate, so no reduced level describes "
                         f"it and the check of the reduction against the network (on by "
                         f"default) cannot run; add --no-verify (verify=False)")
    results = []
    for v0 in v0s:
        t0 = time.perf_counter()
        p = params.replace(v0=v0)
        at_v0 = spec.replace(params=p)
        main = find_boundary(at_v0, taus=(tau,) + TRANSITION_TAUS)
        if progress:
            progress(1)
        res = V0Result(v0=p.v0, main=main)
        if times is not None:
            res.by_time = find_boundaries_at(at_v0, taus=(tau,) + TRANSITION_TAUS)
        if np.isfinite(main.star()):
            res.d_grid = _grid(at_v0, d_grid, "d", tau, main, progress)
            res.n_grid = _grid(at_v0, n_grid, "n", tau, main, progress)
            grid = res.d_grid + res.n_grid
            if grid:
                res.fit = fit_exponents([b.params.d for b in grid], [b.params.n for b in grid],
                                        [b.star() for b in grid])
            if verify:
                from .verify import verify_points
                star = main.star()
                res.verify, res.example = verify_points(
                    p, "exact" if level == "full" else level, [star / 2, star, 2 * star],
                    VERIFY_LABELS,
                    seed_list(p, verify_seeds), progress=progress)
        elif progress:
            progress(len(d_grid) + len(n_grid) + (3 * verify_seeds if verify else 0))
        res.wall_time = time.perf_counter() - t0
        results.append(res)
    return results


def work_units(n_v0, d_grid=D_GRID, n_grid=N_GRID, verify=True, verify_seeds=3):
    """Number of progress units `solve` reports."""
    return n_v0 * (1 + len(d_grid) + len(n_grid) + (3 * verify_seeds if verify else 0))


def _boundary_arrays(bounds, tau):
    star = [b.star(tau) for b in bounds]
    lo = [b.ci[tau][0] for b in bounds]
    hi = [b.ci[tau][1] for b in bounds]
    fitted = [int(b.fitted) for b in bounds]
    return star, lo, hi, fitted


def to_dataset(results: list[V0Result], spec: RunSpec, tau, d_grid=D_GRID,
               n_grid=N_GRID) -> xr.Dataset:
    """All results of `solve` for ``spec`` as one Dataset with a v0
    dimension; the attributes record the integrator and the times of
    ``by_time``."""
    params, level, sampler, n_seeds = spec.params, spec.level, spec.sampler, spec.n_seeds
    integrator, times = spec.integrator, spec.times
    taus = list(results[0].main.taus)
    V = len(results)
    n_eval = max(r.main.curve_mu.size for r in results)
    curve_mu = np.full((V, n_eval), np.nan)
    curve_test = np.full((V, n_seeds, n_eval), np.nan)
    curve_loss = np.full((V, n_seeds, n_eval), np.nan)
    nan_grid = lambda k: np.full((V, k), np.nan)  # noqa: E731
    arrs = {k: nan_grid(len(d_grid)) for k in ("mu_star_d", "mu_star_d_lo", "mu_star_d_hi", "fitted_d")}
    arrs.update({k: nan_grid(len(n_grid)) for k in ("mu_star_n", "mu_star_n_lo", "mu_star_n_hi", "fitted_n")})
    fit_keys = ("a", "b", "a_lo", "a_hi", "b_lo", "b_hi", "rms")
    fits = {k: np.full(V, np.nan) for k in fit_keys}
    for v, r in enumerate(results):
        M = r.main.curve_mu.size
        curve_mu[v, :M] = r.main.curve_mu
        curve_test[v, :, :M] = r.main.curve_test
        curve_loss[v, :, :M] = r.main.curve_loss
        for axis, bounds in (("d", r.d_grid), ("n", r.n_grid)):
            if bounds:
                star, lo, hi, fitted = _boundary_arrays(bounds, tau)
                arrs[f"mu_star_{axis}"][v] = star
                arrs[f"mu_star_{axis}_lo"][v] = lo
                arrs[f"mu_star_{axis}_hi"][v] = hi
                arrs[f"fitted_{axis}"][v] = fitted
        if r.fit:
            f = r.fit
            vals = (f["a"], f["b"], *f["a_ci"], *f["b_ci"], f["rms"])
            for k, val in zip(fit_keys, vals):
                fits[k][v] = val
    data = {
        "mu_star": (("v0", "tau"), [[r.main.mu_star[t] for t in taus] for r in results]),
        "mu_star_lo": (("v0", "tau"), [[r.main.ci[t][0] for t in taus] for r in results]),
        "mu_star_hi": (("v0", "tau"), [[r.main.ci[t][1] for t in taus] for r in results]),
        "loss_at_mu_star": (("v0",), [r.main.loss_at_star for r in results]),
        "train_error_at_mu_star": (("v0",), [r.main.train_error_at_star for r in results]),
        "fitted": (("v0",), [int(r.main.fitted) for r in results]),
        "curve_mu": (("v0", "eval"), curve_mu),
        "curve_test_error": (("v0", "seed", "eval"), curve_test),
        "curve_loss": (("v0", "seed", "eval"), curve_loss),
        "wall_time": (("v0",), [r.wall_time for r in results]),
    }
    for k, val in arrs.items():
        data[k] = (("v0", "d_grid" if k.endswith(("_d", "_d_lo", "_d_hi")) else "n_grid"), val)
    for k, val in fits.items():
        data[f"exponent_{k}" if k != "rms" else "fit_rms_log"] = (("v0",), val)
    ds = xr.Dataset(data, coords={"v0": [r.v0 for r in results], "tau": taus,
                                  "seed": spec.seed_values,
                                  "d_grid": list(d_grid), "n_grid": list(n_grid)})
    if results[0].by_time:
        steps = [b.steps for b in results[0].by_time]
        for name, get in (("mu_star_t", lambda b, t: b.mu_star[t]),
                          ("mu_star_t_lo", lambda b, t: b.ci[t][0]),
                          ("mu_star_t_hi", lambda b, t: b.ci[t][1])):
            ds[name] = (("v0", "steps", "tau"),
                        [[[get(b, t) for t in taus] for b in r.by_time] for r in results])
        ds["n_diverged_t"] = (("v0", "steps"), [[b.n_diverged for b in r.by_time]
                                                for r in results])
        if np.isinf(steps[-1]):  # the certified limit (dynamics.limit): per run of its curve
            from dynamics.limit import LIMIT_FIELDS, LIMIT_META
            lims = [r.by_time[-1] for r in results]
            E = max(b.curve_mu.size for b in lims)
            ds["limit_mu"] = (("v0", "limit_eval"), np.full((len(lims), E), np.nan))
            for v, b in enumerate(lims):
                ds["limit_mu"].values[v, :b.curve_mu.size] = b.curve_mu
            ds["limit_mu"].attrs.update(long_name="||mu|| of each run of the limit's "
                                        "boundary search")
            for k in LIMIT_FIELDS:
                arr = np.full((len(lims), len(ds.seed), E), np.nan)
                for v, b in enumerate(lims):
                    arr[v, :, :b.curve_mu.size] = b.limit[k]
                ds[f"limit_{k}"] = (("v0", "seed", "limit_eval"), arr)
                ds[f"limit_{k}"].attrs.update(long_name=LIMIT_META[k][0], units=LIMIT_META[k][1])
            ds["limit_certified_fraction"] = (("v0",), [b.limit_converged for b in lims])
            ds["limit_certified_fraction"].attrs.update(
                long_name="fraction of the limit's programs certified stationary", units="1")
        ds = ds.assign_coords(steps=steps)
        ds["steps"].attrs.update(long_name="training time in GD steps (inf: the limit)")
        ds["mu_star_t"].attrs.update(long_name="critical ||mu|| at each training time")
    ver = [r.verify for r in results]
    if all(v is not None for v in ver):
        ds = ds.merge(xr.concat(ver, dim="v0").assign_coords(v0=ds.v0))
    # attributes record what was run: mu_norm is searched, not set; v0 is the
    # run's value, or a coordinate when several were given
    ran = params.replace(v0=results[0].v0)
    swept = ("mu_norm",) if len(results) == 1 else ("mu_norm", "v0")
    # the main boundary runs GD to --steps; --times add the boundary per time
    run = {"times": times_text(times)} if times is not None else {}
    ds.attrs = global_attrs(ran, swept=swept, title="dyn solve: phase boundary ||mu||*",
                            level=level, sampler=sampler, n_seeds=n_seeds,
                            threshold=tau, verify_sampler="data", integrator=integrator,
                            **run)
    ds["mu_star"].attrs.update(long_name="critical ||mu|| where mean test error = tau")
    return ds


def write_outputs(results, ds, out_dir, d_grid=D_GRID, n_grid=N_GRID) -> list[str]:
    """solve.nc and PNG figures into ``out_dir``; returns the written paths."""
    from .plots import plot_error_curve, plot_mu_star_vs_time, plot_overlay, plot_rel_error, \
        plot_scaling

    os.makedirs(out_dir, exist_ok=True)
    paths = [write_netcdf(ds, os.path.join(out_dir, "solve.nc"))]
    if "mu_star_t" in ds:
        paths.append(plot_mu_star_vs_time(ds, os.path.join(out_dir, "mu_star_vs_time.png")))
    tau = float(ds.attrs["threshold"])
    for v, r in enumerate(results):
        tag = f"v0={r.v0:g}"
        p = r.main.params
        paths.append(plot_error_curve(
            r.main.curve_mu, r.main.curve_test, tau, r.main.star(),
            os.path.join(out_dir, f"error_curve_{tag}.png"),
            f"test error vs ||mu|| ({r.main.level}, {r.main.sampler}, {len(r.main.seeds)} seeds)\n"
            f"n={p.n}, d={p.d}, m={p.m}, v0={p.v0:g}, eta={p.eta:g}, T={p.steps}"))
        if r.example is not None:
            red, full = r.example
            paths.append(plot_overlay(red, full, os.path.join(out_dir, f"verify_overlay_{tag}.png")))
            paths.append(plot_rel_error(red, full, os.path.join(out_dir, f"verify_relerr_{tag}.png")))
        if not r.fit:
            continue  # no scaling grid
        theories = theory_exponents()
        for axis, grid, bounds, k in (("d", d_grid, r.d_grid, 0), ("n", n_grid, r.n_grid, 1)):
            if len(bounds) < 2:
                continue
            star, lo, hi, _ = _boundary_arrays(bounds, tau)
            x = np.array(grid, float)
            ok = np.isfinite(star)
            slope, icpt = (np.polyfit(np.log(x[ok]), np.log(np.array(star)[ok]), 1)
                           if ok.sum() >= 2 else (np.nan, np.nan))
            fixed = f"n={p.n}" if axis == "d" else f"d={p.d}"
            paths.append(plot_scaling(
                x, star, (lo, hi), (slope, icpt),
                {f"{lab.split(':')[0]}: slope {ab[k]:g}": ab[k] for lab, ab in theories.items()},
                xlabel=(f"input dimension d ({fixed})" if axis == "d"
                        else f"training samples n ({fixed})"),
                path=os.path.join(out_dir, f"mu_star_vs_{axis}_{tag}.png"),
                title=(f"||mu||* vs {axis} at v0={r.v0:g} (tau={tau:g}, {r.main.level}, "
                       f"{r.main.sampler}, {len(r.main.seeds)} seeds, T={p.steps})")))
    return paths


# names of the figures write_outputs makes (one per v0 for most)
SOLVE_FIGURES = ("mu_star_vs_time.png", "error_curve_v0=*.png", "verify_overlay_v0=*.png",
                 "verify_relerr_v0=*.png", "mu_star_vs_d_v0=*.png", "mu_star_vs_n_v0=*.png")


def remove_stale_figures(out_dir, written) -> list[str]:
    """Remove dyn solve's figures in ``out_dir`` that this run did not write
    (an earlier run's, e.g. another v0): they would sit beside the new
    solve.nc as if they were its results.  Returns the removed paths."""
    import glob
    keep = {os.path.realpath(p) for p in written}
    removed = []
    for pattern in SOLVE_FIGURES:
        for path in sorted(glob.glob(os.path.join(glob.escape(os.fspath(out_dir)), pattern))):
            if os.path.realpath(path) not in keep and os.path.isfile(path) \
                    and not os.path.islink(path):
                os.unlink(path)
                removed.append(path)
    return removed


def format_summary(results: list[V0Result], tau: float) -> str:
    """The at-a-glance table printed by `dyn solve`."""
    lines = []
    if results and results[0].by_time:
        lines.append(f"||mu||* (test err = {tau:g}) [95% CI] per training time (GD steps; "
                     f"times above 1e6 reached by the normalised flow; inf = the certified "
                     f"limit of the max-margin program, ties 1/2):")
        head = "".join(f"{('T=' + format(b.steps, 'g')):>24}" for b in results[0].by_time)
        lines.append(f"  {'v0':>8}{head}")
        for r in results:
            cells = "".join(f"{b.star():>8.3g} [{b.ci[b.taus[0]][0]:.3g}, "
                            f"{b.ci[b.taus[0]][1]:.3g}]".rjust(24) for b in r.by_time)
            lines.append(f"  {r.v0:>8g}{cells}")
        for r in results:
            for b in r.by_time:
                for note in b.notes:
                    lines.append(f"  note (v0={r.v0:g}, T={b.steps:g}): {note}")
    for r in results:
        b = r.main
        p = b.params
        lines.append(f"v0 = {r.v0:g}   ({b.level}/{b.sampler}, {len(b.seeds)} seeds, n={p.n}, "
                     f"d={p.d}, m={p.m}, c={p.c:g}, eta={p.eta:g}, T={p.steps}, "
                     f"flip={p.flip:g}, noise={p.noise}, optimizer={p.optimizer}"
                     + "".join(f", {k}={getattr(p, k)}" for k in FAMILY_FIELDS
                               if getattr(p, k) != SPEC_OF[k].default)
                     + f"; {r.wall_time:.1f} s)")
        star, (lo, hi) = b.star(), b.ci[b.taus[0]]
        lines.append(f"  ||mu||* (test err = {tau:g})   {star:9.4g}   95% CI [{lo:.4g}, {hi:.4g}]")
        for t in b.taus[1:]:
            lines.append(f"  crossing at {t:<4g}              {b.mu_star[t]:9.4g}")
        fit_s = "yes" if b.fitted else "NO (train error > 0)"
        lines.append(f"  train loss at ||mu||*        {b.loss_at_star:9.3g}   data fitted: {fit_s}")
        for note in b.notes:
            lines.append(f"  note: {note}")
        if r.fit and np.isfinite(r.fit["rms"]):
            f = r.fit
            lines.append(f"  exponents mu* ~ d^a n^b      a = {f['a']:+.3f} [{f['a_ci'][0]:+.3f}, "
                         f"{f['a_ci'][1]:+.3f}]   b = {f['b']:+.3f} [{f['b_ci'][0]:+.3f}, "
                         f"{f['b_ci'][1]:+.3f}]   (rms log resid {f['rms']:.3f})")
            lines.append("    theory (docs/theory.md#mechanisms-and-laws): " + "; ".join(theory_exponents()))
            grid_d = "  ".join(f"{x.params.d}:{x.star():.3g}" for x in r.d_grid)
            grid_n = "  ".join(f"{x.params.n}:{x.star():.3g}" for x in r.n_grid)
            lines.append(f"  mu* over d   {grid_d}")
            lines.append(f"  mu* over n   {grid_n}")
        if r.verify is not None:
            vds = r.verify
            lines.append(f"  verification vs full network (sampler data, seeds "
                         f"{', '.join(str(s) for s in vds.verify_seed.values)}):")
            lines.append(f"    {'point':<6} {'||mu||':>8} {'test err reduced':>17} {'full':>7} "
                         f"{'max|diff|':>9} {'max rel err':>12} {'act. agree':>10}")
            for pt in vds.point.values:
                row = vds.sel(point=pt)
                tr, tf = row.test_error_reduced.values, row.test_error_full.values
                lines.append(f"    {pt:<6} {float(row.verify_mu):8.4g} {tr.mean():17.4f} {tf.mean():7.4f} "
                             f"{np.max(np.abs(tr - tf)):9.4f} {float(row.max_rel_err.max()):12.2e} "
                             f"{float(row.activation_agreement_min.min()):10.4f}")
    return "\n".join(lines)
