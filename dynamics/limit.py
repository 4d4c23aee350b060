"""The limit t -> infinity, exactly: the max-margin program of the activation
pattern (docs/guide/time-and-limit.md).

Depth 1, ReLU or leaky ReLU, projected noise, trained v.  Each filter (j, r)
splits into two 2-homogeneous units, a signal unit (a, v_1), a = <w, e_1>,
and a noise unit (w_perp, v_2).  For a fixed activation pattern and signs of
v, with u^S = v_1 a and u^N = v_2 w_perp = sum_k b_k xi_k, the max-margin
problem ``min ||theta||^2 / 2  s.t.  y_i f_i >= 1`` is the second-order cone
program

    min  sum_u p_u + sum_u ||beta_u||
    s.t. y_i c sum_{signal u} j_u s_u ||mu|| act(yhat_i sa_u) p_u
         + y_i c sum_{noise u} j_u s_u act_i(S_u) (L beta_u)_i >= 1     (margins, lambda_i)
         p_u >= 0                                                       (one row per unit)
         (2 S_{u,i} - 1) (L beta_u)_i >= 0                              (pattern, nu_{u,i})

with p_u = |u^S|, s_u = sign(v), sa_u = sign(a), act(1) = 1, act(-1) = -alpha
(0 for ReLU), act_i(S) = 1 if S_i else alpha, and beta_u = s_u (coordinates
of u^N in an orthonormal basis of span{xi}): with K = L L^T the Gram
<xi_k, xi_i>, <u^N, xi_i> = s_u (L beta_u)_i and ||u^N|| = ||beta_u||, so the
program is d-free.  OPT gives the normalised margin 1 / (2 OPT); balanced
factors (|a| = |v_1| = sqrt(p), ||w_perp|| = |v_2| = sqrt(||beta||)) map the
optimum to (gamma, rho, v).

Which pattern: the flow's pattern at a late time is repaired (``repair``):
tight pattern entries with an improving flip (a negative multiplier on the
flipped side) are flipped one at a time, each flip re-solved and kept only
when OPT decreases; the result is certified when no improving flip is left.
Units that are zero at the optimum may still change their activation later
and lower OPT (``zero_unit_dual`` > 1): no test on the optimum covers that,
its effect on mu* is one-sided (upward), and the idealised program
(``dynamics.theory.limit_law``) is the upper estimate.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
import scipy.sparse as sp

from .levels import LIMIT_LEVELS, level_of
from .params import Params, ParamError

# Per-run results of the limit (``run_batch``'s res["limit"], columns in this order).
LIMIT_FIELDS = ("certified", "opt_pattern", "opt", "flips", "margin_ratio", "cosine",
                "ties", "kappa_pos", "kappa_neg", "zero_unit_dual", "t_pattern")
LIMIT_META = {
    "certified": ("repaired optimum is stationary (1), not certified (0), no program (NaN)", "1"),
    "opt_pattern": ("OPT of the flow's pattern at t_pattern (before the repair)", "1"),
    "opt": ("OPT of the repaired pattern (the limit's normalised margin is 1/(2 OPT))", "1"),
    "flips": ("moves of the repair walk (pattern flips and zero-unit activations)", "1"),
    "margin_ratio": ("flow's normalised margin at t_pattern over 1/(2 OPT) (<= 1)", "1"),
    "cosine": ("cosine of the flow's and the limit's outputs on training and test points",
               "1"),
    "ties": ("fraction of test points with f = 0 at the limit (counted as error 1/2)", "1"),
    "kappa_pos": ("decay exponent kappa of class +1: c ||mu|| |sum_i lambda_i y_i "
                  "act(yhat_i)| (< 1: its signal decays like (log t)^(kappa - 1))", "1"),
    "kappa_neg": ("decay exponent kappa of class -1", "1"),
    "zero_unit_dual": ("largest dual norm a zero unit reaches by changing its activation "
                       "(> 1: it can still grow later; not covered by the certificate)", "1"),
    "t_pattern": ("time (GD steps) of the flow state whose pattern seeds the program",
                  "GD steps"),
}
LIMIT_STATUS = {5: "training data not separated at the pattern time (no program)",
                6: "the conic solvers failed on the limit program"}

PATTERN_TIME = 1e30   # default time (GD steps) of the flow state that seeds the program
MAX_MOVES = 50        # cap of the repair walk
DUST = 1e-5           # units below this fraction of the largest are zero (solver dust)
TIGHT = 1e-6          # |<u, xi_i>| below this fraction of ||u||: on the kink


def check_limit(params: Params, level: str):
    """Refuse t = inf where no program exists (one-line ``ParamError``)."""
    why = None
    kind = params.activation_spec[0]
    if not level_of(level).limit:
        why = (f"level {level!r} has no limit program (it exists for level "
               f"{' or '.join(LIMIT_LEVELS)})")
    elif params.depth != 1:
        why = "depth >= 2 is not 2-homogeneous unit by unit"
    elif kind not in ("relu", "leaky"):
        why = f"activation {params.activation!r} is not positively 1-homogeneous"
    elif params.noise_model != "projected" or params.signal != "e1":
        why = "the signal and noise units decouple only for the paper's data (projected noise)"
    elif not params.train_v:
        why = "with v frozen the network is not 2-homogeneous in its trained parameters"
    elif params.optimizer_spec[0] != "gd":
        why = "the limit follows gradient flow (plain GD)"
    if why:
        raise ParamError("times", "inf", f"t = inf (the limit) is the max-margin program of "
                         f"depth-1 ReLU/leaky networks trained in both layers; {why}; give a "
                         f"finite late time instead (e.g. --times 200,1e30)")


# ---------------------------------------------------------------- problem data

@dataclass(frozen=True)
class Problem:
    """The d-free data of one run's program: L (n, r) with L L^T the noise
    Gram <xi_k, xi_i>, labels, ||mu||, c and the leaky slope alpha (0: ReLU)."""

    L: np.ndarray
    y: np.ndarray
    yhat: np.ndarray
    mu: float
    c: float
    alpha: float

    @property
    def n(self) -> int:
        return self.L.shape[0]

    @property
    def Linv(self) -> np.ndarray:
        """L^{-1} (lower triangular; computed once per problem)."""
        if "_Linv" not in self.__dict__:
            object.__setattr__(self, "_Linv", np.linalg.inv(self.L))
        return self.__dict__["_Linv"]

    def act(self, x):
        """act(x) = x for x > 0, alpha x otherwise (elementwise)."""
        x = np.asarray(x, dtype=float)
        return np.where(x > 0.0, x, self.alpha * x)


def gram_factor(gram: np.ndarray) -> np.ndarray:
    """L (n, n) lower triangular with L L^T = gram (Cholesky): row i holds
    the coordinates of xi_i in an orthonormal basis of span{xi}."""
    try:
        return np.linalg.cholesky(gram)
    except np.linalg.LinAlgError:
        raise ParamError("d", "", "the limit program needs linearly independent noise "
                         "vectors (n < d); the noise Gram is singular") from None


def make_problem(kst, params: Params, mu: float) -> Problem:
    """Program data of one seed's kernel statistics (``KStats`` of one seed)."""
    gram = kst.G * kst.N[:, None]
    alpha = float(params.activation_spec[1][0]) if params.activation_spec[0] == "leaky" else 0.0
    return Problem(gram_factor(0.5 * (gram + gram.T)), np.asarray(kst.y, float),
                   np.asarray(kst.yhat, float), float(mu), float(params.c), alpha)


