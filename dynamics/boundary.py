"""Phase boundary ||mu||* (docs/theory.md#phase-boundary): the solver and the reduced evaluator.

For fixed parameters, mu* is where the seed-averaged clean test error crosses
a threshold tau along log ||mu||.  The solver ``find_boundaries`` knows
nothing about models: it takes an *evaluator*, a callable from ||mu|| values
(M,) to per-seed results with arrays (S, M, K) over S seeds and K checkpoint
times (``test_error``, ``loss``, ``train_error``, ``margin``; NaN where a run
diverged before that time) and ``status`` (S, M, 2) = (step, reason) or
(-1, 0); called as ``evaluate(mus, upto)`` it may stop after the first
``upto`` checkpoints (K = upto columns).  ``reduced_evaluator`` (here) runs
``batch.run_batch``;
``fullsim.batch.full_evaluator`` trains the weight-space network.

Common random numbers: seeds are params.seed + s, s = 0..S-1, and the
statistics of each seed are drawn once and reused for every ||mu|| (only
A = ||mu|| <w0, e_1> changes), so the mean error curve is a fixed function of
||mu||.  Algorithm, per checkpoint time: evaluate a coarse log grid, widen it
until every tau is bracketed, bisect in log ||mu|| on each bracket, and
interpolate linearly in log ||mu|| inside the final bracket.  All times share
the runs through one cache; the latest time is searched first with full runs,
and an earlier time's search runs new ||mu|| values only up to its own
checkpoint (a run's value at a checkpoint does not depend on how far it runs,
so every time's boundary is that of its single-time search).
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Callable

import numpy as np

from .batch import RESULTS, run_batch, stacked_stats
from .kernels import DIVERGENCE_REASONS
from .limit import LIMIT_FIELDS, LIMIT_STATUS
from .params import SAMPLERS, TAU, TRANSITION_TAUS, Params, check_choice, check_threshold
from .run import check_checkpoints, check_integrator, kernel_config
from .spec import RunSpec, check_spec

Evaluator = Callable[..., dict]  # evaluate(mus, upto=None): see the module docstring


def jobs_to_curve(res: dict, n_mu: int, n_seeds: int) -> dict:
    """Job-major results (Q = M*S, ...) -> evaluator layout (S, M, ...)."""
    return {k: np.swapaxes(v.reshape((n_mu, n_seeds) + v.shape[1:]), 0, 1)
            for k, v in res.items()}


def reduced_evaluator(params: Params, level: str, sampler: str, seeds,
                      checkpoints=None, stacked=None, integrator: str = "gd",
                      t_pattern: float | None = None) -> Evaluator:
    """Evaluator for a reduced level: the statistics of every seed are drawn
    once; each call runs all (||mu||, seed) jobs in one parallel kernel call
    (``t_pattern``: the pattern time of t = inf, ``limit_run.limit_batch``)."""
    check_choice("sampler", sampler, SAMPLERS)
    kernel_config(params, level)  # validate level, optimizer, integrator up front
    check_integrator(params, integrator)
    stacked = stacked_stats(params, sampler, seeds) if stacked is None else stacked
    run = RunSpec(params, level, sampler, len(seeds), integrator=integrator)
    return job_evaluator(
        lambda job_seed, job_mu, cp: run_batch(replace(run, times=cp), stacked, job_seed, job_mu,
                                               t_pattern=t_pattern),
        len(seeds), check_checkpoints(checkpoints, params.steps))


def job_evaluator(run_jobs, n_seeds: int, checkpoints: np.ndarray) -> Evaluator:
    """The evaluator contract on top of a job runner: ``evaluate(mus, upto)``
    runs every (||mu||, seed) pair as one batch, ``run_jobs(job_seed, job_mu,
    checkpoints[:upto])`` -> per-job RESULTS, and returns the curves (S, M, K)."""
    def evaluate(mus, upto=None):
        mus = np.asarray(mus, dtype=np.float64)
        res = run_jobs(np.tile(np.arange(n_seeds), mus.size), np.repeat(mus, n_seeds),
                       checkpoints[:upto])
        return jobs_to_curve(res, mus.size, n_seeds)
    return evaluate


class ErrorCurve:
    """Per-seed results at every evaluated ||mu|| (cached; CRN), arrays
    (S, M, K); runs that diverged before a checkpoint count as chance there
    (test error 0.5, train error 1, loss NaN) and are listed in ``diverged``."""

    def __init__(self, evaluate: Evaluator, n_seeds: int, n_times: int):
        self.evaluate_runs, self.n_seeds, self.n_times = evaluate, n_seeds, n_times
        self.diverged = []  # (||mu||, seed index, step, reason)
        self.mu = np.empty(0)
        self.data = {k: np.empty((n_seeds, 0, n_times)) for k in RESULTS}
        self.info = np.empty((n_seeds, 0, 4))  # see run_batch
        self.limit = np.empty((n_seeds, 0, len(LIMIT_FIELDS)))  # see limit_run.limit_batch

    def evaluate(self, mus, k: int = 0) -> np.ndarray:
        """Seed-mean test error at time index k for each ||mu|| (runs only new values)."""
        mus = np.atleast_1d(np.asarray(mus, dtype=np.float64))
        new = np.unique(mus[~np.isin(mus, self.mu)])
        if new.size:
            res = self.evaluate_runs(new, k + 1)
            bad = ~np.isfinite(res["test_error"])
            if bad.any():
                res["test_error"][bad] = 0.5
                res["train_error"][bad] = 1.0
                res["loss"][bad] = np.nan
                for s, q in zip(*np.nonzero(res["status"][..., 0] >= 0)):
                    self.diverged.append((float(new[q]), int(s), *map(int, res["status"][s, q])))
            self.mu = np.concatenate([self.mu, new])
            order = np.argsort(self.mu)
            self.mu = self.mu[order]
            for name in RESULTS:
                self.data[name] = np.concatenate([self.data[name], res[name]], axis=1)[:, order]
            info = res.get("info", np.full(res["status"].shape[:2] + (4,), -1.0))
            self.info = np.concatenate([self.info, info], axis=1)[:, order]
            lim = res.get("limit", np.full(res["status"].shape[:2] + (len(LIMIT_FIELDS),),
                                           np.nan))
            self.limit = np.concatenate([self.limit, lim], axis=1)[:, order]
        idx = np.searchsorted(self.mu, mus)
        return self.data["test_error"][:, idx, k].mean(axis=0)


def crossing(mu, err, tau):
    """First ||mu|| where the (decreasing) error falls below tau.

    Linear interpolation in log ||mu|| between the bracketing points; NaN when
    the curve never crosses.  ``mu`` sorted ascending.
    """
    k = _last_crossing(err, tau)
    if k is None:
        return np.nan
    x0, x1 = np.log(mu[k]), np.log(mu[k + 1])
    e0, e1 = err[k], err[k + 1]
    frac = 0.5 if e0 == e1 else (e0 - tau) / (e0 - e1)
    return float(np.exp(x0 + frac * (x1 - x0)))


@dataclass
class Boundary:
    """mu* at one checkpoint time (see ``find_boundaries``)."""

    params: Params
    level: str
    sampler: str
    taus: tuple
    mu_star: dict            # tau -> mu*
    ci: dict                 # tau -> (lo, hi) bootstrap interval over seeds
    seeds: np.ndarray
    curve_mu: np.ndarray     # every evaluated ||mu||
    curve_test: np.ndarray   # (S, M) per-seed test error
    curve_loss: np.ndarray   # (S, M) per-seed training loss
    steps: float = np.nan    # checkpoint time (GD steps)
    loss_at_star: float = np.nan
    train_error_at_star: float = np.nan
    margin_at_star: float = np.nan
    n_diverged: int = 0
    limit_converged: float = np.nan   # t = inf: fraction of programs certified stationary
    limit: dict = field(default_factory=dict)  # t = inf: LIMIT_FIELDS -> (S, M) per run
    notes: list = field(default_factory=list)

    @property
    def fitted(self) -> bool:
        """True when every seed fits the training data at mu* (train error 0)."""
        return bool(self.train_error_at_star == 0.0)

    def star(self, tau=None) -> float:
        return self.mu_star[self.taus[0] if tau is None else tau]


def find_boundaries(evaluate: Evaluator, spec, *, taus=(TAU,) + TRANSITION_TAUS,
                    guess: float | None = None, mu_range=(0.1, 1000.0), rel_tol: float = 0.01,
                    n_boot: int = 200) -> list[Boundary]:
    """mu* for each tau (the first is the headline threshold) at each time of
    ``spec`` (``RunSpec``: its params, seeds and times; its level and the
    sampler it runs label the result).

    ``evaluate`` maps ||mu|| values to per-seed results at the K = len(times)
    checkpoint times (module docstring).  Each time gets the single-time search below on runs shared
    through a cache (so the boundary at a time does not depend on which other
    times were asked for).  guess: centre of the initial bracket grid (guess * 4^k,
    k = -1..1); else a coarse log grid over ``mu_range`` (9 points).  Brackets
    widen by 4x up to 6 times.  Bisection in log ||mu|| stops when the bracket
    ratio is below 1 + rel_tol.  Bootstrap: seeds resampled n_boot times,
    crossing of the resampled mean curve, 2.5-97.5% interval.
    """
    check_spec(spec, "spec")
    taus = tuple(check_threshold(t) for t in taus)
    times = list(spec.checkpoints)
    memo = _memoise(evaluate, len(times))
    rng = np.random.default_rng(np.random.SeedSequence([spec.params.seed, 2024]))
    n_seeds = spec.n_seeds
    boot_idx = rng.integers(0, n_seeds, size=(n_boot, n_seeds))
    out = {}
    for k in reversed(range(len(times))):  # latest first: its full runs serve the others
        curve = ErrorCurve(memo, n_seeds, len(times))
        _search(curve, k, taus, guess, mu_range, rel_tol)
        out[k] = _boundary_at(curve, k, times[k], taus, boot_idx, spec)
    return [out[k] for k in range(len(times))]


def _memoise(evaluate: Evaluator, n_times: int) -> Evaluator:
    """The evaluator with a cache per ||mu|| value, shared by all times.  A
    call with ``upto`` = k needs the first k checkpoints only: new values run
    only that far, cached values with fewer checkpoints run again; the
    returned arrays always have n_times columns (NaN beyond what was run).
    A run's values at a checkpoint do not depend on how far it runs."""
    cache = {}

    def cached(mus, upto=None):
        upto = n_times if upto is None else upto
        mus = np.asarray(mus, dtype=np.float64)
        new = [m for m in dict.fromkeys(mus.tolist())
               if m not in cache or cache[m]["upto"] < upto]
        if new:
            res = evaluate(np.array(new), upto)
            for q, mu in enumerate(new):
                entry = {"upto": res["test_error"].shape[2]}  # may have run further
                for k, val in res.items():
                    col = val[:, q:q + 1]
                    if k in RESULTS and col.shape[2] < n_times:
                        pad = np.full(col.shape[:2] + (n_times - col.shape[2],), np.nan)
                        col = np.concatenate([col, pad], axis=2)
                    entry[k] = col
                cache[mu] = entry
        return {k: np.concatenate([cache[m][k] for m in mus.tolist()], axis=1)
                for k in cache[mus[0]] if k != "upto"}
    return cached


