"""Phase boundary ||mu||* (SPEC section 9) and its scaling with d and n.

For fixed parameters, mu* is where the seed-averaged clean test error crosses
a threshold tau along log ||mu||.  Seeds are params.seed + s, s = 0..S-1, and
the statistics of each seed are drawn once and reused for every ||mu||
(common random numbers: only A = ||mu|| <w0, e_1> changes), so the mean error
curve is a fixed function of ||mu||.  All seeds (and all ||mu|| of one
evaluation) run in one parallel Numba call.  Algorithm: evaluate a coarse
log grid, widen it until every tau is bracketed, bisect in log ||mu|| on each
bracket, and interpolate linearly in log ||mu|| inside the final bracket.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .data import sample_stats
from .kernels import batch_kernel, batch_kernel_serial
from .params import LEVELS, SAMPLERS, Params, ParamError, check_choice
from .run import LEVEL_FLAGS, optimizer_array

_STACK = ("w0_e1", "B", "G", "N", "yhat", "y", "test_yhat", "test_B", "test_X")


def seed_list(params: Params, n_seeds: int) -> np.ndarray:
    """Seeds params.seed + s for s = 0..n_seeds-1."""
    return params.seed + np.arange(n_seeds)


def stacked_stats(params: Params, sampler: str, seeds) -> dict:
    """Statistics of every seed, stacked on a leading axis (for the batch kernel)."""
    stats = [sample_stats(params.replace(seed=int(s)), sampler) for s in seeds]
    return {k: np.ascontiguousarray(np.stack([getattr(st, k) for st in stats]))
            for k in _STACK}


def run_batch(params: Params, level: str, stacked: dict, job_seed, job_mu,
              job_v0=None, parallel: bool = True) -> dict:
    """Final test error, loss, train error and status of many runs.

    Job q runs seed index job_seed[q] at ||mu|| = job_mu[q], v0 = job_v0[q];
    ``parallel`` uses numba prange (else one thread; same results bit for bit).
    """
    use_gram, train_v = LEVEL_FLAGS[level]
    job_seed = np.ascontiguousarray(job_seed, dtype=np.int64)
    job_mu = np.ascontiguousarray(job_mu, dtype=np.float64)
    job_v0 = np.full(job_mu.shape, params.v0) if job_v0 is None else \
        np.ascontiguousarray(job_v0, dtype=np.float64)
    out = {k: np.empty(job_mu.shape[0]) for k in ("test_error", "loss", "train_error")}
    status = np.empty(job_mu.shape[0], dtype=np.int64)
    p = params
    kernel = batch_kernel if parallel else batch_kernel_serial
    kernel(stacked["w0_e1"], stacked["B"], stacked["G"], stacked["N"],
           stacked["yhat"], stacked["y"], stacked["test_yhat"],
           stacked["test_B"], stacked["test_X"], job_seed, job_mu, job_v0,
           p.c, p.eta, p.eta_v_eff, p.steps, use_gram, train_v, optimizer_array(p),
           out["test_error"], out["loss"], out["train_error"], status)
    out["status"] = status
    return out


def run_full_batch(params: Params, seeds, job_seed, job_mu, job_v0=None) -> dict:
    """``run_batch`` for level "full": the weight-space network, job by job.

    Job q trains on the real data of seed seeds[job_seed[q]] (sampler data).
    Imported lazily: fullsim builds on dynamics.
    """
    from fullsim import simulate_full

    job_v0 = np.full(len(job_mu), params.v0) if job_v0 is None else job_v0
    out = {k: np.empty(len(job_mu)) for k in ("test_error", "loss", "train_error")}
    out["status"] = np.full(len(job_mu), -1, dtype=np.int64)
    for q, (si, mu, v0) in enumerate(zip(job_seed, job_mu, job_v0)):
        p = params.replace(seed=int(seeds[si]), mu_norm=float(mu), v0=float(v0))
        tr = simulate_full(p, record_every=p.steps)
        out["test_error"][q], out["loss"][q] = tr.test_error, tr.loss[-1]
        out["train_error"][q] = tr.train_error[-1]
    return out


class ErrorCurve:
    """Per-seed final errors at every evaluated ||mu|| (cached, CRN)."""

    def __init__(self, params: Params, level: str, stacked: dict | None, seeds=None):
        self.params, self.level, self.stacked = params, level, stacked
        self.seeds = seeds
        self.n_seeds = len(seeds) if stacked is None else stacked["yhat"].shape[0]
        self.diverged = []  # ||mu|| of runs with non-finite outputs
        self.mu = np.empty(0)
        self.test = np.empty((self.n_seeds, 0))
        self.loss = np.empty((self.n_seeds, 0))
        self.train = np.empty((self.n_seeds, 0))

    def evaluate(self, mus) -> np.ndarray:
        """Seed-mean test error at each ||mu|| (runs only new values)."""
        mus = np.atleast_1d(np.asarray(mus, dtype=np.float64))
        new = np.unique(mus[~np.isin(mus, self.mu)])
        if new.size:
            S = self.n_seeds
            job_mu = np.repeat(new, S)
            job_seed = np.tile(np.arange(S), new.size)
            if self.level == "full":
                res = run_full_batch(self.params, self.seeds, job_seed, job_mu)
            else:
                res = run_batch(self.params, self.level, self.stacked, job_seed, job_mu)
            bad = res["status"] >= 0
            if bad.any():  # no finite prediction: count as chance, flag it
                res["test_error"][bad] = 0.5
                res["train_error"][bad] = 1.0
                res["loss"][bad] = np.nan
                self.diverged.extend(job_mu[bad].tolist())
            shape = (new.size, S)
            self.mu = np.concatenate([self.mu, new])
            for name, key in (("test", "test_error"), ("loss", "loss"),
                              ("train", "train_error")):
                setattr(self, name, np.concatenate(
                    [getattr(self, name), res[key].reshape(shape).T], axis=1))
            order = np.argsort(self.mu)
            self.mu = self.mu[order]
            self.test, self.loss, self.train = (self.test[:, order],
                                                self.loss[:, order], self.train[:, order])
        idx = np.searchsorted(self.mu, mus)
        return self.test[:, idx].mean(axis=0)


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
    """Result of ``find_mu_star`` (see its docstring)."""

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
    loss_at_star: float = np.nan
    train_error_at_star: float = np.nan
    notes: list = field(default_factory=list)

    @property
    def fitted(self) -> bool:
        """True when every seed fits the training data at mu* (train error 0)."""
        return bool(self.train_error_at_star == 0.0)

    def star(self, tau=None) -> float:
        return self.mu_star[self.taus[0] if tau is None else tau]


def find_mu_star(params: Params, level: str = "exact", sampler: str = "wishart",
                 n_seeds: int = 8, taus=(0.25, 0.1, 0.4), guess: float | None = None,
                 mu_range=(0.1, 1000.0), rel_tol: float = 0.01, n_boot: int = 200,
                 stacked: dict | None = None) -> Boundary:
    """mu* for each tau (the first tau is the headline threshold).

    level "full" trains the weight-space network (sampler data) at every
    evaluation: exact for any optimizer, but O(m n d) per step.

    guess: centre of the initial bracket grid (guess * 4^k, k = -1..1); else a
    coarse log grid over ``mu_range`` (9 points).  Brackets widen by 4x up to
    6 times.  Bisection in log ||mu|| stops when the bracket ratio is below
    1 + rel_tol.  Bootstrap: seeds resampled n_boot times, crossing of the
    resampled mean curve, 2.5-97.5% interval.
    """
    check_choice("level", level, LEVELS + ("full",))
    check_choice("sampler", sampler, SAMPLERS)
    if int(n_seeds) < 1:
        raise ParamError("seeds", n_seeds, "must be an integer >= 1")
    for tau in taus:
        if not 0.0 < tau < 0.5:
            raise ParamError("threshold", tau, "must be in (0, 0.5)")
    seeds = seed_list(params, int(n_seeds))
    if level == "full":
        stacked, sampler = None, "data"
    elif stacked is None:
        stacked = stacked_stats(params, sampler, seeds)
    curve = ErrorCurve(params, level, stacked, seeds)
    grid = (guess * 4.0 ** np.arange(-1, 2) if guess and np.isfinite(guess)
            else np.geomspace(mu_range[0], mu_range[1], 9))
    err = curve.evaluate(grid)
    notes = []
    for _ in range(6):  # widen until every tau is bracketed
        lo_need = any(err[0] < tau for tau in taus)
        hi_need = any(err[-1] >= tau and _bracket(curve.mu, err, tau) is None for tau in taus)
        if not (lo_need or hi_need):
            break
        ext = []
        if lo_need:
            ext.append(curve.mu[0] / 4.0)
        if hi_need:
            ext.append(curve.mu[-1] * 4.0)
        curve.evaluate(ext)
        err = curve.evaluate(curve.mu)
    mu_star, ci = {}, {}
    for tau in taus:
        brk = _bracket(curve.mu, curve.evaluate(curve.mu), tau)
        if brk is None:
            notes.append(f"tau={tau}: no crossing in [{curve.mu[0]:.3g}, {curve.mu[-1]:.3g}]")
            continue
        lo, hi = brk
        while hi / lo > 1.0 + rel_tol:
            mid = np.sqrt(lo * hi)
            if curve.evaluate(mid)[0] >= tau:
                lo = mid
            else:
                hi = mid
    mean = curve.test.mean(axis=0)
    rng = np.random.default_rng(np.random.SeedSequence([params.seed, 2024]))
    boot_idx = rng.integers(0, curve.n_seeds, size=(n_boot, curve.n_seeds))
    for tau in taus:
        mu_star[tau] = crossing(curve.mu, mean, tau)
        if np.isnan(mu_star[tau]):
            ci[tau] = (np.nan, np.nan)
            continue
        boots = np.array([crossing(curve.mu, curve.test[b].mean(axis=0), tau)
                          for b in boot_idx])
        boots = boots[np.isfinite(boots)]
        ci[tau] = (tuple(np.percentile(boots, [2.5, 97.5])) if boots.size
                   else (np.nan, np.nan))
    if curve.diverged:
        notes.append(f"{len(curve.diverged)} runs diverged (counted as test error 0.5), "
                     f"at ||mu|| in [{min(curve.diverged):.3g}, {max(curve.diverged):.3g}]; "
                     f"a smaller eta avoids this")
    res = Boundary(params=params, level=level, sampler=sampler, taus=tuple(taus),
                   mu_star=mu_star, ci=ci, seeds=seeds, curve_mu=curve.mu.copy(),
                   curve_test=curve.test.copy(), curve_loss=curve.loss.copy(),
                   notes=notes)
    star = mu_star[taus[0]]
    if np.isfinite(star):
        curve.evaluate(star)
        k = int(np.searchsorted(curve.mu, star))
        res.loss_at_star = float(curve.loss[:, k].mean())
        res.train_error_at_star = float(curve.train[:, k].max())
        if not res.fitted:
            notes.append(f"training data not fitted at mu* (max train error "
                         f"{res.train_error_at_star:.2f}, loss {res.loss_at_star:.3g})")
    return res


def _last_crossing(err, tau):
    """Index k of the last adjacent pair with err[k] >= tau > err[k+1], or None.

    The last downward crossing is robust to noise at tiny ||mu||.
    """
    above = err >= tau
    idx = np.nonzero(above[:-1] & ~above[1:])[0]
    return int(idx[-1]) if idx.size else None


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
