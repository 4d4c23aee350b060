"""The theory measured on a ``Trajectory`` (reduced or full network), numpy only.

No sympy here (writing or plotting a trajectory must not load it): every
formula below is the closed form derived in ``dynamics.theory.symbolic``,
written out in numpy; tests/statistical/test_theory.py checks each against the lambdified
sympy expression (``CLOSED_FORMS`` vs ``symbolic.linear_funcs``, ``f_threshold``
vs ``symbolic.f_threshold``).  Notation as in ``symbolic``: alpha = eta c/(2n),
beta = eta_v c/(2n), I = {i : y_i = j, z_i > 0}, k = |I|, S_N = sum_I N_i.
"""
from __future__ import annotations

import math

import numpy as np

from ..params import Params
from ..run import Trajectory, simulate

__all__ = ["lprime", "CLOSED_FORMS", "predicted_noise_ratio", "predicted_signal_ratio",
           "predicted_rates", "linear_prediction", "f_threshold", "lprime_deviation",
           "stage1_end", "mechanisms", "MECHANISM_ATTRS", "ratio_agreement",
           "growth_rates", "summarize", "report"]

_JS = np.array([1.0, -1.0])


def lprime(y_, f):
    """l'_i = -1/(1 + exp(y_i f_i)) (overflow-safe)."""
    return -np.exp(-np.logaddexp(0.0, y_ * f))


# ----------------------------------------------------------------------------
# closed forms of the small-v0 linearisation (symbolic.linear_blocks)
# ----------------------------------------------------------------------------
def _ratio_noise(eta, eta_v, c, n, k, S_N):
    """Growing-eigenvector z_i / v2 (mean over I) = sqrt(eta S_N / eta_v) / k."""
    return np.sqrt(eta * S_N / eta_v) / k


def _ratio_signal(eta, eta_v, c, n, mu):
    """Growing-eigenvector j <w, mu> / v1 = mu sqrt(eta / eta_v)."""
    return mu * np.sqrt(eta / eta_v)


def _rate_noise_gd(eta, eta_v, c, n, k, S_N):
    """Per-step log growth of the noise map: log(1 + c sqrt(eta eta_v S_N)/(2n))."""
    return np.log1p(c * np.sqrt(eta * eta_v * S_N) / (2 * n))


def _rate_signal_gd(eta, eta_v, c, n, mu, q):
    """Per-step log growth of the signal map: log(1 + c q mu sqrt(eta eta_v)/(2n))."""
    return np.log1p(c * q * mu * np.sqrt(eta * eta_v) / (2 * n))


def _power_terms(P, Q, t):
    """l = sqrt(PQ), (1 + l)^t, (1 - l)^t for M = [[1, P], [Q, 1]] (eigenvalues 1 +- l)."""
    l1 = np.sqrt(P * Q)
    return l1, (1 + l1) ** t, (1 - l1) ** t


def _Mt(P, Q, t):
    """Entries (m00, m01, m10, m11) of M^t: diagonal ((1+l)^t + (1-l)^t)/2,
    off-diagonal (P, Q) ((1+l)^t - (1-l)^t)/(2l)."""
    l1, up, dn = _power_terms(P, Q, t)
    diag, off = (up + dn) / 2, (up - dn) / (2 * l1)
    return [diag, P * off, Q * off, diag]


def _Mcum(P, Q, t):
    """Entries of sum_{u<t} M^u: diagonal ((1+l)^t - (1-l)^t)/(2l),
    off-diagonal (P, Q) ((1+l)^t + (1-l)^t - 2)/(2 l^2)."""
    l1, up, dn = _power_terms(P, Q, t)
    diag, off = (up - dn) / (2 * l1), (up + dn - 2) / (2 * l1**2)
    return [diag, P * off, Q * off, diag]


# same keys and argument order as symbolic.linear_funcs()
CLOSED_FORMS = dict(ratio_noise=_ratio_noise, ratio_signal=_ratio_signal,
                    rate_noise_gd=_rate_noise_gd, rate_signal_gd=_rate_signal_gd,
                    Mt=_Mt, Mcum=_Mcum)


def predicted_noise_ratio(params: Params, k_active, SN_active):
    """Growing-eigenvector ratio mean_{i in I} z_i / v2 = sqrt(eta S_N/eta_v)/k.

    With heterogeneous N_i the eigenvector is z_i/v2 = alpha N_i / lambda,
    lambda = sqrt(alpha beta S_N), whose mean over I is the symmetric formula
    sqrt(eta N / (k eta_v)) at N = S_N / k.  NaN where k = 0.
    """
    p = params
    kk = np.asarray(k_active, float)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = _ratio_noise(p.eta, p.eta_v_eff, p.c, p.n, kk, SN_active)
    return np.where(kk > 0, out, np.nan)


