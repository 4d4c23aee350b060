"""Symbolic theory of the two-layer dynamics (SPEC sections 4, 7, 8) and its
measurement on trajectories.

Data path: sympy derivations (cached, the source of truth for every printed
formula) -> ``lambdify(cse=True)`` numeric functions -> vectorised numpy
measurements on a ``Trajectory`` (reduced or full network).

Conventions: axis j index 0 is j = +1, index 1 is j = -1; a neuron is (j, r).
Notation used throughout:

  a_{j,r} = <w_{j,r}, mu> = A_{j,r} + j gamma_{j,r}   (so s_{j,r,i} = yhat_i a)
  z_{j,r,i} = <w_{j,r}, xi_i>
  alpha = eta c / (2n),  beta = eta_v c / (2n)        (GD factors at l' = -1/2)
  noise active set  I_{j,r}(t) = {i : y_i = j, z_{j,r,i}(t) > 0},  k = |I|,
                    S_N = sum_{i in I} N_i
  signal net count  q_{j,r} = sum_{i : s_{j,r,i} > 0} y_i yhat_i   (~ n/2, clean)

Linearised blocks (l' = -1/2, G = I), derived in ``linear_blocks``:
  noise  (Y = sum_{i in I} z_i, v2):  Y += alpha S_N v2,  v2 += beta Y
  signal (a, v1):                     a += j q alpha ||mu||^2 v1,  v1 += j q beta a
"""
from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import sympy as sp

from .params import Params
from .run import Trajectory, simulate
from .run import reduced_forward as forward

_JS = np.array([1.0, -1.0])

# ----------------------------------------------------------------------------
# symbols
# ----------------------------------------------------------------------------
j, y, yhat = sp.symbols("j y yhat")  # each +-1
PM1 = (j, y, yhat)
s, z, v1, v2, F_rest, u = sp.symbols("s z v_1 v_2 F_rest u", real=True)
lp = sp.Symbol("l'")  # l'_i = d ell / d u at u = y_i f_i
eta, eta_v, c, n, mu, N = sp.symbols("eta eta_v c n mu N", positive=True)
d, m, sigma_p, v0, C = sp.symbols("d m sigma_p v_0 C", positive=True)
k, q, S_N = sp.symbols("k q S_N", positive=True)
tol, t = sp.symbols("tol t", positive=True)
Mu, Xi = sp.symbols("Mu Xi")  # placeholders for the vectors mu and xi_i
A_, Y_, a_ = sp.symbols("A Y a", real=True)

_NUM_ARGS = (j, y, yhat, s, z, v1, v2, lp, N, mu, eta, eta_v, c, n)


def relu(x):
    """ReLU(x) = x H(x) with H(0) = 0 (SPEC: ReLU'(0) = 0)."""
    return x * sp.Heaviside(x, 0)


def _pm1(expr):
    """Reduce powers of the sign symbols j, y, yhat (x^2 = 1, 1/x = x)."""
    return sp.expand(expr).replace(
        lambda e: e.is_Pow and e.base in PM1 and e.exp.is_integer,
        lambda e: e.base ** (int(e.exp) % 2))


def _no_delta(expr):
    """x DiracDelta(x) = 0: drop Dirac terms from differentiating x H(x)."""
    return expr.replace(sp.DiracDelta, lambda *args: sp.S.Zero)


