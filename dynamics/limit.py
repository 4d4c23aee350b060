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
tight pattern entries (on the kink: the row's multiplier nu outweighs its
slack |<u, xi_i>|, both relative, which is complementarity as the interior
point solver reports it) with an improving flip (a negative multiplier on
the flipped side) are flipped one at a time, each flip re-solved and kept
only when OPT decreases by more than the solver's accuracy; the result is
certified when no improving flip is left.
Units that are zero at the optimum may still change their activation later
and lower OPT (``zero_unit_dual`` > 1): no test on the optimum covers that,
its effect on mu* is one-sided (upward), and the idealised program
(``dynamics.theory.limit_law``) is the upper estimate.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from .levels import LIMIT_LEVELS, level_of
from .limit_program import Optimum, solve_pattern  # noqa: F401 (limit.solve_pattern)
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

PATTERN_TIME = 1e100  # default time (GD steps) of the flow state that seeds the program
MAX_MOVES = 50        # cap of the repair walk: max(MAX_MOVES, 2 n) moves (max_moves_of)
DUST = 1e-5           # units below this fraction of the largest are zero (solver dust)
DECREASE = 1e-7       # a move is kept when OPT drops by more than this fraction (solver accuracy)


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
# ``solve_pattern`` (dynamics/limit_program.py): the pattern's program by
# column generation over its noise units.

# ---------------------------------------------------------------- stationarity

def _zero_units(opt: Optimum):
    """Boolean masks (2, m) of zero signal and noise units (below DUST of the largest)."""
    size_s, size_n = opt.p, np.linalg.norm(opt.beta, axis=2)
    top = max(size_s.max(initial=0.0), size_n.max(initial=0.0))
    return size_s <= DUST * top, size_n <= DUST * top


def _relu_dual_norm(prob: Problem, h: np.ndarray, iters: int = 40) -> float:
    """A lower bound of max over sign = +-1 and ||beta|| = 1 of
    sign * sum_i h_i act((L beta)_i), by multi-start fixed-point ascent
    (beta <- L^T (sign h act'(L beta)), normalised), all starts of both
    signs side by side: per sign the class sums, the positive part and every
    row of L."""
    L, rows, signed = prob.L, [], []
    for sign in (1.0, -1.0):
        sh = sign * h
        starts = np.array([sh, sh * (sh > 0)] + [sh * (prob.yhat == k) for k in (1.0, -1.0)])
        rows += [starts @ L, L]
        signed.append(np.broadcast_to(sh, (starts.shape[0] + L.shape[0], sh.size)))
    B, SH = np.vstack(rows), np.vstack(signed)
    best = -np.inf
    for _ in range(iters):
        nb = np.linalg.norm(B, axis=1)
        keep = nb > 0.0
        B, SH = B[keep] / nb[keep, None], SH[keep]
        if not B.shape[0]:
            break
        Z = B @ L.T
        best = max(best, float(np.max(np.einsum("si,si->s", prob.act(Z), SH))))
        B = (SH * np.where(Z > 0.0, 1.0, prob.alpha)) @ L
    return best


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
        vals.append(_relu_dual_norm(prob, h))
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
            # on the kink: the pattern row is active (complementarity, nu z = 0),
            # i.e. its multiplier outweighs its slack, both relative
            tight = opt.nu[j, r] / scale >= np.abs(zz[j, r]) / size[j, r]
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


def max_moves_of(n: int) -> int:
    """Default cap of the repair walk at n training points: max(MAX_MOVES,
    2 n).  Walks grow with n (n = 80, d = 1e5, v0 = 1: 0-86 moves, median
    ~60, on 13 recorded programs; a cap of 50 left OPT up to 4% high)."""
    return max(MAX_MOVES, 2 * int(n))


def repair(prob: Problem, pat: Pattern, max_moves: int | None = None) -> Limit:
    """Walk from the flow's pattern to a stationary one: re-solve the
    improving moves best first and apply the first whose re-solve lowers OPT
    (by more than DECREASE, relative); repeat.  OPT decreases strictly along
    the walk.  Certified when every candidate move was re-solved without a
    decrease (none left, or degenerate multipliers: a first-order
    improvement that the re-solve does not realise), the margin multipliers
    are >= 0 and the solver succeeded.  A re-solve starts its column
    generation from the current optimum's nonzero units and the flipped
    one."""
    max_moves = max_moves_of(prob.n) if max_moves is None else max_moves
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
        nonzero = opt.nonzero_units()
        for mv in cands:
            new_pat = apply_move(pat, mv)
            units = nonzero.copy()
            units[mv[2][:2]] = True
            new = solve_pattern(prob, new_pat, units)
            if new.ok and new.opt < opt.opt * (1.0 - DECREASE):
                pat, opt, moves, done = new_pat, new, moves + 1, True
                break
        if not done:
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


def certify(prob: Problem, pat: Pattern, max_moves: int | None = None) -> tuple:
    """The kernel-free part of a run's limit: (``repair`` from pattern
    ``pat``, ``zero_unit_dual`` of its optimum or NaN).  Plain data in and
    out, so ``limit_run`` can map it over worker processes."""
    lim = repair(prob, pat, max_moves)
    return lim, (zero_unit_dual(prob, lim.optimum) if lim.optimum.ok else np.nan)