def _search(curve, k, taus, guess, mu_range, rel_tol):
    """Bracket every tau on a coarse log grid (widened by 4x up to 6 times),
    then bisect each bracket in log ||mu|| to a ratio below 1 + rel_tol."""
    grid = (guess * 4.0 ** np.arange(-1, 2) if guess and np.isfinite(guess)
            else np.geomspace(mu_range[0], mu_range[1], 9))
    curve.evaluate(grid, k)
    for _ in range(6):
        err = curve.evaluate(curve.mu, k)
        lo_need = any(err[0] < tau for tau in taus)
        hi_need = any(err[-1] >= tau and _bracket(curve.mu, err, tau) is None for tau in taus)
        if not (lo_need or hi_need):
            break
        curve.evaluate(([curve.mu[0] / 4.0] if lo_need else []) +
                       ([curve.mu[-1] * 4.0] if hi_need else []), k)
    for tau in taus:
        brk = _bracket(curve.mu, curve.evaluate(curve.mu, k), tau)
        if brk is None:
            continue
        lo, hi = brk
        while hi / lo > 1.0 + rel_tol:
            mid = np.sqrt(lo * hi)
            if curve.evaluate(mid, k)[0] >= tau:
                lo = mid
            else:
                hi = mid


ZERO_OUTPUT_WHY = ("every output exactly 0 (loss log 2, errors 1/2 as ties): the outputs "
                   "underflowed (float32, a tiny --sigma-u or --v0 at depth); their test "
                   "error says nothing about the signal")