@dataclass(frozen=True)
class Pattern:
    """Activation pattern and signs of v of every filter (j, r):
    sa (2, m) sign of a; s1, s2 (2, m) signs of v_1, v_2; act (2, m, n) noise
    unit (j, r) active on sample i."""

    sa: np.ndarray
    s1: np.ndarray
    s2: np.ndarray
    act: np.ndarray


def _sign(x):
    return np.where(np.asarray(x) < 0.0, -1.0, 1.0)


def flow_pattern(kst, mu: float, gamma, rho, v) -> Pattern:
    """The pattern of a state: a = <w0, e_1> + j gamma/||mu||, z = B + rho G."""
    js = np.array([1.0, -1.0])[:, None]
    a = kst.w0_e1 + js * gamma / mu
    z = kst.B + np.einsum("jrk,ki->jri", rho, kst.G)
    return Pattern(_sign(a), _sign(v[..., 0]), _sign(v[..., 1]), z > 0.0)


# ---------------------------------------------------------------- one program

@dataclass
class Optimum:
    """Solution of one pattern's program: p (2, m) signal magnitudes, beta
    (2, m, r) noise units (s_u-oriented), lam (n) margin multipliers, nu
    (2, m, n) pattern multipliers."""

    opt: float
    p: np.ndarray
    beta: np.ndarray
    lam: np.ndarray
    nu: np.ndarray
    solver: str
    ok: bool = True
    info: dict = field(default_factory=dict)


def _groups(keys):
    """Group indices of equal keys: (list of member index arrays)."""
    table = {}
    for idx, k in enumerate(keys):
        table.setdefault(k, []).append(idx)
    return [np.array(v) for v in table.values()]


