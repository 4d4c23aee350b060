"""Laws of docs/theory.md#mechanisms-and-laws against boundaries measured by the solver, and the text tables
of the ``theory`` command.

Data path: ``REGIMES`` x the d/n grids of ``dynamics.params`` -> mu* per point
(``compare.boundaries.find_boundary``) -> least-squares constant C of each law
of ``dynamics.theory.symbolic.laws`` and a free power law -> ``format_fits``.
``format_report`` renders ``dynamics.theory.measure.summarize``.
"""
from __future__ import annotations

import math

import numpy as np

from dynamics.boundary import fit_power_law
from dynamics.params import D_GRID, N_GRID, TAU, Params
from dynamics.spec import RunSpec
from dynamics.theory.symbolic import FIT_LAWS, LAW_VARS, law_funcs, laws

from .boundaries import find_boundary

# regime -> (v0 values of the v0 scan, v0 of the d and n scans)
REGIMES = {"small v0": ((1e-3, 3e-3, 1e-2), 1e-3), "large v0": ((0.3, 1.0, 3.0), 1.0)}


# ----------------------------------------------------------------------------
# fits of the laws
# ----------------------------------------------------------------------------
def fit_laws(table) -> dict:
    """Least-squares fit of log C for each law: log C = mean(log mu* - log g),
    g = law at C = 1.  ``table[name]`` gives arrays for v0, n, d, m, sigma_p,
    mu_star (dict, structured array, DataFrame).  Returns per law the fitted C
    and the residual RMS in log mu*, and 'best' (smallest RMS)."""
    cols = {k_: np.asarray(table[k_], float) for k_ in LAW_VARS + ("mu_star",)}
    ok = np.isfinite(cols["mu_star"]) & (cols["mu_star"] > 0)
    logmu = np.log(cols["mu_star"][ok])
    out = {}
    for name in FIT_LAWS:
        g = law_funcs()[name]
        logg = np.log(np.broadcast_to(g(*(cols[k_][ok] for k_ in LAW_VARS)), logmu.shape))
        logC = float(np.mean(logmu - logg))
        res = logmu - logg - logC
        out[name] = dict(C=math.exp(logC), rms=float(np.sqrt(np.mean(res**2))),
                         formula=str(laws()[name]))
    out["best"] = min(FIT_LAWS, key=lambda k_: out[k_]["rms"])
    return out


def fit_free_law(table) -> dict:
    """Free power law log mu* = log C + sum_x e_x log x over the variables that vary."""
    f = fit_power_law({k_: table[k_] for k_ in LAW_VARS}, table["mu_star"])
    return dict(C=float(np.exp(f["const"])), exponents=f["exponents"], rms=f["rms"])


# ----------------------------------------------------------------------------
# boundaries measured by the solver, fitted per regime
# ----------------------------------------------------------------------------
def _table_points(params: Params, v0s, grid_v0, d_grid, n_grid) -> list[Params]:
    """``params`` at each v0, then over the d and n grids at ``grid_v0``
    (grid values equal to params.d / params.n are not repeated)."""
    points = [params.replace(v0=v) for v in v0s]
    base = params.replace(v0=grid_v0)
    points += [base.replace(d=int(x)) for x in d_grid if x != base.d]
    points += [base.replace(n=int(x)) for x in n_grid if x != base.n]
    return points


def boundary_table(spec: RunSpec, v0s, grid_v0, d_grid=D_GRID, n_grid=N_GRID,
                   progress=None) -> dict:
    """mu* measured by ``find_boundary`` for the runs ``spec`` at each v0
    (other parameters as in spec.params) and over the d and n grids at
    ``grid_v0``: a table for ``fit_laws``."""
    rows, guess = [], None
    for p in _table_points(spec.params, v0s, grid_v0, d_grid, n_grid):
        b = find_boundary(spec.replace(params=p), taus=(TAU,), guess=guess)
        guess = b.star() if np.isfinite(b.star()) else None
        rows.append((p.v0, p.n, p.d, p.m, p.sigma_p, b.star()))
        if progress:
            progress(1)
    cols = np.array(rows, float).T
    return dict(zip(LAW_VARS + ("mu_star",), cols))