# ----------------------------------------------------------------------------
# 1. the recursion, derived
# ----------------------------------------------------------------------------
@lru_cache(maxsize=None)
def derive_recursion() -> dict:
    """Per-sample GD increments of one neuron (j, r), derived by differentiation.

    One sample's loss is L_i = ell(y_i f_i)/n, ell(u) = log(1 + exp(-u)), with
    f_i = j c [v1 ReLU(s) + v2 ReLU(z)] + F_rest (other neurons).  Chain rule:
    dL_i/dx = (1/n) l'_i y dF/dx, l'_i = ell'(y f_i).  Since s = <w, yhat mu>
    and z = <w, xi_i>, grad_w L_i = dL_i/ds yhat mu + dL_i/dz xi_i; the step
    -eta grad_w L_i is projected on w = w0 + j gamma mu/||mu||^2 + sum rho xi/N
    (coefficients of the independent vectors mu, xi_i).  Totals: dgamma, dv
    sum the per-sample terms over i; drho_i has only sample i's term.

    Returns sympy expressions: dgamma_i, drho_i, dv1_i, dv2_i, and the loss
    derivative 'ell_prime' (= -1/(1 + exp(u))).
    """
    f = j * c * (v1 * relu(s) + v2 * relu(z)) + F_rest
    dL = {x: _no_delta(sp.diff(f, x)) * y * lp / n for x in (s, z, v1, v2)}
    dw = -eta * (dL[s] * yhat * Mu + dL[z] * Xi)
    dw = sp.expand(dw)
    dg, dr = sp.symbols("dgamma drho")
    # coefficient matching: j dgamma/||mu||^2 mu + drho/N xi = dw
    dgamma_i = sp.solve(sp.Eq(j * dg / mu**2, dw.coeff(Mu)), dg)[0]
    drho_i = sp.solve(sp.Eq(dr / N, dw.coeff(Xi)), dr)[0]
    ell = sp.log(1 + sp.exp(-u))
    return dict(
        dgamma_i=_pm1(dgamma_i),
        drho_i=_pm1(drho_i),
        dv1_i=_pm1(-eta_v * dL[v1]),
        dv2_i=_pm1(-eta_v * dL[v2]),
        ell_prime=sp.simplify(sp.diff(ell, u)),
    )


def spec4_recursion() -> dict:
    """SPEC 4 per-sample terms, typed in from the spec (for the test)."""
    return dict(
        dgamma_i=-(eta * c / n) * mu**2 * v1 * lp * y * yhat * sp.Heaviside(s, 0),
        drho_i=-(eta * c / n) * N * j * y * lp * v2 * sp.Heaviside(z, 0),
        dv1_i=-(eta_v * c / n) * j * lp * y * relu(s),
        dv2_i=-(eta_v * c / n) * j * lp * y * relu(z),
        ell_prime=-1 / (1 + sp.exp(u)),
    )


@lru_cache(maxsize=None)
def _increment_funcs():
    """Lambdified per-sample increments, args (j,y,yhat,s,z,v1,v2,l',N,mu,eta,eta_v,c,n)."""
    R = derive_recursion()
    names = ("dgamma_i", "drho_i", "dv1_i", "dv2_i")
    return sp.lambdify(_NUM_ARGS, [R[k_] for k_ in names], modules="numpy", cse=True)


def lprime(y_, f):
    """l'_i = -1/(1 + exp(y_i f_i)) (overflow-safe)."""
    return -np.exp(-np.logaddexp(0.0, y_ * f))


def increments(gamma, rho, v, stats, params: Params, use_gram=True):
    """One GD step's (dgamma (2,m), drho (2,m,n), dv (2,m,2)) from the derived
    (lambdified) per-sample terms, summed over samples i."""
    p = params
    s_, z_, f = forward(gamma, rho, v, stats, p, use_gram)
    lpv = lprime(stats.y, f)
    jj = _JS[:, None, None]
    dg, dr, d1, d2 = _increment_funcs()(
        jj, stats.y, stats.yhat, s_, z_, v[..., 0:1], v[..., 1:2], lpv, stats.N,
        p.mu_norm, p.eta, p.eta_v_eff, p.c, p.n)
    bc = lambda x: np.broadcast_to(x, s_.shape)  # noqa: E731
    dv = np.stack([bc(d1).sum(-1), bc(d2).sum(-1)], axis=-1)
    return bc(dg).sum(-1), np.array(bc(dr)), dv


# ----------------------------------------------------------------------------
# 3. small-v0 linearisation
# ----------------------------------------------------------------------------
def _growing(K):
    """Growing eigenvalue of the 2x2 increment matrix K (the root of
    det(K - lambda I) that is positive for positive parameters) and the growing
    eigenvector's ratio x1/x2 = K01 / (lambda - K00)."""
    lam = sp.Symbol("lambda")
    roots = sp.solve(_pm1((K - lam * sp.eye(2)).det()), lam)
    probe = lambda r_: float(r_.subs({x: 2 for x in r_.free_symbols}))  # noqa: E731
    lam_plus = sp.simplify(max(roots, key=probe))
    ratio = sp.simplify(_pm1(K[0, 1] / (lam_plus - K[0, 0])))
    return lam_plus, ratio