def solve_pattern(prob: Problem, pat: Pattern) -> Optimum:
    """Solve the pattern's program (module docstring).  Units of one class
    with the same pattern and signs are merged first (same OPT; the optimum
    is split equally among them).  A noise unit enters through its values
    on the training points, z = L beta (L square and invertible: n < d), so
    the pattern rows are sign bounds on z, each margin row touches one entry
    per unit, and the cone is (t_u, L^{-1} z_u) (lower triangular).
    Clarabel, with SCS as the fallback."""
    n = prob.n
    Linv = prob.Linv
    m = pat.sa.shape[1]
    js = np.repeat([1.0, -1.0], m)
    sa, s1, s2 = pat.sa.ravel(), pat.s1.ravel(), pat.s2.ravel()
    act = pat.act.reshape(2 * m, n)
    sig = _groups([(js[u], sa[u], s1[u]) for u in range(2 * m)])
    noi = _groups([(js[u], s2[u], act[u].tobytes()) for u in range(2 * m)])
    Gs, Gn = len(sig), len(noi)
    rep_s = np.array([g[0] for g in sig], dtype=int)
    rep_n = np.array([g[0] for g in noi], dtype=int)
    nv = Gs + Gn + Gn * n  # p (Gs), t (Gn), z (Gn, n)
    # margins: -y_i c [sum_s coef p + sum_u j s2 A_ui z_ui] <= -1
    sig_coef = (prob.c * prob.mu * (js * s1)[rep_s][None, :]
                * prob.act(prob.yhat[:, None] * sa[rep_s][None, :]))  # (n, Gs)
    fac = np.where(act[rep_n], 1.0, prob.alpha)  # (Gn, n)
    noi_coef = prob.c * (js * s2)[rep_n][:, None] * fac  # (Gn, n)
    rows, cols, vals = [], [], []
    ii, gg = np.meshgrid(np.arange(n), np.arange(Gs), indexing="ij")
    rows.append(ii.ravel()); cols.append(gg.ravel())
    vals.append(-(prob.y[:, None] * sig_coef).ravel())
    gz, iz = np.meshgrid(np.arange(Gn), np.arange(n), indexing="ij")  # (Gn, n)
    zcol = Gs + Gn + gz * n + iz
    rows.append(iz.ravel()); cols.append(zcol.ravel())
    vals.append(-(prob.y[None, :] * noi_coef).ravel())
    r0 = n  # p >= 0
    rows.append(r0 + np.arange(Gs)); cols.append(np.arange(Gs)); vals.append(-np.ones(Gs))
    r0 += Gs  # pattern: (2 S - 1) z >= 0
    rows.append(r0 + (gz * n + iz).ravel()); cols.append(zcol.ravel())
    vals.append(-(2.0 * act[rep_n] - 1.0).ravel())
    n_lin = r0 + Gn * n
    # cones (t_u, L^{-1} z_u): rows n_lin + u (n + 1) + [0, 1..n]
    li, lk = np.nonzero(Linv)
    lv = Linv[li, lk]
    for g in range(Gn):
        base = n_lin + g * (n + 1)
        rows.append([base]); cols.append([Gs + g]); vals.append([-1.0])
        rows.append(base + 1 + li); cols.append(Gs + Gn + g * n + lk); vals.append(-lv)
    nrow = n_lin + Gn * (n + 1)
    A = sp.csc_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
                      shape=(nrow, nv))
    b = np.zeros(nrow)
    b[:n] = -1.0
    q = np.zeros(nv)
    q[:Gs + Gn] = 1.0
    x, z, solver, info = _conic(A, b, q, n_lin, [n + 1] * Gn)
    if x is None:
        return Optimum(np.nan, np.zeros((2, m)), np.zeros((2, m, n)), np.zeros(n),
                       np.zeros((2, m, n)), solver, ok=False, info=info)
    p = np.zeros(2 * m)
    beta = np.zeros((2 * m, n))
    nu = np.zeros((2 * m, n))
    zz = x[Gs + Gn:].reshape(Gn, n)
    bb = zz @ Linv.T
    zp = z[n + Gs:n_lin].reshape(Gn, n)
    for g, members in enumerate(sig):
        p[members] = max(x[g], 0.0) / len(members)
    for g, members in enumerate(noi):
        beta[members] = bb[g] / len(members)
        nu[members] = zp[g]
    opt = float(p.sum() + np.linalg.norm(beta, axis=1).sum())
    return Optimum(opt, p.reshape(2, m), beta.reshape(2, m, n), z[:n].copy(),
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
    st.presolve_enable = False                # nothing to presolve (no free rows); same x
    st.chordal_decomposition_enable = False   # no PSD cones
    st.input_sparse_dropzeros = True          # ReLU's zero margin entries: not in the KKT
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


# ---------------------------------------------------------------- stationarity

def _zero_units(opt: Optimum):
    """Boolean masks (2, m) of zero signal and noise units (below DUST of the largest)."""
    size_s, size_n = opt.p, np.linalg.norm(opt.beta, axis=2)
    top = max(size_s.max(initial=0.0), size_n.max(initial=0.0))
    return size_s <= DUST * top, size_n <= DUST * top


def _relu_dual_norm(prob: Problem, h: np.ndarray, sign: float, iters: int = 40):
    """A lower bound of max_{||beta|| = 1} sign * sum_i h_i act((L beta)_i)
    by multi-start fixed-point ascent (beta <- L^T (sign h act'(L beta)),
    normalised; starts: the class sums, the positive part, every row of L);
    returns (value, beta)."""
    L, sh = prob.L, sign * h
    starts = [sh, sh * (sh > 0)] + [sh * (prob.yhat == k) for k in (1.0, -1.0)]
    B = np.vstack([np.asarray(starts) @ L, L])  # (S, n)
    best, arg = -np.inf, None
    for _ in range(iters):
        nb = np.linalg.norm(B, axis=1)
        B = B[nb > 0.0] / nb[nb > 0.0, None]
        if not B.shape[0]:
            break
        Z = B @ L.T
        val = prob.act(Z) @ sh
        k = int(np.argmax(val))
        if val[k] > best:
            best, arg = float(val[k]), B[k].copy()
        B = (sh * np.where(Z > 0.0, 1.0, prob.alpha)) @ L
    return best, arg


def kappas(prob: Problem, lam: np.ndarray) -> tuple:
    """Dual norms of a signal unit active on class k = +1, -1:
    c ||mu|| |sum_i lambda_i y_i act(yhat_i k)| (the decay exponents kappa)."""
    return tuple(prob.c * prob.mu * abs(float(np.sum(lam * prob.y * prob.act(prob.yhat * k))))
                 for k in (1.0, -1.0))


def zero_unit_dual(prob: Problem, opt: Optimum) -> float:
    """The largest dual norm a unit that is zero at the optimum could reach
    by changing its activation (signal: ``kappas``; noise: the multi-start
    ascent ``_relu_dual_norm``), NaN without zero units.  Above 1, such a
    unit can still grow later in training (a lower OPT, more memorisation,
    mu* up): the certificate of ``repair`` does not cover this."""
    zs, zn = _zero_units(opt)
    vals = []
    if zs.any():
        vals += list(kappas(prob, opt.lam))
    if zn.any():
        h = prob.c * opt.lam * prob.y
        vals += [_relu_dual_norm(prob, h, sign)[0] for sign in (1.0, -1.0)]
    return max(vals) if vals else np.nan


def improving_moves(prob: Problem, pat: Pattern, opt: Optimum) -> list:
    """Moves that can lower OPT, best first: (score, "flip", (j, r, i)), a
    tight entry of a nonzero noise unit whose flipped side has multiplier
    nu' = -nu - sigma lambda_i y_i c j s (A_old - A_new) < 0.  A zero unit
    changing its activation is not a move: its own-pattern dual norm is <= 1
    at any optimum of the program, and whether another pattern would let it
    grow is reported (``zero_unit_dual``), not used."""
    m = pat.sa.shape[1]
    _, zn = _zero_units(opt)
    moves = []
    scale = prob.c * max(float(np.abs(opt.lam).max(initial=0.0)), 1e-300)
    zz = np.einsum("ik,jrk->jri", prob.L, opt.beta)
    size = np.linalg.norm(opt.beta, axis=2)
    for j in range(2):
        jsg = 1.0 - 2.0 * j
        for r in range(m):
            if zn[j, r]:
                continue
            tight = np.abs(zz[j, r]) <= TIGHT * size[j, r]
            for i in np.nonzero(tight)[0]:
                old = pat.act[j, r, i]
                sigma = 1.0 if old else -1.0
                a_old, a_new = (1.0, prob.alpha) if old else (prob.alpha, 1.0)
                nu_new = -opt.nu[j, r, i] - sigma * opt.lam[i] * prob.y[i] * prob.c * jsg \
                    * pat.s2[j, r] * (a_old - a_new)
                if nu_new < -1e-7 * scale:
                    moves.append((nu_new / scale, "flip", (j, r, int(i))))
    moves.sort(key=lambda mv: mv[0])
    return moves


def apply_move(pat: Pattern, move) -> Pattern:
    """The pattern after one move of ``improving_moves`` (entry (j, r, i) flipped)."""
    j, r, i = move[2]
    act = pat.act.copy()
    act[j, r, i] = not act[j, r, i]
    return replace(pat, act=act)


@dataclass
class Limit:
    """The certified limit of one run: the repaired optimum, its pattern, and
    the walk: opt_pattern (OPT of the starting pattern), moves, certified,
    reason (why not certified, or "")."""

    optimum: Optimum
    pattern: Pattern
    opt_pattern: float
    moves: int
    certified: bool
    reason: str
    kappa: tuple


def repair(prob: Problem, pat: Pattern, max_moves: int = MAX_MOVES, tries: int = 6) -> Limit:
    """Walk from the flow's pattern to a stationary one: apply the best
    improving move whose re-solve lowers OPT (relative 1e-9), repeat; OPT
    decreases strictly along the walk.  Certified when no candidate move is
    left or every candidate was re-solved without a decrease (degenerate
    multipliers), the margin multipliers are >= 0 and the solver succeeded."""
    opt = solve_pattern(prob, pat)
    if not opt.ok:
        return Limit(opt, pat, np.nan, 0, False, "solver failed", (np.nan, np.nan))
    opt0, moves, reason = opt.opt, 0, ""
    while True:
        cands = improving_moves(prob, pat, opt)
        if not cands:
            break
        if moves >= max_moves:
            reason = f"walk capped at {max_moves} moves"
            break
        done = False
        for mv in cands[:tries]:
            new_pat = apply_move(pat, mv)
            new = solve_pattern(prob, new_pat)
            if new.ok and new.opt < opt.opt * (1.0 - 1e-9):
                pat, opt, moves, done = new_pat, new, moves + 1, True
                break
        if not done:
            if len(cands) > tries:
                reason = f"{len(cands) - tries} candidate moves left untested"
            break
    if not reason and opt.lam.min() < -1e-7 * max(opt.lam.max(), 1e-300):
        reason = "negative margin multiplier"
    return Limit(opt, pat, opt0, moves, not reason, reason, kappas(prob, opt.lam))


# ---------------------------------------------------------------- back to a network

def limit_state(prob: Problem, lim: Limit, mu: float):
    """(gamma, rho, v) of the repaired optimum with balanced factors, dust
    (units below DUST of the largest) set to zero; w(0) is dropped (its share
    of the direction vanishes in the limit): a = sa sqrt(p), v_1 = s1 sqrt(p),
    w_perp = beta/sqrt(||beta||) in the orthonormal basis, v_2 = s2 sqrt(||beta||);
    gamma = j ||mu|| a, rho_k = N_k b_k with w_perp = sum_k b_k xi_k."""
    opt, pat = lim.optimum, lim.pattern
    zs, zn = _zero_units(opt)
    p = np.where(zs, 0.0, opt.p)
    beta = np.where(zn[..., None], 0.0, opt.beta)
    size = np.linalg.norm(beta, axis=2)
    js = np.array([1.0, -1.0])[:, None]
    a = pat.sa * np.sqrt(p)
    gamma = js * mu * a
    v = np.stack([pat.s1 * np.sqrt(p), pat.s2 * np.sqrt(size)], axis=-1)
    omega = beta / np.sqrt(np.where(size > 0.0, size, 1.0))[..., None]
    # w_perp coordinates omega = L^T b  ->  b = pinv(L^T) omega
    b = np.einsum("ik,jri->jrk", prob.Linv, omega)
    N = np.einsum("ik,ik->i", prob.L, prob.L)
    rho = b * N
    return gamma, rho, v


def tie_error(f: np.ndarray, yhat: np.ndarray) -> tuple:
    """(test error with ties f = 0 counted 1/2, tie fraction)."""
    ties = float(np.mean(f == 0.0))
    return float(np.mean(yhat * f < 0.0)) + 0.5 * ties, ties


def certify(prob: Problem, pat: Pattern, max_moves: int = MAX_MOVES) -> tuple:
    """The kernel-free part of a run's limit: (``repair`` from pattern
    ``pat``, ``zero_unit_dual`` of its optimum or NaN).  Plain data in and
    out, so ``limit_run`` can map it over worker processes."""
    lim = repair(prob, pat, max_moves)
    return lim, (zero_unit_dual(prob, lim.optimum) if lim.optimum.ok else np.nan)