def fit_regimes(spec: RunSpec, progress=None) -> dict:
    """For each regime of ``REGIMES``: the measured table (runs ``spec``), the
    fit of every law of ``laws()`` (constant C, rms of log mu*) and the free
    power law."""
    out = {}
    for name, (v0s, grid_v0) in REGIMES.items():
        table = boundary_table(spec, v0s, grid_v0, progress=progress)
        out[name] = dict(table=table, laws=fit_laws(table), free=fit_free_law(table))
    return out


def regime_points(params: Params) -> int:
    """Number of solver calls ``fit_regimes(params, ...)`` makes (for progress bars)."""
    return sum(len(_table_points(params, v0s, grid_v0, D_GRID, N_GRID))
               for v0s, grid_v0 in REGIMES.values())


# ----------------------------------------------------------------------------
# text tables
# ----------------------------------------------------------------------------
def format_fits(fits: dict) -> str:
    """Plain-text table: per regime, each law's C and rms, the best law, free exponents."""
    L = []
    for regime, res in fits.items():
        t = res["table"]
        v0s = ", ".join(f"{x:g}" for x in sorted(set(t["v0"])))
        L.append(f"{regime}: {len(t['mu_star'])} boundaries, v0 in {{{v0s}}}, "
                 f"d in [{t['d'].min():g}, {t['d'].max():g}], "
                 f"n in [{t['n'].min():g}, {t['n'].max():g}]")
        for law in FIT_LAWS:
            f = res["laws"][law]
            mark = "  <- best" if law == res["laws"]["best"] else ""
            L.append(f"  {law:16s} C = {f['C']:9.4g}   rms(log mu*) = {f['rms']:.3f}   "
                     f"{f['formula']}{mark}")
        fr = res["free"]
        L.append("  free power law: mu* ~ " + " ".join(
            f"{k_}^{e:+.3f}" for k_, e in fr["exponents"].items()) + f"   rms = {fr['rms']:.3f}")
    return "\n".join(L)


def format_report(rep: dict) -> str:
    """Plain-text table of a ``dynamics.theory.measure.summarize`` dict."""
    p = rep["params"]
    g, s1 = rep["growth"], rep["stage1"]
    L = [f"theory vs measurement  (level={rep['level']}, sampler={rep['sampler']})",
         "  " + ", ".join(f"{k_}={p[k_]}" for k_ in ("n", "d", "m", "sigma_0", "sigma_p",
                                                      "mu_norm", "v0", "eta", "c", "steps", "seed")),
         f"{'quantity':44s} {'predicted':>12s} {'measured':>12s}",
         f"{'stage-1 end (max|l+1/2|>' + format(s1['tol'], 'g') + ', |f|>' + format(s1['f_threshold'], '.3g') + ')':44s}"
         f" {s1['predicted']:>12d} {s1['measured']:>12d}",
         f"{'growth /step in window ' + str(g['window']) + ':':44s}",
         f"{'  noise, same-class block (paper)':44s} {g['noise_same_predicted']:>12.4g} {g['noise_same_measured']:>12.4g}",
         f"{'  noise, all active at t0 (signed)':44s} {g['noise_all_predicted']:>12.4g} {g['noise_all_measured']:>12.4g}",
         f"{'  noise, slope of log v2':44s} {g['noise_same_predicted']:>12.4g} {g['noise_log_v2_measured']:>12.4g}",
         f"{'  signal (a, v1)':44s} {g['signal_predicted']:>12.4g} {g['signal_measured']:>12.4g}"]
    for label, a in rep["at"].items():
        nr, npd, ag = a["noise_ratio"], a["noise_ratio_pred"], a["noise_ratio_over_pred"]
        L += [f"-- at {label} (t={a['step']}), medians over neurons [q10, q90] --",
              f"{'z/v2 (active same-class, v2>0)':44s} {npd['median']:>12.4g} {nr['median']:>12.4g}",
              f"{'  ratio/pred':44s} {1.0:>12.4g} {ag['median']:>12.4g}  [{ag['q10']:.3g}, {ag['q90']:.3g}] n={ag['count']}",
              f"{'j<w,mu>/v1':44s} {a['signal_ratio_pred']:>12.4g} {a['signal_ratio']['median']:>12.4g}",
              f"{'||w||/||v||':44s} {'':>12s} {a['wv_norm_ratio']['median']:>12.4g}",
              f"{'||v-v0||/(sqrt2 v0)':44s} {'':>12s} {a['v_rel_change']['median']:>12.4g}  [{a['v_rel_change']['q10']:.3g}, {a['v_rel_change']['q90']:.3g}]",
              f"{'neurons with v2 <= 0':44s} {'':>12s} {a['v2_negative']:>12d}"]
    L.append(f"final loss {rep['loss_T']:.4g}, clean test error {rep['test_error']:.4g}")
    return "\n".join(L)


