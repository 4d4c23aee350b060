"""One activation pattern's max-margin program (the cone program of
``dynamics.limit``'s docstring), solved by column generation over its noise
units (docs/guide/time-and-limit.md, "The program").

Units of one class with the same pattern and signs are merged into groups
(same OPT; the optimum is split equally among the members).  Most noise
groups are zero at the optimum, so the program is first solved with a few of
them and every dropped group g is priced by its dual norm

    D_g = min_{nu >= 0} || L^T (h_g + sigma_g * nu) ||,
    h_g = y * c j s_2 act_i(S_g) * lambda,   sigma_g = 2 S_g - 1,

(a nonnegative least-squares problem): with D_g <= 1 the restricted optimum
with beta_g = 0 is an optimum of the whole program (its lambda and nu are
dual feasible there), so groups with D_g > 1 - PRICE_SLACK join and the
program is solved again until none is left.  The restricted programs are
built directly in CSC (variables p, t, z with z = L beta; rows: margins,
p >= 0, pattern signs of z, the cones (t_g, L^{-1} z_g)) and solved by
Clarabel, SCS as the fallback; when either fails on a restricted program
the whole program is solved."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
import scipy.sparse as sp

KEEP0 = 8              # noise groups of a first restricted program without a start
PRICE_SLACK = 1e-3     # dropped groups with D_g > 1 - PRICE_SLACK join the program
NONZERO = 1e-7         # units above this fraction of the largest seed the next program


@dataclass
class Optimum:
    """Solution of one pattern's program: p (2, m) signal magnitudes, beta
    (2, m, r) noise units (s_u-oriented), lam (n) margin multipliers, nu
    (2, m, n) pattern multipliers (of a dropped group: its pricing NNLS)."""

    opt: float
    p: np.ndarray
    beta: np.ndarray
    lam: np.ndarray
    nu: np.ndarray
    solver: str
    ok: bool = True
    info: dict = field(default_factory=dict)

    def nonzero_units(self) -> np.ndarray:
        """Boolean (2, m): noise units above NONZERO of the largest unit."""
        size = np.linalg.norm(self.beta, axis=2)
        top = max(size.max(initial=0.0), self.p.max(initial=0.0))
        return size > NONZERO * top


def _groups(keys):
    """Group indices of equal keys: (list of member index arrays)."""
    table = {}
    for idx, k in enumerate(keys):
        table.setdefault(k, []).append(idx)
    return [np.array(v) for v in table.values()]


class Layout(NamedTuple):
    """Merged units of a pattern: member lists, margin coefficients of the
    signal groups sig_coef (n, Gs) and of the noise groups noi_coef (Gn, n)
    (c j s_2 act_i(S)), pattern signs sigma (Gn, n)."""

    m: int
    sig: list
    noi: list
    sig_coef: np.ndarray
    noi_coef: np.ndarray
    sigma: np.ndarray


def layout(prob, pat) -> Layout:
    """``Layout`` of pattern ``pat`` (``limit.Pattern``) on problem ``prob``."""
    n, m = prob.n, pat.sa.shape[1]
    js = np.repeat([1.0, -1.0], m)
    sa, s1, s2 = pat.sa.ravel(), pat.s1.ravel(), pat.s2.ravel()
    act = pat.act.reshape(2 * m, n)
    sig = _groups([(js[u], sa[u], s1[u]) for u in range(2 * m)])
    noi = _groups([(js[u], s2[u], act[u].tobytes()) for u in range(2 * m)])
    rep_s = np.array([g[0] for g in sig], dtype=int)
    rep_n = np.array([g[0] for g in noi], dtype=int)
    sig_coef = (prob.c * prob.mu * (js * s1)[rep_s][None, :]
                * prob.act(prob.yhat[:, None] * sa[rep_s][None, :]))
    noi_coef = prob.c * (js * s2)[rep_n][:, None] * np.where(act[rep_n], 1.0, prob.alpha)
    return Layout(m, sig, noi, sig_coef, noi_coef, 2.0 * act[rep_n] - 1.0)


def _cone_template(prob):
    """Column structure of -L^{-1} (lower triangular), cached on the problem:
    (rows, values, count per column, start of column k in a z block, cone
    positions in a z block)."""
    d = prob.__dict__
    if "_cone_template" not in d:
        Linv, n = prob.Linv, prob.n
        rows = [np.nonzero(Linv[:, k])[0] for k in range(n)]
        cnt = np.array([r.size for r in rows])
        starts = np.concatenate([[0], np.cumsum(2 + cnt)])[:-1]
        pos = np.concatenate([starts[k] + 2 + np.arange(cnt[k]) for k in range(n)])
        d["_cone_template"] = (np.concatenate(rows),
                               np.concatenate([-Linv[r, k] for k, r in enumerate(rows)]),
                               cnt, starts, pos)
    return d["_cone_template"]


def build_program(prob, lay: Layout, keep: np.ndarray):
    """The restricted program min q.x s.t. b - A x in R_+^n_lin x SOC^(Gk),
    noise groups ``keep`` (int array): (A (CSC), b, q, n_lin).  Variables:
    p (Gs), t (Gk), z (Gk, n); rows: n margins, Gs rows p >= 0, Gk n pattern
    rows, then per group the cone rows (t_g, L^{-1} z_g)."""
    n = prob.n
    sig_coef, noi_coef, sigma = lay.sig_coef, lay.noi_coef[keep], lay.sigma[keep]
    Gs, Gk = sig_coef.shape[1], noi_coef.shape[0]
    tpl_rows, tpl_vals, cnt, starts, pos_cone = _cone_template(prob)
    n_lin = n + Gs + Gk * n
    nrow, nv = n_lin + Gk * (n + 1), Gs + Gk + Gk * n
    p_idx = np.empty((Gs, n + 1), dtype=np.int32)
    p_idx[:, :n] = np.arange(n)
    p_idx[:, n] = n + np.arange(Gs)
    p_val = np.empty((Gs, n + 1))
    p_val[:, :n] = -(prob.y[:, None] * sig_coef).T
    p_val[:, n] = -1.0
    g = np.arange(Gk)[:, None]
    z_idx = np.empty((Gk, 2 * n + cnt.sum()), dtype=np.int32)
    z_val = np.empty(z_idx.shape)
    z_idx[:, starts] = np.arange(n)[None, :]                          # margin row i
    z_idx[:, starts + 1] = n + Gs + g * n + np.arange(n)[None, :]      # pattern row
    z_idx[:, pos_cone] = n_lin + g * (n + 1) + 1 + tpl_rows[None, :]   # cone rows
    z_val[:, starts] = -(prob.y[None, :] * noi_coef)
    z_val[:, starts + 1] = -sigma
    z_val[:, pos_cone] = tpl_vals[None, :]
    indices = np.concatenate([p_idx.ravel(), (n_lin + (n + 1) * np.arange(Gk)).astype(np.int32),
                              z_idx.ravel()])
    data = np.concatenate([p_val.ravel(), -np.ones(Gk), z_val.ravel()])
    colcnt = np.concatenate([np.full(Gs, n + 1), np.ones(Gk, dtype=int), np.tile(2 + cnt, Gk)])
    indptr = np.concatenate([[0], np.cumsum(colcnt)]).astype(np.int32)
    A = sp.csc_matrix((data, indices, indptr), shape=(nrow, nv))
    b = np.zeros(nrow)
    b[:n] = -1.0
    q = np.zeros(nv)
    q[:Gs + Gk] = 1.0
    return A, b, q, n_lin


def dual_norms(prob, lay: Layout, lam: np.ndarray, idx: np.ndarray):
    """D_g = min_{nu >= 0} ||L^T (h_g + sigma_g nu)|| of the noise groups
    ``idx`` at multipliers ``lam`` (module docstring): (D (len(idx),), nu).
    nu = 0 bounds D_g from above; the NNLS runs only where that bound
    exceeds 1 - PRICE_SLACK."""
    from scipy.optimize import nnls

    L = prob.L
    H = prob.y[None, :] * lay.noi_coef[idx] * lam[None, :]
    out = np.linalg.norm(H @ L, axis=1)
    nus = np.zeros((idx.size, prob.n))
    for k, g in enumerate(idx):
        if out[k] <= 1.0 - PRICE_SLACK:
            continue
        nus[k], out[k] = nnls(L.T * lay.sigma[g][None, :], -(L.T @ H[k]))
    return out, nus


def _initial_keep(prob, lay: Layout, units) -> np.ndarray:
    """Groups of the first restricted program: those with a member in
    ``units`` (boolean (2, m), e.g. the previous optimum's nonzero units and
    the flipped unit), else the KEEP0 groups of largest ||L^T h_g|| at
    lambda = 1 (D_g's bound with nu = 0)."""
    keep = np.zeros(len(lay.noi), bool)
    if units is not None:
        flat = np.asarray(units).ravel()
        keep[:] = [flat[members].any() for members in lay.noi]
    if not keep.any():  # rank by the bound of D_g with nu = 0 at lambda = 1
        d = np.linalg.norm((prob.y[None, :] * lay.noi_coef) @ prob.L, axis=1)
        keep[np.argsort(-d, kind="stable")[:KEEP0]] = True
    return keep


def solve_pattern(prob, pat, units=None) -> Optimum:
    """The optimum of pattern ``pat``'s program (module docstring), by
    column generation from the groups of ``units`` (``_initial_keep``).
    info: conic iterations, rounds, groups in the last program."""
    n = prob.n
    lay = layout(prob, pat)
    Gs, Gn, m = lay.sig_coef.shape[1], len(lay.noi), lay.m
    keep = _initial_keep(prob, lay, units)
    rounds, iters = 0, 0
    while True:
        rounds += 1
        kidx = np.nonzero(keep)[0]
        A, b, q, n_lin = build_program(prob, lay, kidx)
        x, z, solver, info = _conic(A, b, q, n_lin, [n + 1] * kidx.size)
        iters += info.get("iterations", 0)
        didx = np.nonzero(~keep)[0]
        if x is None or solver != "clarabel":
            if didx.size:
                keep[:] = True  # a restricted program in trouble: the whole program
                continue
            break
        if not didx.size:
            break
        d, nus = dual_norms(prob, lay, z[:n], didx)
        if not np.any(d > 1.0 - PRICE_SLACK):
            break
        keep[didx[d > 1.0 - PRICE_SLACK]] = True
    info = dict(info, iterations=iters, rounds=rounds, groups=int(kidx.size))
    if x is None:
        return Optimum(np.nan, np.zeros((2, m)), np.zeros((2, m, n)), np.zeros(n),
                       np.zeros((2, m, n)), solver, ok=False, info=info)
    lam = z[:n]
    Gk = kidx.size
    bb = np.zeros((Gn, n))
    zp = np.zeros((Gn, n))
    bb[kidx] = x[Gs + Gk:].reshape(Gk, n) @ prob.Linv.T
    zp[kidx] = z[n + Gs:n_lin].reshape(Gk, n)
    if didx.size:  # the pricing's multipliers of the dropped groups
        zp[didx] = nus
    p = np.zeros(2 * m)
    beta = np.zeros((2 * m, n))
    nu = np.zeros((2 * m, n))
    for k, members in enumerate(lay.sig):
        p[members] = max(x[k], 0.0) / len(members)
    for k, members in enumerate(lay.noi):
        beta[members] = bb[k] / len(members)
        nu[members] = zp[k]
    opt = float(p.sum() + np.linalg.norm(beta, axis=1).sum())
    return Optimum(opt, p.reshape(2, m), beta.reshape(2, m, n), lam.copy(),
                   nu.reshape(2, m, n), solver, info=info)


def _conic(A, b, q, n_lin, socs):
    """min q.x s.t. b - A x in R_+^n_lin x SOC(socs): (x, z, solver, info),
    x None when both Clarabel and SCS fail."""
    import clarabel

    P = sp.csc_matrix((q.size, q.size))
    cones = [clarabel.NonnegativeConeT(n_lin)] + [clarabel.SecondOrderConeT(k) for k in socs]
    st = clarabel.DefaultSettings()
    st.verbose = False
    st.max_iter = 200
    st.max_threads = 1                        # one thread: worker processes parallelise
    st.presolve_enable = False                # nothing to presolve (no free rows)
    st.chordal_decomposition_enable = False   # no PSD cones
    st.input_sparse_dropzeros = True          # ReLU's zero margin entries: not in the KKT
    st.iterative_refinement_max_iter = 1
    sol = clarabel.DefaultSolver(P, q, A, b, cones, st).solve()
    status = str(sol.status)
    if status in ("Solved", "SolverStatus.Solved"):
        return np.asarray(sol.x), np.asarray(sol.z), "clarabel", {"iterations": sol.iterations}
    import scs

    data = dict(P=P, A=A, b=b, c=q)
    out = scs.SCS(data, dict(l=n_lin, q=list(socs)), verbose=False, eps_abs=1e-9,
                  eps_rel=1e-9, max_iters=200_000).solve()
    if out["info"]["status"] in ("solved", "solved_inaccurate"):
        return (np.asarray(out["x"]), np.asarray(out["y"]), "scs",
                {"clarabel": status, "scs": out["info"]["status"]})
    return None, None, "none", {"clarabel": status, "scs": out["info"]["status"]}