@lru_cache(maxsize=None)
def linear_blocks() -> dict:
    """Linearised one-neuron blocks at l' = -1/2 (from ``derive_recursion``).

    Noise block (same-class active samples y_i = j, z_i > 0, G = I, N_i -> N,
    k of them; Y = sum_i z_i):  Y += k drho_i(v2),  v2 += sum_i dv2_i(z_i).
    Signal block (a = <w,mu> = A + j gamma, s_i = yhat_i a > 0 on its active
    samples, e_i = y_i yhat_i, q = sum_active e_i):  a += j sum dgamma_i,
    v1 += sum dv1_i.  Increment matrices K (discrete map M = I + K, gradient
    flow x' = K x), eigenvalues, growing eigenvector ratios, closed-form M^t.
    """
    R = derive_recursion()
    half = {lp: sp.Rational(-1, 2)}
    # noise block: same class y = j, active H(z) = 1
    on_z = {sp.Heaviside(z, 0): 1}
    dz = _pm1(R["drho_i"].subs(y, j).subs(half).subs(on_z))
    dv2 = _pm1(R["dv2_i"].subs(y, j).subs(half).subs(on_z))
    dY = k * dz  # dz_i is the same for every active i (N_i -> N)
    dV2 = dv2.subs(z, Y_)  # linear in z_i: the sum over i replaces z by Y
    Kn = sp.Matrix([[sp.diff(dY, Y_), sp.diff(dY, v2)], [sp.diff(dV2, Y_), sp.diff(dV2, v2)]])
    lam_n, ratio_Y = _growing(Kn)
    # signal block: y = e yhat, active H(s) = 1, s = yhat a; sum over active e_i -> q
    e = sp.Symbol("e")
    on_s = {sp.Heaviside(s, 0): 1}
    sub_s = lambda ex: _pm1(_pm1(ex.subs(y, e * yhat).subs(half).subs(on_s)).subs(s, yhat * a_))  # noqa: E731
    da = _pm1(j * sub_s(R["dgamma_i"]))
    dv1 = sub_s(R["dv1_i"])
    da, dv1 = da.subs(e, q), dv1.subs(e, q)  # linear in e
    Ks = sp.Matrix([[sp.diff(da, a_), sp.diff(da, v1)], [sp.diff(dv1, a_), sp.diff(dv1, v1)]])
    lam_s, ratio_s = _growing(Ks)
    # closed-form power of M = [[1, P], [Q, 1]]: M^t = (1/2)[[S, P D/l], [Q D/l, S]]
    P, Q = sp.symbols("P Q", real=True)
    l1 = sp.sqrt(P * Q)
    Sg = (1 + l1) ** t + (1 - l1) ** t
    Dg = (1 + l1) ** t - (1 - l1) ** t
    Mt = sp.Matrix([[Sg, P * Dg / l1], [Q * Dg / l1, Sg]]) / 2
    # sum_{u<t} M^u: replace x^t by (x^t - 1)/(x - 1) for x = 1 +- l1
    Sc = ((1 + l1) ** t - 1) / l1 + ((1 - l1) ** t - 1) / (-l1)
    Dc = ((1 + l1) ** t - 1) / l1 - ((1 - l1) ** t - 1) / (-l1)
    Mcum = sp.Matrix([[Sc, P * Dc / l1], [Q * Dc / l1, Sc]]) / 2
    return dict(
        K_noise=Kn, K_signal=Ks,
        rate_noise_gf=lam_n, rate_signal_gf=lam_s,
        rate_noise_gd=sp.log(1 + lam_n), rate_signal_gd=sp.log(1 + lam_s),
        eig_noise_gd=(1 + lam_n, 1 - lam_n), eig_signal_gd=(1 + lam_s, 1 - lam_s),
        ratio_noise_sum=ratio_Y,                    # Y / v2
        ratio_noise=sp.simplify(ratio_Y / k),       # z_i / v2 (mean over I)
        ratio_signal=sp.simplify(_pm1(j * ratio_s)),  # j a / v1 = j <w,mu> / v1
        power=(P, Q, Mt), power_cum=(P, Q, Mcum),
    )


