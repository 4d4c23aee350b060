"""Symbolic theory of the two-layer dynamics (docs/theory.md#exact-recursion, #identities, #mechanisms-and-laws), sympy only.

The single source of the printed formulas and of the law exponents: the
recursion derived by differentiation, its small-v0 linearisation, the stage-1
threshold and the candidate laws mu*(v0, n, d, m, sigma_p).  Numbers come from
``lambdify(cse=True)``; the hand-written numpy closed forms in
``dynamics.theory.measure`` are tested against these (pydy pattern).

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

from functools import lru_cache

import numpy as np
import sympy as sp

from ..params import Params
from ..run import reduced_forward
from .measure import _JS, lprime

__all__ = ["relu", "activation_expr", "increment_funcs", "derive_recursion", "spec4_recursion", "increments", "linear_blocks",
           "linear_funcs", "f_threshold_expr", "f_threshold", "LAW_VARS", "FIT_LAWS",
           "laws", "law_funcs", "law_exponents", "formulas"]

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
    """ReLU(x) = x H(x) with H(0) = 0 (docs/theory.md#network-and-training: ReLU'(0) = 0)."""
    return x * sp.Heaviside(x, 0)


def activation_expr(x, activation: str = "relu"):
    """sigma(x) of ``Params.activation`` (docs/theory.md#general-reduction): relu = x H(x); relu^q =
    x^q for x > 0 (else 0); leaky:alpha = x for x > 0, alpha x otherwise."""
    kind, args = Params(activation=activation).activation_spec
    if kind == "relu":
        return relu(x)
    if kind == "relu^":
        return sp.Piecewise((x ** sp.nsimplify(args[0]), x > 0), (0, True))
    return sp.Piecewise((x, x > 0), (sp.nsimplify(args[0]) * x, True))


def _pm1(expr):
    """Reduce powers of the sign symbols j, y, yhat (x^2 = 1, 1/x = x)."""
    return sp.expand(expr).replace(
        lambda e: e.is_Pow and e.base in PM1 and e.exp.is_integer,
        lambda e: e.base ** (int(e.exp) % 2))


def _no_delta(expr):
    """x DiracDelta(x) = 0: drop Dirac terms from differentiating x H(x)."""
    return expr.replace(sp.DiracDelta, lambda *args: sp.S.Zero)


def _lambdify(args, expr):
    return sp.lambdify(args, expr, modules="numpy", cse=True)


# ----------------------------------------------------------------------------
# 1. the recursion, derived
# ----------------------------------------------------------------------------
@lru_cache(maxsize=None)
def derive_recursion(activation: str = "relu") -> dict:
    """Per-sample GD increments of one neuron (j, r), derived by differentiation.

    One sample's loss is L_i = ell(y_i f_i)/n, ell(u) = log(1 + exp(-u)), with
    f_i = j c [v1 ReLU(s) + v2 ReLU(z)] + F_rest (other neurons).  Chain rule:
    dL_i/dx = (1/n) l'_i y dF/dx, l'_i = ell'(y f_i).  Since s = <w, yhat mu>
    and z = <w, xi_i>, grad_w L_i = dL_i/ds yhat mu + dL_i/dz xi_i; the step
    -eta grad_w L_i is projected on w = w0 + j gamma mu/||mu||^2 + sum rho xi/N
    (coefficients of the independent vectors mu, xi_i).  Totals: dgamma, dv
    sum the per-sample terms over i; drho_i has only sample i's term.

    Returns sympy expressions: dgamma_i, drho_i, dv1_i, dv2_i, and the loss
    derivative 'ell_prime' (= -1/(1 + exp(u))).  ``activation``: any of
    ``Params.activation`` (docs/theory.md#general-reduction; the coefficient matching needs the paper's
    data, mu orthogonal to every xi_i).
    """
    sig = lambda x: activation_expr(x, activation)  # noqa: E731
    f = j * c * (v1 * sig(s) + v2 * sig(z)) + F_rest
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
    """docs/theory.md#exact-recursion per-sample terms, typed in from the theory page (for the test)."""
    return dict(
        dgamma_i=-(eta * c / n) * mu**2 * v1 * lp * y * yhat * sp.Heaviside(s, 0),
        drho_i=-(eta * c / n) * N * j * y * lp * v2 * sp.Heaviside(z, 0),
        dv1_i=-(eta_v * c / n) * j * lp * y * relu(s),
        dv2_i=-(eta_v * c / n) * j * lp * y * relu(z),
        ell_prime=-1 / (1 + sp.exp(u)),
    )


@lru_cache(maxsize=None)
def increment_funcs(activation: str = "relu"):
    """Lambdified per-sample increments (dgamma_i, drho_i, dv1_i, dv2_i) of
    ``derive_recursion(activation)``, args (j,y,yhat,s,z,v1,v2,l',N,mu,eta,eta_v,c,n)."""
    R = derive_recursion(activation)
    return _lambdify(_NUM_ARGS, [R[k_] for k_ in ("dgamma_i", "drho_i", "dv1_i", "dv2_i")])


def increments(gamma, rho, v, stats, params: Params, use_gram=True):
    """One GD step's (dgamma (2,m), drho (2,m,n), dv (2,m,2)) from the derived
    (lambdified) per-sample terms, summed over samples i."""
    p = params
    s_, z_, f = reduced_forward(gamma, rho, v, stats, p, use_gram)
    lpv = lprime(stats.y, f)
    jj = _JS[:, None, None]
    dg, dr, d1, d2 = increment_funcs()(
        jj, stats.y, stats.yhat, s_, z_, v[..., 0:1], v[..., 1:2], lpv, stats.N,
        p.mu_norm, p.eta, p.eta_v_eff, p.c, p.n)
    bc = lambda x: np.broadcast_to(x, s_.shape)  # noqa: E731
    dv = np.stack([bc(d1).sum(-1), bc(d2).sum(-1)], axis=-1)
    return bc(dg).sum(-1), np.array(bc(dr)), dv


# ----------------------------------------------------------------------------
# 2. small-v0 linearisation
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
def linear_funcs() -> dict:
    """Lambdified closed forms of ``linear_blocks``, the reference for the numpy
    functions ``dynamics.theory.measure.CLOSED_FORMS`` (same keys and arguments):

    ratio_noise, rate_noise_gd (eta, eta_v, c, n, k, S_N)  [N = S_N/k]
    ratio_signal (eta, eta_v, c, n, mu);  rate_signal_gd (eta, eta_v, c, n, mu, q)
    Mt, Mcum (P, Q, t) -> the 4 entries of M^t, sum_{u<t} M^u, M = [[1, P], [Q, 1]]
    """
    L = linear_blocks()
    P, Q, Mt = L["power"]
    _, _, Mc = L["power_cum"]
    per_k = {N: S_N / k}
    return dict(
        ratio_noise=_lambdify((eta, eta_v, c, n, k, S_N), L["ratio_noise"].subs(per_k)),
        ratio_signal=_lambdify((eta, eta_v, c, n, mu), L["ratio_signal"]),
        rate_noise_gd=_lambdify((eta, eta_v, c, n, k, S_N), L["rate_noise_gd"].subs(per_k)),
        rate_signal_gd=_lambdify((eta, eta_v, c, n, mu, q), L["rate_signal_gd"]),
        Mt=_lambdify((P, Q, t), list(Mt)), Mcum=_lambdify((P, Q, t), list(Mc)),
    )


# ----------------------------------------------------------------------------
# 3. stage 1
# ----------------------------------------------------------------------------
@lru_cache(maxsize=None)
def f_threshold_expr():
    """|f| at which |l' + 1/2| = tol: solve 1/2 - 1/(1 + e^f) = tol for f."""
    ff = sp.Symbol("f", positive=True)
    sol = sp.solve(sp.Eq(sp.Rational(1, 2) + spec4_recursion()["ell_prime"].subs(u, ff), tol), ff)
    return sp.simplify(sol[0])


def f_threshold(tol_: float) -> float:
    """|f| threshold = log((1 + 2 tol)/(1 - 2 tol)) = 2 artanh(2 tol), from sympy."""
    return float(f_threshold_expr().subs(tol, tol_))


# ----------------------------------------------------------------------------
# 4. conditions: candidate laws for mu*
# ----------------------------------------------------------------------------
LAW_VARS = ("v0", "n", "d", "m", "sigma_p")
_LAW_SYMS = (v0, n, d, m, sigma_p)
FIT_LAWS = ("large_v0", "small_v0_quoted", "growth_rate")
_LAW_TITLES = {"large_v0": "large v0 / fixed output", "small_v0_quoted": "quoted small v0",
               "growth_rate": "growth-rate ratio (hypothesis)"}


@lru_cache(maxsize=None)
def laws() -> dict:
    """Candidate laws mu*(v0, n, d, m, sigma_p), each with one constant C.

    large_v0       C sigma_p (d/n)^(1/4)          (docs/theory.md#mechanisms-and-laws, paper as quoted)
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


@lru_cache(maxsize=None)
def law_funcs() -> dict:
    """Each law of ``FIT_LAWS`` at C = 1, lambdified with args ``LAW_VARS``."""
    return {name: _lambdify(_LAW_SYMS, laws()[name].subs(C, 1)) for name in FIT_LAWS}


def _monomial(expo: dict) -> str:
    """'sigma_p (d/n)^(1/4)' from rational exponents {var: e}."""
    def power(name, e_):
        return name if e_ == 1 else f"{name}^{e_}" if e_.is_Integer and e_ > 0 else f"{name}^({e_})"

    ed, en = expo["d"], expo["n"]
    dn = ed != 0 and ed == -en  # written as (d/n)^e
    parts = [power(k_, e_) for k_, e_ in expo.items()
             if e_ != 0 and not (dn and k_ in ("d", "n"))]
    return " ".join(parts + ([power("(d/n)", ed)] if dn else [])) or "1"


@lru_cache(maxsize=None)
def law_exponents() -> dict:
    """Exponents of mu* in ``LAW_VARS`` for each law of ``FIT_LAWS``, read off the
    sympy expression: e_x = d log(mu*) / d log x (x = exp(X), differentiate in X).

    Returns {law: dict(exponents={var: float}, label=str)}, e.g. large_v0:
    exponents v0 0, n -1/4, d 1/4, m 0, sigma_p 1, label
    'large v0 / fixed output: sigma_p (d/n)^(1/4)'.  Raises ValueError for a
    law that is not a power law.
    """
    logs = sp.symbols("X0:%d" % len(_LAW_SYMS), real=True)
    to_exp = {x: sp.exp(X) for x, X in zip(_LAW_SYMS, logs)}
    out = {}
    for name in FIT_LAWS:
        log_law = sp.expand_log(sp.log(laws()[name].subs(C, 1).subs(to_exp)), force=True)
        expo = {}
        for var, X in zip(LAW_VARS, logs):
            e_ = sp.nsimplify(sp.simplify(sp.diff(log_law, X)))
            if not e_.is_Rational:
                raise ValueError(f"law {name} is not a power law in {var}: exponent {e_}")
            expo[var] = e_
        out[name] = dict(exponents={k_: float(e_) for k_, e_ in expo.items()},
                         label=f"{_LAW_TITLES[name]}: {_monomial(expo)}")
    return out


# ----------------------------------------------------------------------------
# 5. formulas
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