def predicted_signal_ratio(params: Params) -> float:
    """Growing-eigenvector ratio j <w, mu> / v1 = ||mu|| sqrt(eta / eta_v)."""
    p = params
    return float(_ratio_signal(p.eta, p.eta_v_eff, p.c, p.n, p.mu_norm))


def predicted_rates(params: Params, k_active, SN_active, q_net):
    """Per-step log growth of the discrete maps: (noise, signal).

    noise: log(1 + c sqrt(eta eta_v S_N) / (2n)); signal: log(1 + c q ||mu|| sqrt(eta eta_v)/(2n)).
    """
    p = params
    kk = np.asarray(k_active, float)
    with np.errstate(invalid="ignore", divide="ignore"):
        rn = _rate_noise_gd(p.eta, p.eta_v_eff, p.c, p.n, kk, SN_active)
        rs = _rate_signal_gd(p.eta, p.eta_v_eff, p.c, p.n, p.mu_norm, np.asarray(q_net, float))
    return np.where(kk > 0, rn, np.nan), rs


def _power(P, Q, tt, cumulative=False):
    """Entries (m00, m01, m10, m11) of M^t (or sum_{u<t} M^u), M = [[1, P], [Q, 1]];
    PQ > 0 assumed, PQ = 0 gives M = I (limit)."""
    F = _Mcum if cumulative else _Mt
    P, Q = np.asarray(P, float), np.asarray(Q, float)
    zero = P * Q <= 0
    Ps, Qs = np.where(zero, 1.0, P), np.where(zero, 1.0, Q)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        ent = [np.broadcast_to(np.asarray(e_, float), np.broadcast_shapes(tt.shape, P.shape))
               for e_ in F(Ps, Qs, tt)]
    diag = tt if cumulative else np.ones_like(tt)
    off = (tt * (tt - 1) / 2 if cumulative else tt)
    return (np.where(zero, diag, ent[0]), np.where(zero, P * off, ent[1]),
            np.where(zero, Q * off, ent[2]), np.where(zero, diag, ent[3]))


def linear_prediction(params: Params, stats, steps: int | None = None) -> dict:
    """Closed-form solution of the linearised dynamics from the initial state.

    Per neuron, active sets frozen at t = 0 (noise: z_i(0) = B_i > 0, any
    class, signs e_i = j y_i; signal: s_i(0) > 0), l' = -1/2, G = I:
      noise  Y = sum e_i z_i, (Y, v2)(t) = M_n^t (Y0, v0), M_n = I + [[0, alpha S_N], [beta, 0]],
             z_i(t) = B_i + alpha N_i e_i sum_{u<t} v2(u)
      signal (a, v1)(t) = M_s^t (A, v0),  M_s = I + j q [[0, alpha ||mu||^2], [beta, 0]]
      f_i(t) from docs/theory.md#exact-recursion with these s, z, v.  Arrays over t = 0..steps.
    """
    p, st = params, stats
    T = p.steps if steps is None else int(steps)
    tt = np.arange(T + 1, dtype=float)[:, None, None]
    al, be = p.eta * p.c / (2 * p.n), p.eta_v_eff * p.c / (2 * p.n)
    # noise block
    act = st.B > 0
    e_i = _JS[:, None, None] * st.y * act  # (2, m, n)
    SN = np.sum(act * st.N, -1)
    Y0 = np.sum(e_i * st.B, -1)
    _, _, m10, m11 = _power(al * SN, be * np.ones_like(SN), tt)
    _, _, c10, c11 = _power(al * SN, be * np.ones_like(SN), tt, cumulative=True)
    v2t = m10 * Y0 + m11 * p.v0
    cum = c10 * Y0 + c11 * p.v0  # sum_{u<t} v2(u)
    zt = st.B + al * (st.N * e_i)[None] * cum[..., None]
    # signal block
    A = p.mu_norm * st.w0_e1
    on = (st.yhat * A[..., None]) > 0
    qn = np.sum(on * st.y * st.yhat, -1)
    js = _JS[:, None]
    s00, s01, s10, s11 = _power(js * qn * al * p.mu_norm**2, js * qn * be, tt)
    at = s00 * A + s01 * p.v0
    v1t = s10 * A + s11 * p.v0
    st_ = at[..., None] * st.yhat
    out = v1t[..., None] * np.maximum(st_, 0) + v2t[..., None] * np.maximum(zt, 0)
    f = p.c * np.einsum("j,tjri->ti", _JS, out)
    return dict(steps=np.arange(T + 1), a=at, v1=v1t, v2=v2t, z=zt, f=f,
                k=np.sum(act, -1), S_N=SN, q=qn)