@lru_cache(maxsize=None)
def _linear_funcs():
    L = linear_blocks()
    P, Q, Mt = L["power"]
    _, _, Mc = L["power_cum"]
    fl = lambda ex, args: sp.lambdify(args, ex, modules="numpy", cse=True)  # noqa: E731
    return dict(
        ratio_noise=fl(L["ratio_noise"].subs(N, S_N / k), (eta, eta_v, c, n, k, S_N)),
        ratio_signal=fl(L["ratio_signal"], (eta, eta_v, c, n, mu)),
        rate_noise_gd=fl(L["rate_noise_gd"].subs(N, S_N / k), (eta, eta_v, c, n, k, S_N)),
        rate_signal_gd=fl(L["rate_signal_gd"], (eta, eta_v, c, n, mu, q)),
        Mt=fl(list(Mt), (P, Q, t)), Mcum=fl(list(Mc), (P, Q, t)),
    )


def predicted_noise_ratio(params: Params, k_active, SN_active):
    """Growing-eigenvector ratio mean_{i in I} z_i / v2 = sqrt(eta S_N/eta_v)/k.

    With heterogeneous N_i the eigenvector is z_i/v2 = alpha N_i / lambda,
    lambda = sqrt(alpha beta S_N), whose mean over I is the symmetric formula
    sqrt(eta N / (k eta_v)) at N = S_N / k.  NaN where k = 0.
    """
    p = params
    kk = np.asarray(k_active, float)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = _linear_funcs()["ratio_noise"](p.eta, p.eta_v_eff, p.c, p.n, kk, SN_active)
    return np.where(kk > 0, out, np.nan)


def predicted_signal_ratio(params: Params) -> float:
    """Growing-eigenvector ratio j <w, mu> / v1 = ||mu|| sqrt(eta / eta_v)."""
    p = params
    return float(_linear_funcs()["ratio_signal"](p.eta, p.eta_v_eff, p.c, p.n, p.mu_norm))


def predicted_rates(params: Params, k_active, SN_active, q_net):
    """Per-step log growth of the discrete maps: (noise, signal).

    noise: log(1 + c sqrt(eta eta_v S_N) / (2n)); signal: log(1 + c q ||mu|| sqrt(eta eta_v)/(2n)).
    """
    p, F = params, _linear_funcs()
    kk = np.asarray(k_active, float)
    with np.errstate(invalid="ignore", divide="ignore"):
        rn = F["rate_noise_gd"](p.eta, p.eta_v_eff, p.c, p.n, kk, SN_active)
        rs = F["rate_signal_gd"](p.eta, p.eta_v_eff, p.c, p.n, p.mu_norm, np.asarray(q_net, float))
    return np.where(kk > 0, rn, np.nan), rs


def _power(P, Q, tt, cumulative=False):
    """Entries (m00, m01, m10, m11) of M^t (or sum_{u<t} M^u), M = [[1, P], [Q, 1]],
    from the sympy closed form; PQ > 0 assumed, PQ = 0 gives M = I (limit)."""
    F = _linear_funcs()["Mcum" if cumulative else "Mt"]
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
      f_i(t) from SPEC 4 with these s, z, v.  Arrays over t = 0..steps.
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
# 2. stage 1
# ----------------------------------------------------------------------------
@lru_cache(maxsize=None)
def f_threshold_expr():
    """|f| at which |l' + 1/2| = tol: solve 1/2 - 1/(1 + e^f) = tol for f."""
    ff = sp.Symbol("f", positive=True)
    sol = sp.solve(sp.Eq(sp.Rational(1, 2) + spec4_recursion()["ell_prime"].subs(u, ff), tol), ff)
    return sp.simplify(sol[0])