def zero_output_runs(loss, train_error, test_error) -> int:
    """How many runs have all outputs 0: loss = log 2 and training and test
    error 1/2 (every output a tie; an underflow, not a prediction).  Arrays
    of one shape, one entry per run (and time)."""
    return int(np.sum(np.isclose(loss, np.log(2.0), rtol=1e-6, atol=0.0)
                      & (np.asarray(train_error) == 0.5) & (np.asarray(test_error) == 0.5)))


def _boundary_at(curve, k, time, taus, boot_idx, spec) -> Boundary:
    """Crossings, bootstrap intervals and fit diagnostics at time index k
    (``spec`` labels the result)."""
    test = curve.data["test_error"][..., k]
    mean = test.mean(axis=0)
    mu_star, ci, notes = {}, {}, []
    budget = [dv for dv in curve.diverged if dv[2] <= time and dv[3] == 4]
    div = [dv for dv in curve.diverged if dv[2] <= time and dv[3] in DIVERGENCE_REASONS]
    nolimit = [dv for dv in curve.diverged if dv[2] <= time and dv[3] in LIMIT_STATUS]
    failed_runs = budget + div + nolimit  # (||mu||, seed index, ...) of runs counted as chance
    failed = [dv[0] for dv in failed_runs]
    for tau in taus:
        mu_star[tau] = crossing(curve.mu, mean, tau)
        if np.isnan(mu_star[tau]):
            ci[tau] = (np.nan, np.nan)
            notes.append(f"tau={tau}: no crossing in [{curve.mu[0]:.3g}, {curve.mu[-1]:.3g}]")
            continue
        bracket = crossing_made_by_failures(curve.mu, mean, tau, failed)
        if bracket is not None:
            mu_star[tau], ci[tau] = np.nan, (np.nan, np.nan)
            notes.append(f"tau={tau}: mu* not reported: runs diverged (or spent the step "
                         f"budget) at the ||mu|| bracketing the crossing "
                         f"({bracket[0]:.3g}, {bracket[1]:.3g}); a smaller eta avoids this")
            continue
        boots, dropped = [], 0
        for b in boot_idx:  # a resample whose crossing its failed runs make is left out
            mean_b = test[b].mean(axis=0)
            chosen = set(np.asarray(b).tolist())
            if crossing_made_by_failures(curve.mu, mean_b, tau,
                                         [dv[0] for dv in failed_runs if dv[1] in chosen]):
                dropped += 1
                continue
            boots.append(crossing(curve.mu, mean_b, tau))
        boots = np.array(boots, dtype=float)
        boots = boots[np.isfinite(boots)]
        if dropped:
            notes.append(f"tau={tau}: {dropped} of {len(boot_idx)} bootstrap resamples "
                         f"left out of the 95% interval: their crossing is made by runs "
                         f"counted as chance (diverged, step budget or no limit)")
        ci[tau] = (tuple(np.percentile(boots, [2.5, 97.5])) if boots.size
                   else (np.nan, np.nan))
    zero = zero_output_runs(*(curve.data[name][..., k]
                              for name in ("loss", "train_error", "test_error")))
    if zero:
        notes.append(f"{zero} runs have {ZERO_OUTPUT_WHY}")
    if budget:
        notes.append(f"{len(budget)} runs spent the long-time step budget before the limit "
                     f"(loss not decaying; counted as test error 0.5), at ||mu|| in "
                     f"[{min(b[0] for b in budget):.3g}, {max(b[0] for b in budget):.3g}]")
    if div:
        mus = [dv[0] for dv in div]
        notes.append(f"{len(div)} runs diverged by step {time:g} (counted as test error 0.5), "
                     f"at ||mu|| in [{min(mus):.3g}, {max(mus):.3g}]; a smaller eta avoids this")
    res = Boundary(params=spec.params, level=spec.level, sampler=spec.run_sampler, taus=taus,
                   mu_star=mu_star, ci=ci, seeds=spec.seed_values, curve_mu=curve.mu.copy(),
                   curve_test=test.copy(), curve_loss=curve.data["loss"][..., k].copy(),
                   steps=float(time), n_diverged=len(div), notes=notes)
    for code, why in LIMIT_STATUS.items():
        hit = [dv[0] for dv in nolimit if dv[3] == code]
        if hit:
            notes.append(f"{len(hit)} runs have no limit ({why}; counted as test error 0.5), "
                         f"at ||mu|| in [{min(hit):.3g}, {max(hit):.3g}]")
    if np.isinf(time):
        lim = curve.limit
        ran = np.isfinite(lim[..., LIMIT_FIELDS.index("certified")])
        cert = lim[..., LIMIT_FIELDS.index("certified")] == 1.0
        res.limit_converged = float(cert.sum() / max(ran.sum(), 1))
        res.limit = {k: lim[..., i].copy() for i, k in enumerate(LIMIT_FIELDS)}
        t_pat = np.nanmax(lim[..., LIMIT_FIELDS.index("t_pattern")]) if lim.size else np.nan
        notes.append(f"t = inf: the limit of the max-margin program seeded by the flow's "
                     f"pattern at t = {t_pat:g} GD steps and repaired; {int(cert.sum())} of "
                     f"{int(ran.sum())} runs certified stationary ({res.limit_converged:.0%})"
                     + ("" if cert.sum() == ran.sum() else
                        "; the others are flagged in limit_certified (their repaired "
                        "values are used)"))
    star = mu_star[taus[0]]
    if np.isfinite(star):
        curve.evaluate(star, k)
        i = int(np.searchsorted(curve.mu, star))
        res.loss_at_star = float(curve.data["loss"][:, i, k].mean())
        res.train_error_at_star = float(curve.data["train_error"][:, i, k].max())
        res.margin_at_star = float(curve.data["margin"][:, i, k].mean())
        if not res.fitted:
            notes.append(f"training data not fitted at mu* (max train error "
                         f"{res.train_error_at_star:.2f}, loss {res.loss_at_star:.3g})")
    return res