# ----------------------------------------------------------------------------
# stage 1
# ----------------------------------------------------------------------------
def f_threshold(tol: float) -> float:
    """|f| at which |l' + 1/2| = tol: log((1 + 2 tol)/(1 - 2 tol)) = 2 artanh(2 tol)."""
    return float(np.log((1 + 2 * tol) / (1 - 2 * tol)))


def lprime_deviation(traj: Trajectory) -> np.ndarray:
    """max_i |l'_i + 1/2| per recorded step, shape (R,)."""
    _, _, f = traj.preactivations()
    return np.max(np.abs(lprime(traj.stats.y, f) + 0.5), axis=-1)


def stage1_end(traj: Trajectory, tol: float = 0.1) -> dict:
    """End of stage 1: first recorded step with max_i |l'_i + 1/2| > tol
    ('measured'), and the first step where the linearised prediction's
    max_i |f_i| exceeds f_threshold(tol) ('predicted'); -1 if never (t <= T)."""
    dev = lprime_deviation(traj)
    hit = np.nonzero(dev > tol)[0]
    meas = int(traj.steps[hit[0]]) if hit.size else -1
    lin = linear_prediction(traj.params, traj.stats)
    fth = f_threshold(tol)
    hit_p = np.nonzero(np.max(np.abs(lin["f"]), -1) > fth)[0]
    pred = int(hit_p[0]) if hit_p.size else -1
    return dict(measured=meas, predicted=pred, tol=float(tol), f_threshold=fth)


# ----------------------------------------------------------------------------
# mechanisms measured on a trajectory
# ----------------------------------------------------------------------------
def mechanisms(traj: Trajectory) -> dict:
    """Measured mechanisms, name -> (dims, array), dims ('step','j','r') or ('step',).

    noise_ratio       mean_{i in I} z_i / v2, I = {y_i = j, z_i > 0} (NaN if empty)
    noise_ratio_pred  sqrt(eta S_N / eta_v) / k on the current I
    noise_active      k = |I|
    signal_ratio      j <w, mu> / v1 = (gamma + j A) / v1
    gamma_ratio       gamma / v1
    signal_ratio_pred ||mu|| sqrt(eta / eta_v)
    wv_norm_ratio     ||w|| / ||v||
    balance           sum_p v_p^2 - ||w||^2
    v_rel_change      ||v - v0|| / (sqrt(2) v0)
    lprime_dev        max_i |l'_i + 1/2|

    At depth L >= 2 the ratios to v (a two-layer theory) do not apply and are
    left out; the per-layer balance and relative change are
    ``Trajectory.layer_balance`` and ``layer_change``.
    """
    p, st = traj.params, traj.stats
    _, z_, f = traj.preactivations()
    nd = ("step", "j", "r")
    common = {
        "balance": (nd, traj.balance()),
        "v_rel_change": (nd, np.linalg.norm(traj.v - p.v0, axis=-1) / (math.sqrt(2) * p.v0)),
        "lprime_dev": (("step",), np.max(np.abs(lprime(st.y, f) + 0.5), -1)),
    }
    if p.depth > 1:
        return common
    same = (st.y[None, :] == _JS[:, None])[None, :, None, :]  # (1, 2, 1, n)
    act = same & (z_ > 0)
    kk = act.sum(-1)
    SN = np.sum(act * st.N, -1)
    v2_ = traj.v[..., 1]
    v1_ = traj.v[..., 0]
    A = p.mu_norm * st.w0_e1
    js = _JS[None, :, None]
    with np.errstate(invalid="ignore", divide="ignore"):
        zbar = np.sum(np.where(act, z_, 0.0), -1) / kk
        ratio = np.where(kk > 0, zbar / v2_, np.nan)
        sig = (traj.gamma + js * A) / v1_
        gam = traj.gamma / v1_
        wv = np.sqrt(traj.w_norm_sq() / np.sum(traj.v**2, -1))
    R = len(traj.steps)
    return {
        "noise_ratio": (nd, ratio),
        "noise_ratio_pred": (nd, predicted_noise_ratio(p, kk, SN)),
        "noise_active": (nd, kk.astype(np.int64)),
        "signal_ratio": (nd, sig),
        "gamma_ratio": (nd, gam),
        "signal_ratio_pred": (("step",), np.full(R, predicted_signal_ratio(p))),
        "wv_norm_ratio": (nd, wv),
        **common,
    }