def format_layers(rep: dict) -> str:
    """Plain-text table of ``dynamics.theory.measure.layer_summary``."""
    p = rep["params"]
    L = [f"per-layer mechanisms  (level={rep['level']}, sampler={rep['sampler']}, "
         f"depth={p['depth']}, t={rep['step']})",
         "  " + ", ".join(f"{k}={p[k]}" for k in ("n", "d", "m", "mu_norm", "v0", "eta", "seed")),
         f"{'layer':8s} {'||theta_l(T)-theta_l(0)||/||theta_l(0)||':>42s}"]
    L += [f"{b:8s} {c:>42.4g}" for b, c in zip(rep["blocks"], rep["change"])]
    L.append(f"{'hidden':8s} {'median |balance(0)|':>22s} {'max |balance(T)-balance(0)|':>30s}")
    L += [f"{k + 1:<8d} {b0:>22.4g} {dr:>30.4g}"
          for k, (b0, dr) in enumerate(zip(rep["balance0"], rep["balance_drift"]))]
    L.append(f"final loss {rep['loss_T']:.4g}, clean test error {rep['test_error']:.4g}")
    return "\n".join(L)


def format_limit_law(params, n_seeds: int, sampler: str = "wishart") -> str:
    """The idealised limit program (``dynamics.theory.limit_law``) against the
    measured mu* at t = inf (level exact) and at params.steps, as text."""
    import numpy as np

    from dynamics.theory.limit_law import idealised_exponents, idealised_limit, \
        idealised_mu_star

    from .boundaries import find_boundaries_at

    law = idealised_limit()
    pred = idealised_mu_star(params.n, params.d, params.sigma_p)
    at_T, at_inf = find_boundaries_at(RunSpec(params, "exact", sampler, n_seeds,
                                              times=[params.steps, np.inf]))
    ex = idealised_exponents()
    lines = ["the limit t = inf: idealised max-margin program (one filter per class, its "
             "noise unit active on its class, orthogonal noise):",
             f"  cost of a class: signal {law['signal_cost']}, memorise "
             f"{law['memorise_cost']};  OPT = sum_k {law['opt_class']}",
             f"  mu*(inf) = {law['mu_star_class']} = {law['mu_star']} (n_k = n/2): exponents "
             f"d^{ex['d']:g} n^{ex['n']:g} sigma_p^{ex['sigma_p']:g}, v0-independent",
             f"  predicted  mu*(inf) = {pred:.4g}   (n={params.n}, d={params.d}, "
             f"sigma_p={params.sigma_p:g})"]
    for b, lab in ((at_inf, "inf"), (at_T, f"T = {params.steps}")):
        lo, hi = b.ci[b.taus[0]]
        lines.append(f"  measured   mu*({lab}) = {b.star():.4g} [{lo:.4g}, {hi:.4g}]   "
                     f"(v0={params.v0:g}, {n_seeds} seeds, {sampler}"
                     + (", ties 1/2" if lab == "inf" else "")
                     + f"; ratio to prediction {b.star() / pred:.3f})")
    lines.append("  (the real limit memorises with several partial units and correlated "
                 "noise, so it sits below the idealised threshold; the idealised value is "
                 "its upper estimate)")
    return "\n".join(lines)