def find_mu_star(evaluate: Evaluator, spec, taus=(TAU,) + TRANSITION_TAUS,
                 **kwargs) -> Boundary:
    """``find_boundaries`` at the single time spec.params.steps."""
    return find_boundaries(evaluate, spec.replace(times=None), taus=taus, **kwargs)[0]


def _last_crossing(err, tau):
    """Index k of the last adjacent pair with err[k] >= tau > err[k+1], or None.

    The last downward crossing is robust to noise at tiny ||mu||.
    """
    above = err >= tau
    idx = np.nonzero(above[:-1] & ~above[1:])[0]
    return int(idx[-1]) if idx.size else None


def crossing_made_by_failures(mu, err, tau, failed_mu):
    """The bracket (lo, hi) of err's crossing of tau when runs counted as
    chance (diverged, or out of the step budget; ||mu|| values failed_mu) sit
    at one of its two ||mu||, else None: such a crossing is made by the
    failures, not by learning, and mu* is not reported there."""
    k = _last_crossing(err, tau)
    failed = np.asarray(failed_mu, dtype=float).ravel()
    if k is None or not failed.size:
        return None
    bracket = np.asarray(mu[k:k + 2], dtype=float)
    if np.isclose(failed[:, None], bracket[None, :], rtol=1e-12).any():
        return float(bracket[0]), float(bracket[1])
    return None