MECHANISM_ATTRS = {
    "noise_ratio": dict(long_name="<w_{j,r}, xi_i>/v_{j,r,2}, mean over active same-class i", units="1"),
    "noise_ratio_pred": dict(long_name="growing-eigenvector noise ratio sqrt(eta S_N/eta_v)/k", units="1"),
    "noise_active": dict(long_name="number k of active same-class samples", units="1"),
    "signal_ratio": dict(long_name="j <w_{j,r}, mu>/v_{j,r,1}", units="1"),
    "gamma_ratio": dict(long_name="gamma_{j,r}/v_{j,r,1}", units="1"),
    "signal_ratio_pred": dict(long_name="growing-eigenvector signal ratio ||mu|| sqrt(eta/eta_v)", units="1"),
    "wv_norm_ratio": dict(long_name="||w_{j,r}||/||v_{j,r}||", units="1"),
    "balance": dict(long_name="first-layer ||outgoing_{j,r}||^2 - ||w_{j,r}||^2", units="1"),
    "v_rel_change": dict(long_name="||v_{j,r} - v0||/(sqrt(2) v0)", units="1"),
    "lprime_dev": dict(long_name="max_i |l'_i + 1/2|", units="1"),
}


def ratio_agreement(traj: Trajectory, mech: dict | None = None) -> np.ndarray:
    """noise_ratio / noise_ratio_pred per (step, j, r), NaN on neurons with
    k = 0 or v2 <= 0 (neurons whose v2 turned negative serve the other class)."""
    mech = mechanisms(traj) if mech is None else mech
    r_ = mech["noise_ratio"][1] / mech["noise_ratio_pred"][1]
    return np.where(traj.v[..., 1] > 0, r_, np.nan)