def f_threshold(tol_: float) -> float:
    """Numeric |f| threshold = log((1 + 2 tol)/(1 - 2 tol)) = 2 artanh(2 tol)."""
    return float(f_threshold_expr().subs(tol, tol_))


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
# 4. mechanisms measured on a trajectory
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
    """
    p, st = traj.params, traj.stats
    _, z_, f = traj.preactivations()
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
    nd = ("step", "j", "r")
    return {
        "noise_ratio": (nd, ratio),
        "noise_ratio_pred": (nd, predicted_noise_ratio(p, kk, SN)),
        "noise_active": (nd, kk.astype(np.int64)),
        "signal_ratio": (nd, sig),
        "gamma_ratio": (nd, gam),
        "signal_ratio_pred": (("step",), np.full(R, predicted_signal_ratio(p))),
        "wv_norm_ratio": (nd, wv),
        "balance": (nd, traj.balance()),
        "v_rel_change": (nd, np.linalg.norm(traj.v - p.v0, axis=-1) / (math.sqrt(2) * p.v0)),
        "lprime_dev": (("step",), np.max(np.abs(lprime(st.y, f) + 0.5), -1)),
    }


MECHANISM_ATTRS = {
    "noise_ratio": dict(long_name="<w_{j,r}, xi_i>/v_{j,r,2}, mean over active same-class i", units="1"),
    "noise_ratio_pred": dict(long_name="growing-eigenvector noise ratio sqrt(eta S_N/eta_v)/k", units="1"),
    "noise_active": dict(long_name="number k of active same-class samples", units="1"),
    "signal_ratio": dict(long_name="j <w_{j,r}, mu>/v_{j,r,1}", units="1"),
    "gamma_ratio": dict(long_name="gamma_{j,r}/v_{j,r,1}", units="1"),
    "signal_ratio_pred": dict(long_name="growing-eigenvector signal ratio ||mu|| sqrt(eta/eta_v)", units="1"),
    "wv_norm_ratio": dict(long_name="||w_{j,r}||/||v_{j,r}||", units="1"),
    "balance": dict(long_name="||v_{j,r}||^2 - ||w_{j,r}||^2", units="1"),
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
# 5. conditions
# ----------------------------------------------------------------------------
LAW_VARS = ("v0", "n", "d", "m", "sigma_p")


@lru_cache(maxsize=None)
def laws() -> dict:
    """Candidate laws mu*(v0, n, d, m, sigma_p), each with one constant C.

    large_v0       C sigma_p (d/n)^(1/4)          (SPEC 8, paper as quoted)
    small_v0_quoted C sqrt(sigma_p / (m v0^2))    (m v0^2 mu^2/sigma_p ~ 1)
    growth_rate    signal rate = noise rate solved for ||mu|| with q = n/2,
                   k = n/4, N = sigma_p^2 d (symmetry expectations), times C
    """
    L = linear_blocks()
    eq = sp.Eq(L["rate_signal_gf"], L["rate_noise_gf"])
    mu_eq = sp.solve(eq, mu)[0]
    growth = sp.simplify(mu_eq.subs({q: n / 2, k: n / 4, N: sigma_p**2 * d}))
    return {
        "large_v0": C * sigma_p * (d / n) ** sp.Rational(1, 4),
        "small_v0_quoted": C * sp.sqrt(sigma_p / (m * v0**2)),
        "growth_rate": C * growth,
        "growth_rate_general": mu_eq,  # before the symmetry substitution (no C)
    }


FIT_LAWS = ("large_v0", "small_v0_quoted", "growth_rate")


def fit_laws(table) -> dict:
    """Least-squares fit of log C for each law: log C = mean(log mu* - log g),
    g = law at C = 1.  ``table[name]`` gives arrays for v0, n, d, m, sigma_p,
    mu_star (dict, structured array, DataFrame).  Returns per law the fitted C
    and the residual RMS in log mu*, and 'best' (smallest RMS)."""
    cols = {k_: np.asarray(table[k_], float) for k_ in LAW_VARS + ("mu_star",)}
    ok = np.isfinite(cols["mu_star"]) & (cols["mu_star"] > 0)
    logmu = np.log(cols["mu_star"][ok])
    out = {}
    syms = sp.symbols(" ".join(("v_0", "n", "d", "m", "sigma_p")), positive=True)
    for name in FIT_LAWS:
        g = sp.lambdify(syms, laws()[name].subs(C, 1), modules="numpy", cse=True)
        logg = np.log(np.broadcast_to(g(*(cols[k_][ok] for k_ in LAW_VARS)), logmu.shape))
        logC = float(np.mean(logmu - logg))
        res = logmu - logg - logC
        out[name] = dict(C=math.exp(logC), rms=float(np.sqrt(np.mean(res**2))),
                         formula=str(laws()[name]))
    out["best"] = min(FIT_LAWS, key=lambda k_: out[k_]["rms"])
    return out


def fit_exponents(table) -> dict:
    """Free power law log mu* = log C + sum_x e_x log x over the variables that vary."""
    from .boundary import fit_power_law

    f = fit_power_law({k_: table[k_] for k_ in LAW_VARS}, table["mu_star"])
    return dict(C=float(np.exp(f["const"])), exponents=f["exponents"], rms=f["rms"])


# ----------------------------------------------------------------------------
# 6. formulas and report
# ----------------------------------------------------------------------------
def formulas() -> dict:
    """Derived formulas, name -> {'expr', 'text' (pretty), 'latex'}."""
    R, L, W = derive_recursion(), linear_blocks(), laws()
    items = {
        "dgamma_i": R["dgamma_i"], "drho_i": R["drho_i"],
        "dv1_i": R["dv1_i"], "dv2_i": R["dv2_i"], "l'": R["ell_prime"],
        "K_noise": L["K_noise"], "K_signal": L["K_signal"],
        "rate_noise_gf": L["rate_noise_gf"], "rate_signal_gf": L["rate_signal_gf"],
        "rate_noise_gd": L["rate_noise_gd"], "rate_signal_gd": L["rate_signal_gd"],
        "ratio_noise": L["ratio_noise"], "ratio_signal": L["ratio_signal"],
        "f_stage1": f_threshold_expr(),
        **{f"law_{k_}": W[k_] for k_ in FIT_LAWS},
    }
    return {k_: dict(expr=v_, text=sp.pretty(v_, use_unicode=False), latex=sp.latex(v_))
            for k_, v_ in items.items()}


def _summ(x):
    x = np.asarray(x, float)
    x = x[np.isfinite(x)]
    if not x.size:
        return dict(median=float("nan"), q10=float("nan"), q90=float("nan"), count=0)
    q10, med, q90 = np.quantile(x, [0.1, 0.5, 0.9])
    return dict(median=float(med), q10=float(q10), q90=float(q90), count=int(x.size))


def summarize(traj: Trajectory, tol: float = 0.1) -> dict:
    """Predicted vs measured mechanisms of one trajectory (see ``report``)."""
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


def report(params: Params, level: str = "exact", sampler: str = "wishart",
           tol: float = 0.1) -> dict:
    """Simulate ``params`` and compare the theory with the run (``summarize``)."""
    return summarize(simulate(params, level, sampler, 1), tol)


def format_report(rep: dict) -> str:
    """Plain-text table of a ``report`` dict."""
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


# ----------------------------------------------------------------------------
# 5b. boundaries measured by the solver, fitted per regime
# ----------------------------------------------------------------------------
REGIMES = {"small v0": ((1e-3, 3e-3, 1e-2), 1e-3), "large v0": ((0.3, 1.0, 3.0), 1.0)}


D_GRID = (500, 1000, 2000, 4000, 8000, 16000, 32000, 64000)
N_GRID = (10, 20, 40, 80, 160)


def boundary_table(params: Params, v0s, grid_v0, d_grid=D_GRID, n_grid=N_GRID, n_seeds=8, level="exact", sampler="wishart",
                   progress=None) -> dict:
    """mu* measured by ``find_mu_star`` at each v0 (other parameters as given)
    and over the d and n grids at ``grid_v0``: a table for ``fit_laws``."""
    from .boundary import find_mu_star

    points = [params.replace(v0=v) for v in v0s]
    base = params.replace(v0=grid_v0)
    points += [base.replace(d=int(x)) for x in d_grid if x != base.d]
    points += [base.replace(n=int(x)) for x in n_grid if x != base.n]
    rows, guess = [], None
    for p in points:
        b = find_mu_star(p, level, sampler, n_seeds, (0.25,), guess=guess)
        guess = b.star() if np.isfinite(b.star()) else None
        rows.append((p.v0, p.n, p.d, p.m, p.sigma_p, b.star()))
        if progress:
            progress(1)
    cols = np.array(rows, float).T
    return dict(zip(LAW_VARS + ("mu_star",), cols))


def fit_regimes(params: Params, n_seeds=8, level="exact", sampler="wishart",
                progress=None) -> dict:
    """For each regime of ``REGIMES``: the measured table, the fit of every
    law of ``laws()`` (constant C, rms of log mu*) and the free power law."""
    out = {}
    for name, (v0s, grid_v0) in REGIMES.items():
        table = boundary_table(params, v0s, grid_v0, n_seeds=n_seeds, level=level,
                               sampler=sampler, progress=progress)
        out[name] = dict(table=table, laws=fit_laws(table), free=fit_exponents(table))
    return out


def regime_points() -> int:
    """Number of solver calls ``fit_regimes`` makes (for progress bars)."""
    base = Params()
    return sum(len(v0s) + sum(x != base.d for x in D_GRID) + sum(x != base.n for x in N_GRID)
               for v0s, _ in REGIMES.values())


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