def _bracket(mu, err, tau):
    """The last adjacent pair (lo, hi) with err(lo) >= tau > err(hi)."""
    k = _last_crossing(err, tau)
    return None if k is None else (mu[k], mu[k + 1])


def fit_power_law(variables: dict, y) -> dict:
    """Least squares log y = const + sum_x e_x log x, with 95% intervals.

    Variables that do not vary over the finite, positive points are left out.
    Returns dict(const, exponents {name: e}, ci {name: (lo, hi)}, rms, n_points);
    NaN const/rms when there are too few points.
    """
    from scipy import stats as sps

    y = np.asarray(y, dtype=float)
    ok = np.isfinite(y) & (y > 0)
    cols = {k: np.log(np.asarray(x, dtype=float)[ok]) for k, x in variables.items()}
    used = [k for k, c in cols.items() if c.size and np.ptp(c) > 0]
    out = {"const": np.nan, "exponents": {}, "ci": {}, "rms": np.nan, "n_points": int(ok.sum())}
    X = np.column_stack([np.ones(ok.sum())] + [cols[k] for k in used])
    if not used or X.shape[0] < X.shape[1]:
        return out
    yy = np.log(y[ok])
    coef, *_ = np.linalg.lstsq(X, yy, rcond=None)
    resid = yy - X @ coef
    dof = X.shape[0] - X.shape[1]
    s2 = float(resid @ resid) / max(dof, 1)
    se = np.sqrt(np.diag(s2 * np.linalg.pinv(X.T @ X)))
    t = sps.t.ppf(0.975, dof) if dof > 0 else np.nan
    out.update(const=float(coef[0]), rms=float(np.sqrt(np.mean(resid**2))))
    for k, c, e in zip(used, coef[1:], se[1:]):
        out["exponents"][k] = float(c)
        out["ci"][k] = (c - t * e, c + t * e)
    return out


def fit_exponents(d, n, mu_star):
    """``fit_power_law`` of mu* on d and n: dict(a, b, const, a_ci, b_ci, rms,
    n_points); an exponent whose variable does not vary is NaN."""
    f = fit_power_law({"a": d, "b": n}, mu_star)
    out = {"const": f["const"], "rms": f["rms"], "n_points": f["n_points"]}
    for k in ("a", "b"):
        out[k] = f["exponents"].get(k, np.nan)
        out[f"{k}_ci"] = f["ci"].get(k, (np.nan, np.nan))
    return out