# ----------------------------------------------------------------------------
# growth rates measured
# ----------------------------------------------------------------------------
def _slope(x, Y):
    """Least-squares slope of Y (R, ...) on x (R,) along axis 0, NaN-aware per column."""
    ok = np.isfinite(Y)
    w = ok.astype(float)
    cnt = w.sum(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        xm = (w * x[:, None, None]).sum(0) / cnt
        ym = np.where(ok, Y, 0).sum(0) / cnt
        dx = (x[:, None, None] - xm) * w
        sl = (dx * np.where(ok, Y - ym, 0)).sum(0) / (dx**2).sum(0)
    return np.where(cnt >= 3, sl, np.nan)


def growth_rates(traj: Trajectory, window=None) -> dict:
    """Measured vs predicted per-step log growth rates over ``window`` = (t0, t1)
    (default: second half of stage 1, (t_1/2, t_1)); medians over neurons.

    Measured: slope of (1/2) log of a mode energy; in the scaled coordinates
    both maps are symmetric, so E ~ lambda_+^{2t} once the growing mode
    dominates.  Noise, two choices of the active set, fixed at t0:
      'same'  I = {y_i = j, z_i > 0} (the paper's block), Y = sum_I z_i,
      'all'   every active sample with sign e_i = j y_i, Y = sum e_i z_i
              (the exact linearisation at t0: opposite-class samples drain v2);
      E = Y^2/(alpha S_N) + v2^2/beta, predicted log(1 + sqrt(alpha beta S_N)).
    Signal: E = a^2/(alpha ||mu||^2) + v1^2/beta, predicted
    log(1 + q ||mu|| sqrt(alpha beta)).  Also the slope of log v2 ('same' neurons).
    Noise medians use neurons with k_same >= 1 and v2 > 0 at t0.
    """
    p, st = traj.params, traj.stats
    if window is None:
        t1 = stage1_end(traj)["measured"]
        window = (t1 // 2, t1) if t1 > 0 else (0, 0)
    sel = (traj.steps >= window[0]) & (traj.steps <= window[1])
    x = traj.steps[sel].astype(float)
    al, be = p.eta * p.c / (2 * p.n), p.eta_v_eff * p.c / (2 * p.n)
    _, z_, _ = traj.preactivations()
    i0 = np.argmax(sel) if sel.any() else 0
    act = z_[i0] > 0
    e_all = _JS[:, None, None] * st.y * act
    e_same = (e_all > 0).astype(float)
    v2_ = traj.v[sel, ..., 1]
    out = dict(window=tuple(int(w_) for w_ in window))
    ok = (e_same.sum(-1) > 0) & (traj.v[i0, ..., 1] > 0)
    med = lambda x_: float(np.nanmedian(x_)) if np.isfinite(x_).any() else float("nan")  # noqa: E731
    with np.errstate(invalid="ignore", divide="ignore"):
        for name, e_ in (("same", e_same), ("all", e_all)):
            SN = np.sum(np.abs(e_) * st.N, -1)
            Y = np.sum(e_ * z_[sel], -1)
            E = Y**2 / (al * SN) + v2_**2 / be
            pn, _ = predicted_rates(p, np.abs(e_).sum(-1), SN, 0.0)
            out[f"noise_{name}_measured"] = med(np.where(ok, _slope(x, 0.5 * np.log(E)), np.nan))
            out[f"noise_{name}_predicted"] = med(np.where(ok, pn, np.nan))
        out["noise_log_v2_measured"] = med(np.where(
            ok, _slope(x, np.log(np.where(v2_ > 0, v2_, np.nan))), np.nan))
        a = p.mu_norm * st.w0_e1 + _JS[:, None] * traj.gamma[sel]
        Es = a**2 / (al * p.mu_norm**2) + traj.v[sel, ..., 0] ** 2 / be
        out["signal_measured"] = med(_slope(x, 0.5 * np.log(Es)))
    on = (st.yhat * (p.mu_norm * st.w0_e1 + _JS[:, None] * traj.gamma[i0])[..., None]) > 0
    _, ps = predicted_rates(p, 1.0, 1.0, np.sum(on * st.y * st.yhat, -1))
    out["signal_predicted"] = med(ps)
    return out


# ----------------------------------------------------------------------------
# summary of one trajectory
# ----------------------------------------------------------------------------
def _summ(x):
    x = np.asarray(x, float)
    x = x[np.isfinite(x)]
    if not x.size:
        return dict(median=float("nan"), q10=float("nan"), q90=float("nan"), count=0)
    q10, med, q90 = np.quantile(x, [0.1, 0.5, 0.9])
    return dict(median=float(med), q10=float(q10), q90=float(q90), count=int(x.size))


def summarize(traj: Trajectory, tol: float = 0.1) -> dict:
    """Predicted vs measured mechanisms of one trajectory (text table:
    ``compare.laws.format_report``)."""
    p = traj.params
    s1 = stage1_end(traj, tol)
    mech = mechanisms(traj)
    agree = ratio_agreement(traj, mech)
    t1 = max(s1["measured"], 0)
    i1 = int(np.searchsorted(traj.steps, t1))
    iT = len(traj.steps) - 1
    ok = traj.v[..., 1] > 0
    row = lambda name, i: _summ(np.where(ok[i], mech[name][1][i], np.nan))  # noqa: E731
    at = {}
    for label, i in (("stage1_end", i1), ("T", iT)):
        at[label] = dict(
            step=int(traj.steps[i]),
            noise_ratio=row("noise_ratio", i), noise_ratio_pred=row("noise_ratio_pred", i),
            noise_ratio_over_pred=_summ(agree[i]),
            signal_ratio=_summ(mech["signal_ratio"][1][i]),
            signal_ratio_pred=float(mech["signal_ratio_pred"][1][i]),
            wv_norm_ratio=_summ(mech["wv_norm_ratio"][1][i]),
            v_rel_change=_summ(mech["v_rel_change"][1][i]),
            v2_negative=int(np.sum(~ok[i])))
    return dict(params=p.to_dict(), level=traj.level, sampler=traj.sampler,
                stage1=s1, growth=growth_rates(traj), at=at,
                loss_T=float(traj.loss[-1]), test_error=float(traj.test_error))


def layer_summary(traj: Trajectory) -> dict:
    """Per-layer mechanisms of a run at any depth (docs/theory.md#depth): relative change
    ||theta_l(T) - theta_l(0)|| / ||theta_l(0)|| of W, U(1..L-1), v, and per
    hidden layer the balance ||outgoing||^2 - ||incoming||^2 at 0 and its
    largest drift max |b(T) - b(0)| over neurons (conserved by the flow)."""
    p = traj.params
    change = traj.layer_change()[-1]
    bal = traj.layer_balance()
    drift = np.max(np.abs(bal[-1] - bal[0]), axis=(-2, -1))
    return dict(params=p.to_dict(), level=traj.level, sampler=traj.sampler,
                step=int(traj.steps[-1]),
                blocks=["W"] + [f"U{l}" for l in range(1, p.depth)] + ["v"],
                change=[float(x) for x in change],
                balance0=[float(np.median(np.abs(b))) for b in bal[0]],
                balance_drift=[float(x) for x in drift],
                loss_T=float(traj.loss[-1]), test_error=float(traj.test_error))


def report(params: Params, level: str = "exact", sampler: str = "wishart",
           tol: float = 0.1) -> dict:
    """Simulate ``params`` and compare the theory with the run (``summarize``)."""
    return summarize(simulate(params, level, sampler, record_every=1), tol)
