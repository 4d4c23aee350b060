"""Numba kernels of the reduced coefficient recursion (docs/theory.md: exact recursion, test error, training time).

Pure module-level functions of plain arrays, scalars and two NamedTuples,
``@njit(cache=True)``; every helper a kernel calls lives in this module
(numba#1833); randomness stays in the Python wrappers (QuantEcon discipline).

Index conventions: axis j in {0, 1} stands for j = +1, -1 (sign ``1 - 2j``);
p in {0, 1} is the patch (signal, noise).  At step t, right-hand sides at t:

  s_{j,r,i} = yhat_i (A_{j,r} + j gamma_{j,r}),   A = ||mu|| <w0, e_1>
  z_{j,r,i} = B_{j,r,i} + sum_k rho_{j,r,k} G_{k,i}     (G = I: "orthogonal")
  f_i       = c sum_j j sum_r [v_{j,r,1} ReLU(s) + v_{j,r,2} ReLU(z)]
  l'_i      = -1 / (1 + exp(y_i f_i))
  gamma    += -(eta c/n) ||mu||^2 v_{j,r,1} sum_i l'_i y_i yhat_i 1[s > 0]
  rho_i    += -(eta c/n) N_i j y_i l'_i v_{j,r,2} 1[z > 0]
  v_{j,r,1}+= -(eta_v c/n) j sum_i l'_i y_i ReLU(s)      (not if v frozen)
  v_{j,r,2}+= -(eta_v c/n) j sum_i l'_i y_i ReLU(z)

Heavy-ball momentum (beta) acts on these increments: u = beta u + delta,
theta += u; exact, since momentum in weight space is linear in the gradients.

Divergence policy (``dynamics.params``): a run stops at the first step where
an output is non-finite (reason 1), the loss exceeds LOSS_MAX (reason 2) or a
coefficient exceeds THETA_MAX in absolute value (reason 3); ``status`` holds
(step, reason), step = -1 when the run finished.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numba import njit, prange

from .params import LOSS_MAX, THETA_MAX

DIVERGENCE_REASONS = {1: "non-finite network output", 2: f"training loss above {LOSS_MAX:g}",
                      3: f"a coefficient above {THETA_MAX:g} in absolute value"}


class KStats(NamedTuple):
    """Sufficient statistics for the kernels (see ``dynamics.data.Stats``);
    the batch kernels take the same fields stacked on a leading seed axis."""

    w0_e1: np.ndarray       # (2, m)      <w0, e_1>
    w0_perp_sq: np.ndarray  # (2, m)      ||P w0||^2
    B: np.ndarray           # (2, m, n)   <w0, xi_i>
    G: np.ndarray           # (n, n)      <xi_k, xi_i> / N_k
    N: np.ndarray           # (n,)        ||xi_i||^2
    yhat: np.ndarray        # (n,)        clean labels
    y: np.ndarray           # (n,)        observed labels
    test_yhat: np.ndarray   # (nt,)
    test_B: np.ndarray      # (2, m, nt)  <w0, xi_test>
    test_X: np.ndarray      # (n, nt)     <xi_k, xi_test>
    U0: np.ndarray          # (L-1, 2, m, m) initial upper layers (docs/theory.md#depth)


class KConfig(NamedTuple):
    """Numeric settings of a run (everything but the state, mu and v0)."""

    c: float
    eta: float
    eta_v: float
    beta: float       # heavy-ball momentum (0: plain GD)
    use_gram: bool    # False: level "orthogonal" (G = I)
    train_v: bool     # False: level "fixed-output"
    act: int = 0      # activation: 0 relu, 1 relu^act_a, 2 leaky with slope act_a (docs/theory.md#general-reduction)
    act_a: float = 0.0


# ---------------------------------------------------------------- helpers
@njit(cache=True)
def _logistic_loss(yf):
    """log(1 + exp(-yf)), overflow-safe."""
    if yf >= 0.0:
        return np.log1p(np.exp(-yf))
    return -yf + np.log1p(np.exp(yf))


@njit(cache=True, inline="always")
def _sig(x, act, a):
    """sigma(x): relu (act 0, as max(x, 0)), relu^a (1), leaky with slope a (2)."""
    if act == 0:
        return max(x, 0.0)
    if act == 1:
        return x ** a if x > 0.0 else 0.0
    return x if x > 0.0 else a * x


@njit(cache=True, inline="always")
def _dsig(x, act, a):
    """sigma'(x) with sigma'(0) = 0 (relu, relu^a) or a (leaky)."""
    if act == 0:
        return 1.0 if x > 0.0 else 0.0
    if act == 1:
        return a * x ** (a - 1.0) if x > 0.0 else 0.0
    return 1.0 if x > 0.0 else a


@njit(cache=True, inline="always")
def _sig_from(x, dx, act, a):
    """sigma(x) given dx = sigma'(x): x dx for relu and leaky (the form of the
    ReLU code before activations, bit for bit), x^a for relu^a."""
    if act == 1:
        return x ** a if x > 0.0 else 0.0
    return x * dx


@njit(cache=True)
def _accumulate_outputs(f, js, c, Aj, gammaj, vj, yhat, z, act, act_a):
    """f_i += j c [v1_r sigma(yhat_i a_r) + v2_r sigma(z_{r,i})] for the filters
    r = 0, 1, ... of one class j in turn, a_r = A_r + j gamma_r (one call per
    class, not per filter: the call's array arguments cost more than a
    filter's loop over a test block; ReLU: the constant act = 0, a
    branch-free loop that vectorises)."""
    if act == 0:
        _accumulate_outputs_body(f, js, c, Aj, gammaj, vj, yhat, z, 0, 0.0)
    else:
        _accumulate_outputs_body(f, js, c, Aj, gammaj, vj, yhat, z, act, act_a)


@njit(cache=True, inline="always")
def _accumulate_outputs_body(f, js, c, Aj, gammaj, vj, yhat, z, act, act_a):
    """``_accumulate_outputs`` for activation (act, act_a)."""
    js_c = js * c
    for r in range(z.shape[0]):
        a = Aj[r] + js * gammaj[r]
        v1, v2, zr = vj[r, 0], vj[r, 1], z[r]
        for i in range(f.shape[0]):
            f[i] += js_c * (v1 * _sig(yhat[i] * a, act, act_a) + v2 * _sig(zr[i], act, act_a))


@njit(cache=True)
def _forward1(A, gamma, rho, v, st, cfg, s, z, f):
    """Depth 1: fill s (2, m) with a_{j,r} = A_{j,r} + j gamma_{j,r} (the signal
    pre-activation is s_{j,r,i} = yhat_i a_{j,r}), z (2, m, n) and f (n) for
    the current state (docs/theory.md#exact-recursion).
    ReLU calls the body with the constant act = 0, so it compiles to the
    branch-free ReLU loop (the activation test folds away)."""
    if cfg.act == 0:
        _forward1_body(A, gamma, rho, v, st, cfg, s, z, f, 0, 0.0)
    else:
        _forward1_body(A, gamma, rho, v, st, cfg, s, z, f, cfg.act, cfg.act_a)


@njit(cache=True, inline="always")
def _forward1_body(A, gamma, rho, v, st, cfg, s, z, f, act, act_a):
    """``_forward1`` for activation (act, act_a) (``_sig``); the outputs are
    the test outputs' accumulation (``_accumulate_outputs_body``)."""
    m = gamma.shape[1]
    yhat, B, G, c, use_gram = st.yhat, st.B, st.G, cfg.c, cfg.use_gram
    f[:] = 0.0
    for j in range(2):
        js = 1.0 - 2.0 * j
        _noise_block(z[j], B[j], rho[j], G, use_gram)
        for r in range(m):
            s[j, r] = A[j, r] + js * gamma[j, r]
        _accumulate_outputs_body(f, js, c, A[j], gamma[j], v[j], yhat, z[j], act, act_a)


@njit(cache=True)
def _addmul_rows(Z, S, V, block):
    """Z[p, :] += sum_k S[p, k] V[k, :] for every row p of Z (P, N), S (P, n),
    V (n, N): every element adds k = 0, 1, ... one term at a time (((Z + S_0
    V_0) + S_1 V_1) + ...), the order of a plain loop, whatever the blocking.
    block: rows in blocks of 4 and k in blocks of 4 per pass over the row
    (one load of V[k] serves four rows, one load and store of Z four terms:
    ~2x faster than row by row at n = 20 for the one-job Gram block (rows =
    filters, S = rho, V = G), ~1.7x x 1.3x for a group's Gram rows (rows =
    samples i, S = G^T, V = rho of the C jobs) at C >= 24, slower at C = 16).
    The Gram product of both paths."""
    P, N, n = Z.shape[0], Z.shape[1], S.shape[1]
    p0 = 0
    if block:
        while p0 + 4 <= P:
            z0, z1, z2, z3 = Z[p0], Z[p0 + 1], Z[p0 + 2], Z[p0 + 3]
            k = 0
            while k + 4 <= n:
                V0, V1, V2, V3 = V[k], V[k + 1], V[k + 2], V[k + 3]
                a0, a1, a2, a3 = S[p0, k], S[p0, k + 1], S[p0, k + 2], S[p0, k + 3]
                b0, b1, b2, b3 = S[p0 + 1, k], S[p0 + 1, k + 1], S[p0 + 1, k + 2], S[p0 + 1, k + 3]
                c0, c1, c2, c3 = S[p0 + 2, k], S[p0 + 2, k + 1], S[p0 + 2, k + 2], S[p0 + 2, k + 3]
                d0, d1, d2, d3 = S[p0 + 3, k], S[p0 + 3, k + 1], S[p0 + 3, k + 2], S[p0 + 3, k + 3]
                for i in range(N):
                    g0, g1, g2, g3 = V0[i], V1[i], V2[i], V3[i]
                    z0[i] = (((z0[i] + a0 * g0) + a1 * g1) + a2 * g2) + a3 * g3
                    z1[i] = (((z1[i] + b0 * g0) + b1 * g1) + b2 * g2) + b3 * g3
                    z2[i] = (((z2[i] + c0 * g0) + c1 * g1) + c2 * g2) + c3 * g3
                    z3[i] = (((z3[i] + d0 * g0) + d1 * g1) + d2 * g2) + d3 * g3
                k += 4
            while k < n:
                a0, a1, a2, a3 = S[p0, k], S[p0 + 1, k], S[p0 + 2, k], S[p0 + 3, k]
                Vk = V[k]
                for i in range(N):
                    g = Vk[i]
                    z0[i] += a0 * g
                    z1[i] += a1 * g
                    z2[i] += a2 * g
                    z3[i] += a3 * g
                k += 1
            p0 += 4
    for k in range(n):
        Vk = V[k]
        for p in range(p0, P):
            a = S[p, k]
            zp = Z[p]
            for i in range(N):
                zp[i] += a * Vk[i]


@njit(cache=True)
def _gram_block(z, B, rho, G):
    """z_{r,i} = B_{r,i} + sum_k rho_{r,k} G_{k,i} for every row r of z (R, N),
    rho (R, n), G (n, N) (``_addmul_rows`` after z = B, copied by explicit
    loops: a 2-d slice assignment z[:, :] = B ran ~3x slower, 233 vs 75 ns
    at (20, 40)).  The one-job GD loop calls it transposed (rows = samples,
    rho -> G^T, G -> rho^T)."""
    for r in range(z.shape[0]):
        for i in range(z.shape[1]):
            z[r, i] = B[r, i]
    _addmul_rows(z, rho, G, True)


@njit(cache=True)
def _noise_block(z, B, rho, G, use_gram):
    """z_{r,i} = B_{r,i} + sum_k rho_{r,k} G_{k,i} for every filter r of one
    class (z, B, rho (m, n)): ``_gram_block``, or B + rho when G = I."""
    if use_gram:
        _gram_block(z, B, rho, G)
    else:
        for r in range(z.shape[0]):
            for i in range(z.shape[1]):
                z[r, i] = B[r, i] + rho[r, i]


@njit(cache=True)
def _loss(f, y):
    """Training loss (1/n) sum_i log(1 + exp(-y_i f_i))."""
    loss = 0.0
    for i in range(f.shape[0]):
        loss += _logistic_loss(y[i] * f[i])
    return loss / f.shape[0]


@njit(cache=True)
def _lprime(f, y, lp):
    """l'_i = -1/(1 + exp(y_i f_i)); returns reason 1 if an output is
    non-finite, 2 if the loss exceeds LOSS_MAX, else 0.  The loss itself is
    computed only when max_i(-y_i f_i) could make it exceed LOSS_MAX (the loss
    is at most that maximum + log 2), keeping the GD step cheap."""
    worst = -np.inf
    for i in range(f.shape[0]):
        yf = y[i] * f[i]
        lp[i] = -1.0 / (1.0 + np.exp(yf))  # exp(+large) -> l' = -0
        worst = max(worst, -yf)
    if not np.isfinite(worst):
        return 1
    if worst > LOSS_MAX - 1.0 and _loss(f, y) > LOSS_MAX:
        return 2
    return 0


@njit(cache=True)
def _increments1(gamma, rho, v, s, z, lp, st, mu2, c, eta, eta_v, train_v, dgamma, drho, dv,
                 act, act_a, qn, rows, inplace):
    """Depth 1: increments of (gamma, rho, v) at t from s, z, l' (docs/theory.md#exact-recursion, with
    1[. > 0] -> sigma'(.) and ReLU -> sigma for other activations, docs/theory.md#general-reduction).
    ReLU runs the body with the constant act = 0 (branches fold away).
    qn (3, n) and rows (3, m) are work buffers.  inplace: add each increment
    to the state as it is formed (plain GD: theta += delta, the numbers of
    ``_apply`` with beta = 0; exact, since the increments of filter (j, r)
    read only s, z, l' and v_{j,r}, which is updated last) instead of
    writing dgamma, drho, dv; returns True when a coefficient is then not
    <= THETA_MAX (always False when not inplace)."""
    if act == 0:
        return _increments1_body(gamma, rho, v, s, z, lp, st, mu2, c, eta, eta_v, train_v,
                                 dgamma, drho, dv, 0, 0.0, qn, rows, inplace)
    return _increments1_body(gamma, rho, v, s, z, lp, st, mu2, c, eta, eta_v, train_v, dgamma,
                             drho, dv, act, act_a, qn, rows, inplace)


@njit(cache=True, inline="always")
def _increments1_body(gamma, rho, v, s, z, lp, st, mu2, c, eta, eta_v, train_v, dgamma, drho,
                      dv, act, act_a, qn, rows, inplace):
    """``_increments1`` for activation (act, act_a).  Per element the same
    operations in the same order as the formulas above (q_i = l'_i y_i,
    sums over i ascending), arranged for SIMD: the per-sample factors q_i,
    q_i yhat_i and (eta c/n) N_i j q_i once per step; the signal sums for all
    filters at once (filters innermost: independent sums side by side); the
    noise sums four filters at a time."""
    m = gamma.shape[1]
    n = st.yhat.shape[0]
    cw = eta * c / n
    cv = eta_v * c / n
    q, qy, P = qn[0], qn[1], qn[2]
    sg, sv1, sv2 = rows[0], rows[1], rows[2]
    yhat, y, N = st.yhat, st.y, st.N
    bad = False
    for i in range(n):
        q[i] = lp[i] * y[i]
        qy[i] = q[i] * yhat[i]
    for j in range(2):
        js = 1.0 - 2.0 * j
        for i in range(n):
            P[i] = cw * N[i] * js * q[i]
        a = s[j]  # a_r = A_{j,r} + j gamma_{j,r}
        for r in range(m):
            sg[r] = 0.0
            sv1[r] = 0.0
        for i in range(n):  # signal: s_{j,r,i} = yhat_i a_r
            yh, qi, qyi = yhat[i], q[i], qy[i]
            for r in range(m):
                si = yh * a[r]
                ms = _dsig(si, act, act_a)
                sg[r] += qyi * ms
                sv1[r] += qi * _sig_from(si, ms, act, act_a)
        for r in range(m):  # noise increments
            v2 = v[j, r, 1]
            zr = z[j, r]
            if inplace:
                rr = rho[j, r]
                for i in range(n):
                    x = rr[i] + (-(P[i] * v2) * _dsig(zr[i], act, act_a))
                    rr[i] = x
                    bad |= not abs(x) <= THETA_MAX
            else:
                dr = drho[j, r]
                for i in range(n):
                    dr[i] = -(P[i] * v2) * _dsig(zr[i], act, act_a)
        r = 0 if train_v else m  # the noise sums feed only the v increments
        while r + 4 <= m:  # noise sums, four filters side by side
            z0, z1, z2, z3 = z[j, r], z[j, r + 1], z[j, r + 2], z[j, r + 3]
            t0 = 0.0
            t1 = 0.0
            t2 = 0.0
            t3 = 0.0
            for i in range(n):
                qi = q[i]
                x0, x1, x2, x3 = z0[i], z1[i], z2[i], z3[i]
                t0 += qi * _sig_from(x0, _dsig(x0, act, act_a), act, act_a)
                t1 += qi * _sig_from(x1, _dsig(x1, act, act_a), act, act_a)
                t2 += qi * _sig_from(x2, _dsig(x2, act, act_a), act, act_a)
                t3 += qi * _sig_from(x3, _dsig(x3, act, act_a), act, act_a)
            sv2[r], sv2[r + 1], sv2[r + 2], sv2[r + 3] = t0, t1, t2, t3
            r += 4
        while r < m:
            t0 = 0.0
            zr = z[j, r]
            for i in range(n):
                t0 += q[i] * _sig_from(zr[i], _dsig(zr[i], act, act_a), act, act_a)
            sv2[r] = t0
            r += 1
        for r in range(m):
            dg = -(cw * mu2 * v[j, r, 0] * sg[r])
            dv1 = -(cv * js * sv1[r]) if train_v else 0.0
            dv2 = -(cv * js * sv2[r]) if train_v else 0.0
            if inplace:
                x = gamma[j, r] + dg
                gamma[j, r] = x
                bad |= not abs(x) <= THETA_MAX
                if train_v:
                    x1 = v[j, r, 0] + dv1
                    x2 = v[j, r, 1] + dv2
                    v[j, r, 0] = x1
                    v[j, r, 1] = x2
                    bad |= not (abs(x1) <= THETA_MAX and abs(x2) <= THETA_MAX)
            else:
                dgamma[j, r] = dg
                dv[j, r, 0] = dv1
                dv[j, r, 1] = dv2
    return bad


@njit(cache=True)
def _apply(theta, delta, mom, beta):
    """theta += u, u = beta u + delta (flat views); returns True when some
    |theta| is not <= THETA_MAX (NaN included).  Plain GD (beta = 0) adds
    delta directly (the same numbers: u = delta) and leaves mom alone; the
    bound check is an OR over the elements (vectorises, unlike a max)."""
    bad = False
    if beta == 0.0:
        for k in range(theta.size):
            x = theta[k] + delta[k]
            theta[k] = x
            bad |= not abs(x) <= THETA_MAX
        return bad
    for k in range(theta.size):
        mom[k] = beta * mom[k] + delta[k]
        x = theta[k] + mom[k]
        theta[k] = x
        bad |= not abs(x) <= THETA_MAX
    return bad


# ---------------------------------------------------------------- depth L >= 2
# docs/theory.md#depth.  Per class j the activations of hidden layer l+1 (l = 0..L-1) at
# sample i and patch p are H[j, l, p, k, i] = ReLU(pre); layer 1 is ReLU of
# (s, z) of depth 1, H[l+1] = ReLU(U(l)_j H[l]),  F_j = c sum_{p,k} v_{j,k,p}
# H[L-1].  Backward (1[pre > 0] = 1[H > 0]): delta = df/dpre,
# delta[L-1] = j c v 1[H > 0], delta[l] = (U(l)_j^T delta[l+1]) 1[H[l] > 0];
# g = delta[0] gives, with q_i = l'_i y_i,
#   gamma_{j,r} += -(eta/n) ||mu||^2 j sum_i q_i yhat_i delta[0, 0, r, i]
#   rho_{j,r,i} += -(eta/n) N_i q_i delta[0, 1, r, i]
#   U(l)_{j,k,r} += -(eta/n) sum_{i,p} q_i delta[l+1, p, k, i] H[l, p, r, i]
#   v_{j,k,p}   += -(eta_v c/n) j sum_i q_i H[L-1, p, k, i].
# Depth 1 never enters this code: the dispatchers below call _forward1 and
# _increments1 (bit-identical to the depth-1 kernel).


@njit(cache=True)
def _relu_inplace(x):
    for i in range(x.shape[0]):
        x[i] = max(x[i], 0.0)


@njit(cache=True)
def _upper_forward(U, j, H):
    """H[l+1, p, k, i] = ReLU(sum_r U[l, j, k, r] H[l, p, r, i]), l = 0..L-2."""
    m = U.shape[2]
    for l in range(U.shape[0]):
        for p in range(2):
            for k in range(m):
                out = H[l + 1, p, k]
                out[:] = 0.0
                for r in range(m):
                    u = U[l, j, k, r]
                    hin = H[l, p, r]
                    for i in range(out.shape[0]):
                        out[i] += u * hin[i]
                _relu_inplace(out)


@njit(cache=True)
def _top_output(f, js_c, vj, top):
    """f_i += j c sum_{p,k} v_{j,k,p} top[p, k, i] (top = H[L-1])."""
    for p in range(2):
        for k in range(top.shape[1]):
            vk = js_c * vj[k, p]
            row = top[p, k]
            for i in range(f.shape[0]):
                f[i] += vk * row[i]


@njit(cache=True)
def _forward_deep(A, gamma, rho, U, v, st, cfg, H, f):
    """Fill H (2, L, 2, m, n) and f (n) for depth L >= 2 (docs/theory.md#depth)."""
    m, n, L = gamma.shape[1], f.shape[0], U.shape[0] + 1
    f[:] = 0.0
    for j in range(2):
        js = 1.0 - 2.0 * j
        Hj = H[j]
        _noise_block(Hj[0, 1], st.B[j], rho[j], st.G, cfg.use_gram)
        for r in range(m):
            a = A[j, r] + js * gamma[j, r]
            for i in range(n):
                Hj[0, 0, r, i] = max(st.yhat[i] * a, 0.0)
            _relu_inplace(Hj[0, 1, r])
        _upper_forward(U, j, Hj)
        _top_output(f, js * cfg.c, v[j], Hj[L - 1])


@njit(cache=True)
def _increments_deep(gamma, U, v, H, delta, qd, lp, st, mu2, c, eta, eta_v, train_v,
                     dgamma, drho, dU, dv):
    """Increments of (gamma, rho, U, v) at depth L >= 2 (formulas above);
    delta (L, 2, m, n) and qd (2, m, n) are work buffers."""
    m, n, L = gamma.shape[1], st.yhat.shape[0], U.shape[0] + 1
    cw = eta / n
    cv = eta_v * c / n
    for j in range(2):
        js = 1.0 - 2.0 * j
        Hj = H[j]
        for p in range(2):
            for k in range(m):
                vk = js * c * v[j, k, p]
                acc = 0.0
                for i in range(n):
                    h = Hj[L - 1, p, k, i]
                    delta[L - 1, p, k, i] = vk if h > 0.0 else 0.0
                    acc += lp[i] * st.y[i] * h
                dv[j, k, p] = -(cv * js * acc) if train_v else 0.0
        for l in range(L - 2, -1, -1):
            for p in range(2):  # qd = q delta[l+1]
                for k in range(m):
                    for i in range(n):
                        qd[p, k, i] = lp[i] * st.y[i] * delta[l + 1, p, k, i]
            for k in range(m):
                for r in range(m):
                    acc = 0.0
                    for p in range(2):
                        qk = qd[p, k]
                        hin = Hj[l, p, r]
                        for i in range(n):
                            acc += qk[i] * hin[i]
                    dU[l, j, k, r] = -(cw * acc)
            for p in range(2):
                for r in range(m):
                    row = delta[l, p, r]
                    row[:] = 0.0
                    for k in range(m):
                        u = U[l, j, k, r]
                        dk = delta[l + 1, p, k]
                        for i in range(n):
                            row[i] += u * dk[i]
                    hin = Hj[l, p, r]
                    for i in range(n):
                        row[i] = row[i] if hin[i] > 0.0 else 0.0
        for r in range(m):
            sg = 0.0
            for i in range(n):
                q = lp[i] * st.y[i]
                sg += q * st.yhat[i] * delta[0, 0, r, i]
                drho[j, r, i] = -(cw * st.N[i] * q * delta[0, 1, r, i])
            dgamma[j, r] = -(cw * mu2 * js * sg)


@njit(cache=True)
def _forward(A, gamma, rho, U, v, st, cfg, w):
    """Forward pass of the current state into the work buffers (any depth)."""
    if U.shape[0] == 0:
        _forward1(A, gamma, rho, v, st, cfg, w.s, w.z, w.f)
    else:
        _forward_deep(A, gamma, rho, U, v, st, cfg, w.H, w.f)


@njit(cache=True)
def _increments(gamma, rho, U, v, w, st, mu2, c, eta, eta_v, train_v, act, act_a):
    """Increments into w.dgamma, w.drho, w.dU, w.dv after ``_forward`` and
    l' (any depth).  The GD step uses (eta, eta_v); the normalised scheme
    scales both by its time step."""
    if U.shape[0] == 0:
        _increments1(gamma, rho, v, w.s, w.z, w.lp, st, mu2, c, eta, eta_v, train_v,
                     w.dgamma, w.drho, w.dv, act, act_a, w.qn, w.rows, False)
    else:
        _increments_deep(gamma, U, v, w.H, w.delta, w.qd, w.lp, st, mu2, c, eta, eta_v,
                         train_v, w.dgamma, w.drho, w.dU, w.dv)


class _Work(NamedTuple):
    s: np.ndarray      # (2, m) a_{j,r} = A + j gamma (depth 1; s_{j,r,i} = yhat_i a_{j,r})
    z: np.ndarray
    f: np.ndarray
    lp: np.ndarray
    dgamma: np.ndarray
    drho: np.ndarray
    dv: np.ndarray
    mg: np.ndarray
    mr: np.ndarray
    mv: np.ndarray
    H: np.ndarray      # (2, L, 2, m, n) hidden activations (depth >= 2; else empty)
    delta: np.ndarray  # (L, 2, m, n)    df/dpre of one class (depth >= 2)
    qd: np.ndarray     # (2, m, n)       l' y delta of one layer (depth >= 2)
    dU: np.ndarray     # (L-1, 2, m, m)
    mU: np.ndarray
    qn: np.ndarray     # (3, n) per-sample factors of the depth-1 increments
    rows: np.ndarray   # (3, m) per-filter sums of the depth-1 increments


@njit(cache=True)
def _work(m, n, L):
    """Buffers of one run at depth L (allocated once, reused at every step)."""
    Ld = L if L > 1 else 0
    return _Work(np.empty((2, m)), np.empty((2, m, n)), np.empty(n), np.empty(n),
                 np.empty((2, m)), np.empty((2, m, n)), np.empty((2, m, 2)),
                 np.zeros((2, m)), np.zeros((2, m, n)), np.zeros((2, m, 2)),
                 np.empty((2, Ld, 2, m, n)), np.empty((Ld, 2, m, n)),
                 np.empty((2 if L > 1 else 0, m, n)),
                 np.zeros((L - 1, 2, m, m)), np.zeros((L - 1, 2, m, m)),
                 np.empty((3, n)), np.empty((3, m)))


@njit(cache=True)
def _apply_all(gamma, rho, U, v, w, train_v, beta):
    """theta += u, u = beta u + delta for every trained block; returns 3 if a
    coefficient exceeds THETA_MAX, else 0."""
    bad = _apply(gamma.ravel(), w.dgamma.ravel(), w.mg.ravel(), beta)
    bad |= _apply(rho.ravel(), w.drho.ravel(), w.mr.ravel(), beta)
    if U.shape[0] > 0:
        bad |= _apply(U.ravel(), w.dU.ravel(), w.mU.ravel(), beta)
    if train_v:
        bad |= _apply(v.ravel(), w.dv.ravel(), w.mv.ravel(), beta)
    return 3 if bad else 0


@njit(cache=True)
def _step(mu2, gamma, rho, U, v, st, cfg, w, eta, eta_v, beta):
    """One step theta += u, u = beta u + delta(eta, eta_v) in place after
    ``_forward`` and l' filled the work buffers; returns 3 if a coefficient
    exceeds THETA_MAX, else 0.  Depth 1 without momentum adds the increments
    as they are formed (``_increments1`` inplace: the same numbers)."""
    if U.shape[0] == 0 and beta == 0.0:
        bad = _increments1(gamma, rho, v, w.s, w.z, w.lp, st, mu2, cfg.c, eta, eta_v,
                           cfg.train_v, w.dgamma, w.drho, w.dv, cfg.act, cfg.act_a, w.qn,
                           w.rows, True)
        return 3 if bad else 0
    _increments(gamma, rho, U, v, w, st, mu2, cfg.c, eta, eta_v, cfg.train_v, cfg.act,
                cfg.act_a)
    return _apply_all(gamma, rho, U, v, w, cfg.train_v, beta)


@njit(cache=True)
def _gd_step(A, mu2, gamma, rho, U, v, st, cfg, w):
    """One GD (or heavy-ball) step in place after ``_forward`` and ``_lprime``
    filled the work buffers; returns 3 if a coefficient exceeds THETA_MAX, else 0."""
    return _step(mu2, gamma, rho, U, v, st, cfg, w, cfg.eta, cfg.eta_v, cfg.beta)


@njit(cache=True)
def outputs_kernel(st, cfg, mu, gammas, rhos, Us, vs, out_f):
    """Training outputs f (R, n) of R recorded states (any depth)."""
    A = mu * st.w0_e1
    w = _work(gammas.shape[2], out_f.shape[1], Us.shape[1] + 1)
    for t in range(gammas.shape[0]):
        _forward(A, gammas[t], rhos[t], Us[t], vs[t], st, cfg, w)
        out_f[t] = w.f


@njit(cache=True)
def _train_error(f, y):
    err = 0.0
    for i in range(f.shape[0]):
        if y[i] * f[i] <= 0.0:
            err += 1.0
    return err / f.shape[0]


# ---------------------------------------------------------------- kernels
@njit(cache=True)
def run_kernel(st, cfg, mu, steps, record_every, gamma, rho, U, v,
               out_gamma, out_rho, out_U, out_v, out_loss, out_err, status):
    """Iterate the recursion ``steps`` times from the state (gamma, rho, U, v).

    The state arrays are updated in place (final state on return).  Records at
    t % record_every == 0 and at t == steps go to the out_* arrays.  On
    divergence status = (step, reason) and the run stops; else status[0] = -1.
    """
    m, n = gamma.shape[1], st.yhat.shape[0]
    A = mu * st.w0_e1
    w = _work(m, n, U.shape[0] + 1)
    status[0] = -1
    status[1] = 0
    rec = 0
    for t in range(steps + 1):
        _forward(A, gamma, rho, U, v, st, cfg, w)
        reason = _lprime(w.f, st.y, w.lp)
        if reason == 0 and (t % record_every == 0 or t == steps):
            out_gamma[rec] = gamma
            out_rho[rec] = rho
            out_U[rec] = U
            out_v[rec] = v
            out_loss[rec] = _loss(w.f, st.y)
            out_err[rec] = _train_error(w.f, st.y)
            rec += 1
        if reason == 0 and t < steps:
            reason = _gd_step(A, mu * mu, gamma, rho, U, v, st, cfg, w)
            if reason != 0:
                t += 1  # the new state is out of bounds
        if reason != 0:
            status[0] = t
            status[1] = reason
            return
        if t == steps:
            return


TEST_CHUNK = 128  # test points per block of ``test_outputs``: (m, 128) buffers stay in L1/L2
#                   and below malloc's mmap threshold (a (m, n_test) buffer per call was
#                   mmap'ed and unmapped each time, with TLB shootdowns across threads)


@njit(cache=True)
def test_outputs(A, gamma, rho, U, v, st, cfg, f):
    """f(x) of every test point into f (nt,).

    z_{j,r}(x) = <w0, xi> + sum_k (rho_{j,r,k}/N_k) <xi_k, xi> (the same
    blocked accumulation as training, ``_addmul_rows``; no BLAS, which would
    oversubscribe the cores inside prange), in blocks of TEST_CHUNK test
    points (each point's numbers do not depend on the blocking); depth >= 2
    continues through U (docs/theory.md#depth).
    """
    m, n, nt = gamma.shape[1], st.N.shape[0], f.shape[0]
    L = U.shape[0] + 1
    rhohat = np.empty((2, m, n))
    for j in range(2):
        for r in range(m):
            for k in range(n):
                rhohat[j, r, k] = rho[j, r, k] / st.N[k]
    ch = max(min(TEST_CHUNK, nt), 1)
    X = np.empty((n, ch))
    H = np.empty((L, 2, m, ch))  # depth 1: H[0, 1] is z of one class
    for q0 in range(0, nt, ch):
        N = min(ch, nt - q0)
        if N < ch:  # the last, shorter block
            X = np.empty((n, N))
            H = np.empty((L, 2, m, N))
        X[:, :] = st.test_X[:, q0:q0 + N]
        _test_outputs_block(A, gamma, rhohat, U, v, st, cfg, q0, X, H, f[q0:q0 + N])


@njit(cache=True)
def _test_outputs_block(A, gamma, rhohat, U, v, st, cfg, q0, X, H, f):
    """``test_outputs`` of the N test points q0 .. q0+N-1: X (n, N) their
    Gram rows, H (L, 2, m, N) buffer, f (N,)."""
    m, N, L = gamma.shape[1], f.shape[0], U.shape[0] + 1
    c = cfg.c
    yhat = st.test_yhat[q0:q0 + N]
    f[:] = 0.0
    for j in range(2):
        js = 1.0 - 2.0 * j
        z = H[0, 1]
        z[:, :] = st.test_B[j][:, q0:q0 + N]
        _addmul_rows(z, rhohat[j], X, True)
        if L == 1:
            _accumulate_outputs(f, js, c, A[j], gamma[j], v[j], yhat, z, cfg.act, cfg.act_a)
        else:  # docs/theory.md#depth: ReLU features of the first layer, then U
            for r in range(m):
                a = A[j, r] + js * gamma[j, r]
                for q in range(N):
                    H[0, 0, r, q] = max(yhat[q] * a, 0.0)
                _relu_inplace(z[r])
            _upper_forward(U, j, H)
            _top_output(f, js * c, v[j], H[L - 1])


@njit(cache=True)
def clean_error_kernel(A, gamma, rho, U, v, st, cfg):
    """Clean test error: fraction of test points with yhat f(x) <= 0."""
    f = np.empty(st.test_yhat.shape[0])
    test_outputs(A, gamma, rho, U, v, st, cfg, f)
    return _train_error(f, st.test_yhat)


@njit(cache=True)
def theta_norm_sq(A, mu, gamma, rho, U, v, st, train_v):
    """||theta||^2 = sum_{j,r} ||w_{j,r}||^2 + ||U||^2 + sum v^2 (docs/theory.md#training-time-and-flow; the
    v term only when v is trained: a frozen v is not a parameter), d-free:
    ||w||^2 = (<w0,e1> + j gamma/||mu||)^2 + ||P w0||^2 + 2 sum_k rhohat_k B_k
              + sum_{k,i} rhohat_k rhohat_i <xi_k, xi_i>,  rhohat = rho/N,
    with <xi_k, xi_i> = G_{k,i} N_k.  The inner sums
    q_k = sum_i G_{k,i} rho_i / N_i run for all k side by side (k innermost,
    over a transposed copy of G; each q_k still adds i = 0, 1, ... in order,
    the numbers of the plain double loop): SIMD divisions instead of a
    scalar division per term; k padded to whole 8-lane vectors (24 -> 11 us per
    job at n = m = 20 on an AVX-512 machine)."""
    m, n = gamma.shape[1], st.N.shape[0]
    nk = -(-n // 8) * 8  # k padded to whole 8-lane vectors (no scalar remainder loop)
    GT = np.zeros((n, nk))
    GT[:, :n] = st.G.T
    q = np.empty(nk)
    total = 0.0
    for j in range(2):
        js = 1.0 - 2.0 * j
        for r in range(m):
            e1 = A[j, r] / mu + js * gamma[j, r] / mu
            acc = e1 * e1 + st.w0_perp_sq[j, r]
            q[:] = 0.0
            for i in range(n):
                ri, Ni, Gi = rho[j, r, i], st.N[i], GT[i]
                for k in range(nk):
                    q[k] += Gi[k] * ri / Ni
            for k in range(n):
                rk = rho[j, r, k] / st.N[k]
                acc += 2.0 * rk * st.B[j, r, k]
                acc += rk * st.N[k] * q[k]
            total += acc
            if train_v:
                total += v[j, r, 0] ** 2 + v[j, r, 1] ** 2
    for x in U.ravel():
        total += x * x
    return total


# ---------------------------------------------------------------- long times
# Gradient flow of this ReLU model is non-smooth: wrong-class noise
# coefficients slide along z_{j,r,i} = 0 (the RHS jumps there), which pins any
# error-controlled embedded Runge-Kutta scheme to steps ~ tol / jump (measured:
# Dormand-Prince 5(4) at rtol 1e-6 spent 4e5 RHS evaluations to reach t = 0.5).
# Long times therefore use the loss-normalised explicit Euler scheme: GD with
# a time step of dt_k = min(L_0/L_k, max_dt_frac max(t, 1)) GD steps (Euler in
# the reparametrised time ds = L dt, docs/theory.md#training-time-and-flow, capped to a fraction of t), whose
# steps grow as the loss decays, so a decade of t costs a bounded number of
# steps (~115 at max_dt_frac = 0.02); early steps are smaller than GD's.


class FlowConfig(NamedTuple):
    """Long-time settings: step budget, step growth cap, GD horizon."""

    max_steps: int        # normalised steps allowed per run
    max_dt_frac: float    # a step moves the time by at most this fraction of t
    gd_max: float = 1e6   # integrator gd: a checkpoint later than this is reached by the flow


@njit(cache=True)
def _lprime_stable(f, y, lp):
    """l'_i = -1/(1 + exp(y_i f_i)) without overflow (exp of non-positive
    arguments only); returns (reason, loss) as ``_lprime``.  One exp per
    sample serves l' and the loss (``_logistic_loss``'s numbers)."""
    n = f.shape[0]
    loss = 0.0
    for i in range(n):
        yf = y[i] * f[i]
        if not np.isfinite(yf):
            return 1, np.inf
        if yf >= 0.0:
            e = np.exp(-yf)
            lp[i] = -e / (1.0 + e)
            loss += np.log1p(e)
        else:
            e = np.exp(yf)
            lp[i] = -1.0 / (1.0 + e)
            loss += -yf + np.log1p(e)
    return 0, loss / n


@njit(cache=True)
def normalised_dt(L0, loss, t, t_end, frac):
    """Time step (GD steps) of the normalised scheme: min(L0/L, frac max(t, 1),
    t_end - t); a zero loss (every l' underflowed) jumps to t_end."""
    if loss > 0.0:
        return min(L0 / loss, frac * max(t, 1.0), t_end - t)
    return t_end - t


@njit(cache=True)
def normalised_gd(A, mu, gamma, rho, U, v, st, cfg, fc, w, t, t_end, L0, count):
    """Advance in place from GD time t to t_end (in GD steps of cfg.eta) with
    the loss-normalised step: one step moves the time by
    ``normalised_dt`` GD steps (the last one lands on t_end); count[0] counts
    steps.
    Returns (reason, t): reason 0 ok, 1-3 divergence, 4 step budget spent.
    Depth 1 calls ``_forward1`` and the in-place ``_increments1`` directly
    (the numbers of ``_forward`` and ``_step``, without their call layers:
    see ``_gd_loop1``)."""
    depth1 = U.shape[0] == 0
    s, z, f, lp, qn, rows = w.s, w.z, w.f, w.lp, w.qn, w.rows
    while t < t_end:
        if count[0] >= fc.max_steps:
            return 4, t
        if depth1:
            _forward1(A, gamma, rho, v, st, cfg, s, z, f)
        else:
            _forward(A, gamma, rho, U, v, st, cfg, w)
        reason, loss = _lprime_stable(f, st.y, lp)
        if reason != 0:
            return reason, t
        dt = normalised_dt(L0, loss, t, t_end, fc.max_dt_frac)
        if depth1:
            bad = _increments1(gamma, rho, v, s, z, lp, st, mu * mu, cfg.c, cfg.eta * dt,
                               cfg.eta_v * dt, cfg.train_v, w.dgamma, w.drho, w.dv, cfg.act,
                               cfg.act_a, qn, rows, True)
            reason = 3 if bad else 0
        else:
            reason = _step(mu * mu, gamma, rho, U, v, st, cfg, w, cfg.eta * dt,
                           cfg.eta_v * dt, 0.0)
        count[0] += 1
        t = t_end if dt >= t_end - t else t + dt
        if reason != 0:
            return reason, t
    return 0, t


@njit(cache=True)
def _margin(A, mu, gamma, rho, U, v, st, f, cfg):
    """Normalised margin min_i y_i f_i / ||theta||^h (f: training outputs).
    f is homogeneous of degree h in the trained parameters theta, so this is
    scale-free: h = (L - 1) + q + [v trained], q = Q for relu^Q, else 1
    (the paper's model, L = 1 with v trained: / ||theta||^2, docs/theory.md#training-time-and-flow; a frozen
    v is left out of theta and of h, as in ``general._margin``)."""
    ymin = np.inf
    for i in range(f.shape[0]):
        ymin = min(ymin, st.y[i] * f[i])
    sq = theta_norm_sq(A, mu, gamma, rho, U, v, st, cfg.train_v)
    h = U.shape[0] + (cfg.act_a if cfg.act == 1 else 1.0) + (1.0 if cfg.train_v else 0.0)
    if h == 2.0:
        return ymin / sq
    return ymin / sq ** (0.5 * h)


@njit(cache=True)
def _checkpoint(q, c, A, mu, gamma, rho, U, v, st, cfg, w, out_test, out_loss, out_train,
                out_margin):
    """Write the checkpoint values of the state (test error, loss, train error,
    normalised margin) to column c of job q; returns the divergence reason."""
    _forward(A, gamma, rho, U, v, st, cfg, w)
    reason, loss = _lprime_stable(w.f, st.y, w.lp)
    if reason == 0:
        out_loss[q, c] = loss
        out_train[q, c] = _train_error(w.f, st.y)
        out_test[q, c] = clean_error_kernel(A, gamma, rho, U, v, st, cfg)
        out_margin[q, c] = _margin(A, mu, gamma, rho, U, v, st, w.f, cfg)
    return reason


@njit(cache=True)
def _gd_loop1(A, mu2, gamma, rho, v, st, cfg, w, t, target):
    """``_advance``'s GD steps at depth 1 without momentum (``_forward1``,
    ``_lprime``, the in-place ``_increments1``) in the filter-transposed
    layout: rho and z as (n, 2m) (filter p = j m + r innermost, padded to
    whole 8-lane vectors), so that the Gram product is one blocked product
    over rows of 2m filters of both classes (``_addmul_rows`` with rows =
    samples) and the increments run as SIMD loops over the 2m filters
    instead of loops of length n or m with scalar remainders (n = m = 20:
    ~1.5x faster per step).  Every number is formed by the operations of
    ``_forward1`` + ``_increments1`` in their order (sums over k and i
    ascending, f_i over p ascending from 0), so the results are theirs bit
    for bit (tests/test_reduction.py).  rho is converted on entry and
    exit; w.s, w.z, w.f, w.lp end as ``_forward1`` + ``_lprime`` leave them.
    Returns (reason, t)."""
    if cfg.act == 0:
        return _gd_loop1_body(A, mu2, gamma, rho, v, st, cfg, w, t, target, 0, 0.0)
    return _gd_loop1_body(A, mu2, gamma, rho, v, st, cfg, w, t, target, cfg.act, cfg.act_a)


@njit(cache=True, inline="always")
def _gd_loop1_body(A, mu2, gamma, rho, v, st, cfg, w, t, target, act, act_a):
    """``_gd_loop1`` for activation (act, act_a)."""
    m, n = gamma.shape[1], st.yhat.shape[0]
    M = 2 * m
    Mp = -(-M // 8) * 8
    buf = np.zeros((4, n, Mp))  # once per segment, not per step
    rhoT, zT, BT, Tm = buf[0], buf[1], buf[2], buf[3]
    rows = np.zeros((9, Mp))  # per filter: a, v1, v2, j c, j, signal and noise sums
    ap, v1p, v2p, jc, jsp, sg, sv1, sv2 = (rows[0], rows[1], rows[2], rows[3], rows[4],
                                          rows[5], rows[6], rows[7])
    GT = np.ascontiguousarray(st.G.T)  # GT[i, k] = G[k, i]
    yhat, y, N, c, use_gram, train_v = st.yhat, st.y, st.N, cfg.c, cfg.use_gram, cfg.train_v
    cw = cfg.eta * c / n
    cv = cfg.eta_v * c / n
    q, qy = w.qn[0], w.qn[1]
    f, lp = w.f, w.lp
    for j in range(2):
        js = 1.0 - 2.0 * j
        for r in range(m):
            p = j * m + r
            jc[p] = js * c
            jsp[p] = js
            for i in range(n):
                rhoT[i, p] = rho[j, r, i]
                BT[i, p] = st.B[j, r, i]
    while True:
        # forward (``_forward1``): a, z = B + rho G, f_i = sum_p j c [v1 s(yhat_i a) + v2 s(z)]
        for j in range(2):
            js = 1.0 - 2.0 * j
            for r in range(m):
                p = j * m + r
                a = A[j, r] + js * gamma[j, r]
                w.s[j, r] = a
                ap[p] = a
                v1p[p] = v[j, r, 0]
                v2p[p] = v[j, r, 1]
        if use_gram:
            _gram_block(zT, BT, GT, rhoT)  # z_i = B_i + sum_k G_ki rho_k, rows i
        else:
            for i in range(n):
                for p in range(Mp):
                    zT[i, p] = BT[i, p] + rhoT[i, p]
        for i in range(n):
            yh, zi, Ti = yhat[i], zT[i], Tm[i]
            for p in range(Mp):
                Ti[p] = jc[p] * (v1p[p] * _sig(yh * ap[p], act, act_a)
                                 + v2p[p] * _sig(zi[p], act, act_a))
        i0 = 0
        while i0 + 4 <= n:  # f_i: p ascending from 0, four samples side by side
            T0, T1, T2, T3 = Tm[i0], Tm[i0 + 1], Tm[i0 + 2], Tm[i0 + 3]
            f0 = 0.0
            f1 = 0.0
            f2 = 0.0
            f3 = 0.0
            for p in range(M):
                f0 += T0[p]
                f1 += T1[p]
                f2 += T2[p]
                f3 += T3[p]
            f[i0], f[i0 + 1], f[i0 + 2], f[i0 + 3] = f0, f1, f2, f3
            i0 += 4
        for i in range(i0, n):
            f0 = 0.0
            for p in range(M):
                f0 += Tm[i, p]
            f[i] = f0
        reason = _lprime(f, y, lp)
        if reason != 0 or t >= target:
            break
        # increments (``_increments1``, in place)
        bad = False
        for i in range(n):
            q[i] = lp[i] * y[i]
            qy[i] = q[i] * yhat[i]
        sg[:] = 0.0
        sv1[:] = 0.0
        sv2[:] = 0.0
        for i in range(n):
            yh, qi, qyi, cN = yhat[i], q[i], qy[i], cw * N[i]
            zi, ri = zT[i], rhoT[i]
            for p in range(Mp):
                si = yh * ap[p]
                ms = _dsig(si, act, act_a)
                sg[p] += qyi * ms
                sv1[p] += qi * _sig_from(si, ms, act, act_a)
                zp = zi[p]
                dz = _dsig(zp, act, act_a)
                x = ri[p] + (-((cN * jsp[p] * qi) * v2p[p]) * dz)
                ri[p] = x
                bad |= not abs(x) <= THETA_MAX
                sv2[p] += qi * _sig_from(zp, dz, act, act_a)
        for j in range(2):
            js = 1.0 - 2.0 * j
            for r in range(m):
                p = j * m + r
                x = gamma[j, r] + (-(cw * mu2 * v[j, r, 0] * sg[p]))
                gamma[j, r] = x
                bad |= not abs(x) <= THETA_MAX
                if train_v:
                    x1 = v[j, r, 0] + (-(cv * js * sv1[p]))
                    x2 = v[j, r, 1] + (-(cv * js * sv2[p]))
                    v[j, r, 0] = x1
                    v[j, r, 1] = x2
                    bad |= not (abs(x1) <= THETA_MAX and abs(x2) <= THETA_MAX)
        t += 1.0
        if bad:
            reason = 3
            break
    for j in range(2):
        for r in range(m):
            p = j * m + r
            for i in range(n):
                rho[j, r, i] = rhoT[i, p]
                w.z[j, r, i] = zT[i, p]
    return reason, t


@njit(cache=True)
def _advance(A, mu, gamma, rho, U, v, st, cfg, fc, use_flow, w, t, target, L0, count):
    """Move the state from GD time t to ``target`` (GD steps, finite: the
    limit is the program of ``dynamics.limit``): GD steps unless use_flow or
    target > fc.gd_max (then the normalised scheme).  Returns (reason, t)."""
    if np.isinf(target):
        raise ValueError("t = inf is the limit program (dynamics.limit), not a kernel time")
    if use_flow or target > fc.gd_max:
        return normalised_gd(A, mu, gamma, rho, U, v, st, cfg, fc, w, t, target, L0, count)
    if U.shape[0] == 0 and cfg.beta == 0.0:
        return _gd_loop1(A, mu * mu, gamma, rho, v, st, cfg, w, t, target)
    reason = 0
    while True:
        _forward(A, gamma, rho, U, v, st, cfg, w)
        reason = _lprime(w.f, st.y, w.lp)
        if reason != 0 or t >= target:
            break
        reason = _gd_step(A, mu * mu, gamma, rho, U, v, st, cfg, w)
        t += 1.0
        if reason != 0:
            break
    return reason, t


@njit(cache=True)
def _initial_loss(A, gamma, rho, U, v, st, cfg, w):
    """L_0 of the initial state (the normalised scheme's reference loss)."""
    _forward(A, gamma, rho, U, v, st, cfg, w)
    reason, loss = _lprime_stable(w.f, st.y, w.lp)
    return loss if reason == 0 else 1.0


@njit(cache=True)
def _job_stats(st, si):
    """The statistics of seed index si of stacked statistics."""
    return KStats(st.w0_e1[si], st.w0_perp_sq[si], st.B[si], st.G[si], st.N[si],
                  st.yhat[si], st.y[si], st.test_yhat[si], st.test_B[si], st.test_X[si],
                  st.U0[si])


@njit(cache=True)
def _reset_job(q, out_test, out_loss, out_train, out_margin, out_status, out_info):
    """Outputs of job q before it runs: NaN results, status (-1, 0), no limit."""
    out_status[q, 0] = -1
    out_status[q, 1] = 0
    out_info[q, 0] = -1.0
    out_info[q, 1] = 0.0
    out_info[q, 2] = 0.0
    out_info[q, 3] = -1.0
    out_test[q, :] = np.nan
    out_loss[q, :] = np.nan
    out_train[q, :] = np.nan
    out_margin[q, :] = np.nan


@njit(cache=True)
def _continue_job(q, c0, t, A, mu, gamma, rho, U, v, s, cfg, fc, use_flow, w, L0, count,
                  checkpoints, out_test, out_loss, out_train, out_margin, out_status,
                  out_info):
    """Job q from GD time t at checkpoint index c0 on: advance to each
    checkpoint and write its values (``_run_job``); the state moves in place."""
    for c in range(c0, checkpoints.shape[0]):
        reason, t = _advance(A, mu, gamma, rho, U, v, s, cfg, fc, use_flow, w, t,
                             checkpoints[c], L0, count)
        if reason == 0:
            reason = _checkpoint(q, c, A, mu, gamma, rho, U, v, s, cfg, w, out_test, out_loss,
                                 out_train, out_margin)
        if reason != 0:
            out_status[q, 0] = int(min(t, 4e18))
            out_status[q, 1] = reason
            break
    out_info[q, 1] = t
    out_info[q, 2] = count[0]


@njit(cache=True)
def _run_job(q, st, cfg, fc, use_flow, job_seed, job_mu, job_v0, checkpoints, out_test,
             out_loss, out_train, out_margin, out_status, out_info):
    """Job q of a batch: train from (0, U0, v0); at each checkpoint (GD steps,
    ascending, finite) write test error, loss, train error and normalised
    margin min_i y_i f_i / ||theta||^(L+1) (NaN after a divergence).
    out_info[q] = (-1, final time in GD steps, normalised steps taken, -1);
    the limit's columns 0 and 3 are filled by ``limit_run.limit_batch``.
    Returns the final state and buffers (``_start_job``'s tuple).
    """
    s, mu, A, gamma, rho, U, v, w, count, L0 = _start_job(q, st, cfg, job_seed, job_mu,
                                                          job_v0)
    _reset_job(q, out_test, out_loss, out_train, out_margin, out_status, out_info)
    _continue_job(q, 0, 0.0, A, mu, gamma, rho, U, v, s, cfg, fc, use_flow, w, L0, count,
                  checkpoints, out_test, out_loss, out_train, out_margin, out_status,
                  out_info)
    return s, mu, A, gamma, rho, U, v, w, count, L0


@njit(cache=True)
def _start_job(q, st, cfg, job_seed, job_mu, job_v0):
    """Initial state of job q: (stats, mu, A, gamma = 0, rho = 0, U0, v = v0,
    work buffers, step count, initial loss L0)."""
    s = _job_stats(st, job_seed[q])
    mu = job_mu[q]
    m, n = s.B.shape[1], s.yhat.shape[0]
    A = mu * s.w0_e1
    gamma = np.zeros((2, m))
    rho = np.zeros((2, m, n))
    U = s.U0.copy()
    v = np.full((2, m, 2), job_v0[q])
    w = _work(m, n, U.shape[0] + 1)
    count = np.zeros(1, dtype=np.int64)
    L0 = _initial_loss(A, gamma, rho, U, v, s, cfg, w)
    return s, mu, A, gamma, rho, U, v, w, count, L0


@njit(cache=True, parallel=True)
def pattern_kernel(st, cfg, fc, use_flow, job_seed, job_mu, job_v0, checkpoints, t_pattern,
                   out_test, out_loss, out_train, out_margin, out_status, out_info, out_gamma,
                   out_rho, out_v):
    """``batch_kernel`` for runs whose last time is the limit (depth 1): the
    K - 1 finite checkpoints as there, then the normalised flow on to GD time
    t_pattern, whose checkpoint values go to column K - 1 and whose state
    (gamma, rho, v) to out_gamma[q], out_rho[q], out_v[q]: the pattern that
    seeds the limit program (``dynamics.limit``).  prange over jobs, each
    job in its own function (``_pattern_job``: its locals stay private to
    the thread); results do not depend on the threads."""
    for q in prange(job_seed.shape[0]):
        _pattern_job(q, st, cfg, fc, use_flow, job_seed, job_mu, job_v0, checkpoints,
                     t_pattern, out_test, out_loss, out_train, out_margin, out_status,
                     out_info, out_gamma, out_rho, out_v)


@njit(cache=True)
def _pattern_job(q, st, cfg, fc, use_flow, job_seed, job_mu, job_v0, checkpoints, t_pattern,
                 out_test, out_loss, out_train, out_margin, out_status, out_info, out_gamma,
                 out_rho, out_v):
    """Job q of ``pattern_kernel``: ``_run_job`` over the finite
    checkpoints, then the flow to t_pattern."""
    K = out_test.shape[1]
    s, mu, A, gamma, rho, U, v, w, count, L0 = _run_job(
        q, st, cfg, fc, use_flow, job_seed, job_mu, job_v0, checkpoints, out_test, out_loss,
        out_train, out_margin, out_status, out_info)
    if out_status[q, 0] >= 0:
        return
    reason, t = normalised_gd(A, mu, gamma, rho, U, v, s, cfg, fc, w, out_info[q, 1],
                              max(t_pattern, out_info[q, 1]), L0, count)
    if reason == 0:
        reason = _checkpoint(q, K - 1, A, mu, gamma, rho, U, v, s, cfg, w, out_test,
                             out_loss, out_train, out_margin)
    if reason != 0:
        out_status[q, 0] = int(min(t, 4e18))
        out_status[q, 1] = reason
    out_info[q, 1] = t
    out_info[q, 2] = count[0]
    out_gamma[q] = gamma
    out_rho[q] = rho
    out_v[q] = v


# ---------------------------------------------------------------- groups
# Jobs that share a seed share every statistic (B, G, N, labels, test data);
# only A = ||mu|| <w0, e_1> and v0 differ.  A *group* of C such jobs advances
# together with the job as the innermost, contiguous axis (state (2, m, [n,]
# [2,] C)), so the Gram products (training z = B + rho G, test outputs) and
# the increments run as SIMD loops of length C instead of n: GD segments,
# the normalised scheme (each job its own step and time; a job that has
# arrived gets step 0) and the checkpoint values.  Every
# job performs the floating-point operations of the one-job code
# (``_forward1``, ``_increments1``, ``_apply``, ``test_outputs``,
# ``_checkpoint``) in the same order, so results equal the
# one-job path bit for bit (tests/test_groups.py); increments are applied in
# place as they are formed (exact: the increment of (j, r) reads only the
# state of (j, r) and l', fixed for the step).  A finished job is zeroed and
# stepped with step size 0 until its group ends.

GROUP_MAX = 64  # jobs per group (state of 64 jobs at n = m = 20: ~1.2 MB; 64 was 7-10% faster
#                 than 32 per default-sweep chunk, T = 200 and T = 200, inf alike)
GROUP_MAX_F32 = 128  # float32 groups: 1.2x faster per job than 64 (T = 200), 1.1-1.2x with
#                      the limit; 256 no better (float64: 128 is 1.03x, so 64 stays)
GROUP_MIN = 28  # smaller groups run job by job (benchmarks/groups.py --mus 16/24/28 against
#                 the one-job step: 0.59-0.86x at 16, 0.80-0.99x at 24, 1.08-1.49x at 28)
GROUP_TEST_MAX = 2 ** 21  # test outputs (nt, C) of a group at most this many values


@njit(cache=True)
def _outputs_group(A, gamma, rho, v, B, G, yhat, use_gram, cc, a, h, z, f):
    """Outputs f (N, C) of C jobs on N points with signal labels yhat (N,) of
    +-1, <w0, xi> = B (2, m, N) and Gram rows G (n, N): ``_forward1``
    (training: B, G, yhat of the training set, z (2, m, N, C) kept for the
    increments) and ``test_outputs`` (rho = rho/N, the test set, z (1, 1, N, C)
    scratch), with the job as the innermost axis, in the one-job code's
    operation order.  a (C,), h (2, C): buffers; h = v1 ReLU(+-a), the signal
    term of the two clean classes (yhat_i a = +-a exactly).  Arithmetic in
    f's dtype (constants of that type: float32 groups stay float32)."""
    m, N, C = gamma.shape[1], f.shape[0], f.shape[1]
    Zj, Zr = z.shape[0], z.shape[1]
    zero = f.dtype.type(0.0)
    f[:, :] = zero
    hp, hm = h[0], h[1]
    for j in range(2):
        js = f.dtype.type(1.0 - 2.0 * j)
        jc = js * f.dtype.type(cc)
        for r in range(m):
            v1 = v[j, r, 0]
            v2 = v[j, r, 1]
            for c in range(C):
                a[c] = A[j, r, c] + js * gamma[j, r, c]
                hp[c] = v1[c] * max(a[c], zero)
                hm[c] = v1[c] * max(-a[c], zero)
            zr = z[j % Zj, r % Zr]
            for i in range(N):
                b = B[j, r, i]
                for c in range(C):
                    zr[i, c] = b
            if use_gram:
                _addmul_rows(zr, G.T, rho[j, r], C >= 24)  # z_i += sum_k G_ki rho_k
            else:
                for i in range(N):
                    for c in range(C):
                        zr[i, c] += rho[j, r, i, c]
            for i in range(N):
                hi = hp if yhat[i] > 0.0 else hm
                zi = zr[i]
                fi = f[i]
                for c in range(C):
                    fi[c] += jc * (hi[c] + v2[c] * max(zi[c], zero))


@njit(cache=True)
def _forward_group(A, gamma, rho, v, st, cfg, a, h, z, f):
    """``_forward1`` for C jobs at once: z (2, m, n, C), f (n, C)."""
    _outputs_group(A, gamma, rho, v, st.B, st.G, st.yhat, cfg.use_gram, cfg.c, a, h, z, f)


@njit(cache=True)
def _step_group(gr, st, cfg, beta):
    """``_increments1`` + ``_apply`` (momentum beta) for the C jobs of group
    gr with step sizes gr.eta, gr.eta_v (C,), from gr.z, gr.lp, applied in
    place; gr.big (C,) receives max |theta| of each job (gamma, rho, and v
    when trained).  A job with eta = eta_v = 0 does not move.  ReLU with
    yhat_i = +-1: 1[yhat_i a > 0] keeps the samples of one clean class (a > 0:
    yhat = +1, a < 0: yhat = -1, a = 0: none), so the signal sum
    sum_i q_i yhat_i 1[.] is a class sum of q yhat formed once per step and
    sum_i q_i ReLU(yhat_i a) runs over that class; the dropped terms are exact
    zeros and a sum started at +0.0 is never -0.0, so the results are the
    one-job path's bit for bit.  Loops touch few arrays each, so they vectorise;
    one pass over z per filter updates rho and forms sum_i q_i ReLU(z_i) (i
    ascending).  beta = 0 (plain GD, the sweeps) adds the rho increment
    without the momentum buffer: the same numbers (mr = 0 mr + delta = delta;
    rho, started at +0.0, is never -0.0), ~7% faster per step at C = 64.
    Arithmetic in the state's dtype (typed constants; float64: the same numbers)."""
    A, mu2, gamma, rho, v = gr.A, gr.mu2, gr.gamma, gr.rho, gr.v
    mg, mr, mv, z, lp, a = gr.mg, gr.mr, gr.mv, gr.z, gr.lp, gr.a
    q, P, cw, cv, big = gr.q, gr.P, gr.cw, gr.cv, gr.big
    sp, sm, sg, sv1, sv2 = gr.cs[0], gr.cs[1], gr.cs[2], gr.cs[3], gr.cs[4]
    tp, tm = gr.cs[5], gr.cs[6]
    m, n, C = gamma.shape[1], lp.shape[0], lp.shape[1]
    y, yhat = st.y, st.yhat
    zero, one, b = lp.dtype.type(0.0), lp.dtype.type(1.0), lp.dtype.type(beta)
    plain = beta == 0.0
    big[:] = zero
    for c in range(C):
        cw[c] = gr.eta[c] * cfg.c / n
        cv[c] = gr.eta_v[c] * cfg.c / n
        sp[c] = 0.0
        sm[c] = 0.0
    for i in range(n):  # q_i = l'_i y_i; class sums of q_i yhat_i
        yi, yh, li, qi = y[i], yhat[i], lp[i], q[i]
        s_cls = sp if yh > zero else sm
        for c in range(C):
            qi[c] = li[c] * yi
            s_cls[c] += qi[c] * yh
    for j in range(2):
        js = lp.dtype.type(1.0 - 2.0 * j)
        for i in range(n):  # P_i = (eta c / n) N_i j q_i
            Ni, qi, Pi = st.N[i], q[i], P[i]
            for c in range(C):
                Pi[c] = cw[c] * Ni * js * qi[c]
        for r in range(m):
            for c in range(C):
                a[c] = A[j, r, c] + js * gamma[j, r, c]
                sg[c] = sp[c] if a[c] > zero else (sm[c] if a[c] < zero else zero)
            v2 = v[j, r, 1]
            for c in range(C):
                sv2[c] = zero
            # rho_{j,r,i} -= eta c/n N_i j q_i v2 1[z > 0]; sum_i q_i ReLU(z_i)
            if plain:
                for i in range(n):
                    zi, Pi, qi, rho_i = z[j, r, i], P[i], q[i], rho[j, r, i]
                    for c in range(C):
                        zc = zi[c]
                        x = rho_i[c] + (-(Pi[c] * v2[c]) * (one if zc > zero else zero))
                        rho_i[c] = x
                        big[c] = np.maximum(big[c], np.abs(x))
                        sv2[c] += qi[c] * max(zc, zero)
            else:
                for i in range(n):
                    zi, Pi, qi, rho_i, mr_i = z[j, r, i], P[i], q[i], rho[j, r, i], mr[j, r, i]
                    for c in range(C):
                        zc = zi[c]
                        mr_i[c] = b * mr_i[c] + (-(Pi[c] * v2[c]) * (one if zc > zero else zero))
                        rho_i[c] += mr_i[c]
                        big[c] = np.maximum(big[c], np.abs(rho_i[c]))
                        sv2[c] += qi[c] * max(zc, zero)
            for c in range(C):
                mg[j, r, c] = b * mg[j, r, c] + (-(cw[c] * mu2[c] * v[j, r, 0, c] * sg[c]))
                gamma[j, r, c] += mg[j, r, c]
                big[c] = np.maximum(big[c], np.abs(gamma[j, r, c]))
            if cfg.train_v:
                for c in range(C):
                    tp[c] = zero
                    tm[c] = zero
                for i in range(n):  # sum_i q_i ReLU(yhat_i a) over the class of sign(a)
                    yh, qi = yhat[i], q[i]
                    t_cls = tp if yh > zero else tm
                    for c in range(C):
                        t_cls[c] += qi[c] * (yh * a[c])
                for c in range(C):
                    sv1[c] = tp[c] if a[c] > zero else (tm[c] if a[c] < zero else zero)
                    mv[j, r, 0, c] = b * mv[j, r, 0, c] + (-(cv[c] * js * sv1[c]))
                    mv[j, r, 1, c] = b * mv[j, r, 1, c] + (-(cv[c] * js * sv2[c]))
                    v[j, r, 0, c] += mv[j, r, 0, c]
                    v[j, r, 1, c] += mv[j, r, 1, c]
                    big[c] = np.maximum(big[c], np.maximum(np.abs(v[j, r, 0, c]), np.abs(v[j, r, 1, c])))


@njit(cache=True)
def _lprime_group(f, y, lp, reason, worst):
    """``_lprime`` for every job of a group: lp (n, C), reason (C,); worst
    (C,) is a buffer for max_i(-y_i f_i)."""
    n, C = f.shape
    one = lp.dtype.type(1.0)
    worst[:] = -np.inf
    for i in range(n):
        for c in range(C):
            yf = y[i] * f[i, c]
            lp[i, c] = -one / (one + np.exp(yf))
            worst[c] = max(worst[c], -yf)
    for c in range(C):
        reason[c] = 0
        if not np.isfinite(worst[c]):
            reason[c] = 1
        elif worst[c] > LOSS_MAX - 1.0 and _loss(np.ascontiguousarray(f[:, c]), y) > LOSS_MAX:
            reason[c] = 2


@njit(cache=True)
def _gather(c, gamma, rho, v, gamma1, rho1, v1):
    """The state of job c of a group into one-job arrays."""
    for j in range(2):
        for r in range(gamma.shape[1]):
            gamma1[j, r] = gamma[j, r, c]
            v1[j, r, 0] = v[j, r, 0, c]
            v1[j, r, 1] = v[j, r, 1, c]
            for i in range(rho.shape[2]):
                rho1[j, r, i] = rho[j, r, i, c]


class _Group(NamedTuple):
    """State and buffers of a group of C jobs of one seed (``_run_group``)."""

    A: np.ndarray      # (2, m, C)    ||mu||_c <w0, e_1>
    mu: np.ndarray     # (C,)
    mu2: np.ndarray    # (C,)
    gamma: np.ndarray  # (2, m, C)
    rho: np.ndarray    # (2, m, n, C)
    v: np.ndarray      # (2, m, 2, C)
    mg: np.ndarray     # momentum of gamma, rho, v
    mr: np.ndarray
    mv: np.ndarray
    z: np.ndarray      # (2, m, n, C)
    f: np.ndarray      # (n, C)
    lp: np.ndarray     # (n, C)
    a: np.ndarray      # (C,) buffer
    h: np.ndarray      # (2, C) buffer: v1 ReLU(+-a)
    q: np.ndarray      # (n, C) buffers of _step_group: l'_i y_i, (eta c/n) N_i j q_i
    P: np.ndarray
    cs: np.ndarray     # (7, C) buffer: class and filter sums of _step_group
    big: np.ndarray
    eta: np.ndarray    # (C,) step sizes of the current step
    dt: np.ndarray     # (C,) time step of the normalised scheme
    eta_v: np.ndarray
    cw: np.ndarray     # (C,) buffers: eta c / n, eta_v c / n, max_i(-y_i f_i)
    cv: np.ndarray
    worst: np.ndarray
    reason: np.ndarray  # (C,) int64
    alive: np.ndarray   # (C,) bool: not finished
    t: np.ndarray       # (C,) GD time of each job
    count: np.ndarray   # (C,) int64 normalised steps
    L0: np.ndarray      # (C,) initial loss
    rhohat: np.ndarray  # (2, m, n, C) rho / N (test outputs)
    ztest: np.ndarray   # (1, 1, nt, C)
    ftest: np.ndarray   # (nt, C) test outputs
    loss: np.ndarray    # (C,) measured by _measure_group: loss, errors, margin
    train: np.ndarray
    test: np.ndarray
    margin: np.ndarray


@njit(cache=True)
def _group(s, mus, v0s):
    """Initial state (0, 0, v0) of C jobs of one seed, in the dtype of the
    statistics s (float64, or float32 for ``--precision float32``); times,
    step counts and the measured results stay float64."""
    C = mus.shape[0]
    m, n, nt = s.B.shape[1], s.yhat.shape[0], s.test_yhat.shape[0]
    dt = s.B.dtype
    A = np.empty((2, m, C), dt)
    v = np.empty((2, m, 2, C), dt)
    mu2 = np.empty(C, dt)
    for c in range(C):
        mu2[c] = mus[c] * mus[c]
        A[:, :, c] = mus[c] * s.w0_e1
        v[:, :, :, c] = v0s[c]
    return _Group(A, mus.copy(), mu2, np.zeros((2, m, C), dt), np.zeros((2, m, n, C), dt), v,
                  np.zeros((2, m, C), dt), np.zeros((2, m, n, C), dt),
                  np.zeros((2, m, 2, C), dt),
                  np.empty((2, m, n, C), dt), np.empty((n, C), dt), np.empty((n, C), dt),
                  np.empty(C, dt), np.empty((2, C), dt), np.empty((n, C), dt),
                  np.empty((n, C), dt), np.empty((7, C), dt), np.empty(C, dt),
                  np.zeros(C, dt), np.zeros(C), np.zeros(C, dt), np.empty(C, dt),
                  np.empty(C, dt), np.empty(C, dt), np.zeros(C, dtype=np.int64),
                  np.ones(C, dtype=np.bool_), np.zeros(C), np.zeros(C, dtype=np.int64),
                  np.ones(C), np.empty((2, m, n, C), dt), np.empty((1, 1, nt, C), dt),
                  np.empty((nt, C), dt), np.empty(C), np.empty(C), np.empty(C), np.empty(C))


@njit(cache=True)
def _retire(gr, c, q, reason, out_status):
    """Job c (= job q) of a group stops at its time t[c] for ``reason``
    (divergence 1-3, step budget 4): record it, mark it finished and zero its
    state (it keeps being stepped with zero step size, harmless finite
    arithmetic, but is never read)."""
    out_status[q, 0] = int(min(gr.t[c], 4e18))
    out_status[q, 1] = reason
    gr.alive[c] = False
    gr.gamma[:, :, c] = 0.0
    gr.rho[:, :, :, c] = 0.0
    gr.v[:, :, :, c] = 0.0
    gr.mg[:, :, c] = 0.0
    gr.mr[:, :, :, c] = 0.0
    gr.mv[:, :, :, c] = 0.0


@njit(cache=True)
def _test_outputs_group(gr, s, cfg, gamma, rho, v, ftest):
    """``test_outputs`` of the group's jobs at state (gamma, rho, v) into
    ftest (nt, C)."""
    m, n, C = gamma.shape[1], rho.shape[2], gamma.shape[2]
    for j in range(2):
        for r in range(m):
            for k in range(n):
                for c in range(C):
                    gr.rhohat[j, r, k, c] = rho[j, r, k, c] / s.N[k]
    _outputs_group(gr.A, gamma, gr.rhohat, v, s.test_B, s.test_X, s.test_yhat, True, cfg.c,
                   gr.a, gr.h, gr.ztest, ftest)


@njit(cache=True)
def _measure_group(gr, s, sh, cfg, which, gamma1, rho1, U1, v1, with_test):
    """``_checkpoint`` for the jobs with which[c], outputs of all jobs at once:
    reason[c] (divergence 1, else 0), the normalised margin (gr.margin) and,
    if reason 0, loss, train error and clean test error (gr.loss, gr.train,
    gr.test; only with with_test, else the test error is not computed).
    Outputs from the statistics sh in the group's dtype; loss and margin in
    float64 (statistics s, the job's state gathered into float64 arrays)."""
    C = gr.f.shape[1]
    _forward_group(gr.A, gr.gamma, gr.rho, gr.v, sh, cfg, gr.a, gr.h, gr.z, gr.f)
    if with_test:
        _test_outputs_group(gr, sh, cfg, gr.gamma, gr.rho, gr.v, gr.ftest)
    for c in range(C):
        gr.reason[c] = 0
        if not which[c]:
            continue
        reason, loss = _lprime_stable(gr.f[:, c], s.y, gr.lp[:, c])
        gr.reason[c] = reason
        _gather(c, gr.gamma, gr.rho, gr.v, gamma1, rho1, v1)
        gr.margin[c] = _margin(gr.mu[c] * s.w0_e1, gr.mu[c], gamma1, rho1, U1, v1, s,
                               gr.f[:, c], cfg)
        if reason == 0:
            gr.loss[c] = loss
            gr.train[c] = _train_error(gr.f[:, c], s.y)
            if with_test:
                gr.test[c] = _train_error(gr.ftest[:, c], s.test_yhat)


@njit(cache=True)
def _record_group(gr, k, q0, out_test, out_loss, out_train, out_margin, out_status):
    """Checkpoint k of every running job from ``_measure_group``; a job whose
    outputs are not finite stops there."""
    for c in range(gr.mu.shape[0]):
        if not gr.alive[c]:
            continue
        q = q0 + c
        if gr.reason[c] != 0:
            _retire(gr, c, q, gr.reason[c], out_status)
            continue
        out_test[q, k] = gr.test[c]
        out_loss[q, k] = gr.loss[c]
        out_train[q, k] = gr.train[c]
        out_margin[q, k] = gr.margin[c]


@njit(cache=True)
def _gd_group(gr, s, cfg, target, q0, out_status):
    """GD steps of every running job from the common time to ``target``
    (``_advance`` with GD, job by job semantics)."""
    C = gr.mu.shape[0]
    gr.eta[:] = cfg.eta
    gr.eta_v[:] = cfg.eta_v
    t = gr.t.max()  # the common time of the running jobs (finished ones stopped earlier)
    while True:
        _forward_group(gr.A, gr.gamma, gr.rho, gr.v, s, cfg, gr.a, gr.h, gr.z, gr.f)
        _lprime_group(gr.f, s.y, gr.lp, gr.reason, gr.worst)
        for c in range(C):
            if gr.alive[c] and gr.reason[c] != 0:
                _retire(gr, c, q0 + c, gr.reason[c], out_status)
        if t >= target:
            break
        _step_group(gr, s, cfg, cfg.beta)
        t += 1.0
        for c in range(C):
            if gr.alive[c]:
                gr.t[c] = t
                if not gr.big[c] <= THETA_MAX:
                    _retire(gr, c, q0 + c, 3, out_status)


@njit(cache=True)
def _normalised_group(gr, s, cfg, fc, running, t_end, stop):
    """``normalised_gd`` for the jobs with running[c]: each from its time t[c]
    to t_end with its own loss-normalised step (the others get step 0).
    stop[c] = reason (0 ok, 1-3 divergence, 4 step budget) of each job."""
    C = gr.mu.shape[0]
    stop[:] = 0
    moving = running.copy()
    while True:
        left = False
        for c in range(C):
            if moving[c] and not gr.t[c] < t_end:
                moving[c] = False
            if moving[c] and gr.count[c] >= fc.max_steps:
                stop[c] = 4
                moving[c] = False
            left |= moving[c]
        if not left:
            return
        _forward_group(gr.A, gr.gamma, gr.rho, gr.v, s, cfg, gr.a, gr.h, gr.z, gr.f)
        for c in range(C):
            gr.eta[c] = 0.0
            gr.eta_v[c] = 0.0
            if moving[c]:
                reason, loss = _lprime_stable(gr.f[:, c], s.y, gr.lp[:, c])
                if reason != 0:
                    stop[c] = reason
                    moving[c] = False
                    continue
                dt = normalised_dt(gr.L0[c], loss, gr.t[c], t_end, fc.max_dt_frac)
                gr.dt[c] = dt
                gr.eta[c] = cfg.eta * dt
                gr.eta_v[c] = cfg.eta_v * dt
        for c in range(C):
            if not moving[c]:
                for i in range(gr.lp.shape[0]):
                    gr.lp[i, c] = 0.0  # finite: a job with step 0 must not move
        _step_group(gr, s, cfg, 0.0)
        for c in range(C):
            if moving[c]:
                gr.count[c] += 1
                dt = gr.dt[c]
                gr.t[c] = t_end if dt >= t_end - gr.t[c] else gr.t[c] + dt
                if not gr.big[c] <= THETA_MAX:
                    stop[c] = 3
                    moving[c] = False


@njit(cache=True)
def _run_group(g, st, sth, cfg, fc, use_flow, job_seed, job_mu, job_v0, group_start,
               min_group, checkpoints, out_test, out_loss, out_train, out_margin, out_status,
               out_info):
    """Jobs group_start[g] .. group_start[g+1]-1 (one seed) stepped together:
    GD segments (``_gd_group``), normalised segments (``_normalised_group``)
    checkpoint values of all jobs at once
    (``_measure_group``).  The group's state and arithmetic take the dtype
    of sth (the statistics st, float64, or a float32 copy); st (float64)
    serves the one-job parts (initial loss, margins, the job-by-job path).
    With sth = st the results equal ``_run_job``'s bit for bit.  Depth >= 2,
    groups smaller than min_group and groups whose test outputs would exceed
    GROUP_TEST_MAX values run job by job (float64; run_batch never sends
    those with float32 statistics)."""
    q0, q1 = group_start[g], group_start[g + 1]
    s = _job_stats(st, job_seed[q0])
    sh = _job_stats(sth, job_seed[q0])
    too_big = (q1 - q0) * s.test_yhat.shape[0] > GROUP_TEST_MAX
    if s.U0.shape[0] > 0 or q1 - q0 < min_group or too_big:
        for q in range(q0, q1):
            _run_job(q, st, cfg, fc, use_flow, job_seed, job_mu, job_v0, checkpoints,
                     out_test, out_loss, out_train, out_margin, out_status, out_info)
        return
    C = q1 - q0
    m, n = s.B.shape[1], s.yhat.shape[0]
    gr = _group(sh, job_mu[q0:q1], job_v0[q0:q1])
    # one-job scratch for checkpoints and measurements
    gamma1, rho1, v1 = np.zeros((2, m)), np.zeros((2, m, n)), np.zeros((2, m, 2))
    U1 = s.U0.copy()
    w = _work(m, n, 1)
    stop = np.zeros(C, dtype=np.int64)
    for c in range(C):
        q = q0 + c
        _reset_job(q, out_test, out_loss, out_train, out_margin, out_status, out_info)
        v1[:] = job_v0[q]
        gr.L0[c] = _initial_loss(gr.mu[c] * s.w0_e1, gamma1, rho1, U1, v1, s, cfg, w)
    for k in range(checkpoints.shape[0]):
        target = checkpoints[k]
        if np.isinf(target):
            raise ValueError("t = inf is the limit program (dynamics.limit), not a kernel time")
        if use_flow or target > fc.gd_max:
            _normalised_group(gr, sh, cfg, fc, gr.alive, target, stop)
            for c in range(C):
                if gr.alive[c] and stop[c] != 0:
                    _retire(gr, c, q0 + c, stop[c], out_status)
        else:
            _gd_group(gr, sh, cfg, target, q0, out_status)
        _measure_group(gr, s, sh, cfg, gr.alive, gamma1, rho1, U1, v1, True)
        _record_group(gr, k, q0, out_test, out_loss, out_train, out_margin, out_status)
    for c in range(C):
        out_info[q0 + c, 1] = gr.t[c]
        out_info[q0 + c, 2] = gr.count[c]


@njit(cache=True, parallel=True)
def batch_kernel(st, cfg, fc, use_flow, job_seed, job_mu, job_v0, checkpoints, out_test,
                 out_loss, out_train, out_margin, out_status, out_info):
    """Run many configurations in parallel (numba prange over jobs),
    checkpoints only, each job alone (``_run_job``).

    ``st`` holds the statistics stacked over seeds (leading axis S); job q uses
    seed index job_seed[q], ||mu|| = job_mu[q] and v0 = job_v0[q].  Outputs
    (Q, K) at the K checkpoints; out_status (Q, 2) = (step, reason) or
    (-1, 0); out_info (Q, 4) (see ``_run_job``).  Jobs are independent, so
    results do not depend on the number of threads.
    """
    for q in prange(job_seed.shape[0]):
        _run_job(q, st, cfg, fc, use_flow, job_seed, job_mu, job_v0, checkpoints, out_test,
                 out_loss, out_train, out_margin, out_status, out_info)


@njit(cache=True)
def batch_kernel_serial(st, cfg, fc, use_flow, job_seed, job_mu, job_v0, checkpoints,
                        out_test, out_loss, out_train, out_margin, out_status, out_info):
    """``batch_kernel`` on one thread (for dask workers: no nested threading)."""
    for q in range(job_seed.shape[0]):
        _run_job(q, st, cfg, fc, use_flow, job_seed, job_mu, job_v0, checkpoints, out_test,
                 out_loss, out_train, out_margin, out_status, out_info)


@njit(cache=True, parallel=True)
def group_kernel(st, sth, cfg, fc, use_flow, job_seed, job_mu, job_v0, group_start,
                 min_group, checkpoints, out_test, out_loss, out_train, out_margin,
                 out_status, out_info):
    """``batch_kernel`` with the jobs of one seed stepped together: jobs
    group_start[g] .. group_start[g+1]-1 share one seed (``_run_group``);
    prange over groups; groups below min_group run job by job.  With sth =
    st a job's result does not depend on its group, so results equal
    ``batch_kernel``'s bit for bit for any thread count; sth = st as float32
    runs the groups in float32 (results independent of the thread count).  A
    separate entry point so that callers without groups (``dyn solve``'s
    bisection) do not compile the group code.  ReLU only (run_batch calls
    batch_kernel for other activations)."""
    if cfg.act != 0:
        raise ValueError("the group kernels are ReLU only: use batch_kernel")
    for g in prange(group_start.shape[0] - 1):
        _run_group(g, st, sth, cfg, fc, use_flow, job_seed, job_mu, job_v0, group_start,
                   min_group, checkpoints, out_test, out_loss, out_train, out_margin,
                   out_status, out_info)


@njit(cache=True)
def group_kernel_serial(st, sth, cfg, fc, use_flow, job_seed, job_mu, job_v0, group_start,
                        min_group, checkpoints, out_test, out_loss, out_train, out_margin,
                        out_status, out_info):
    """``group_kernel`` on one thread (for dask workers: no nested threading)."""
    if cfg.act != 0:
        raise ValueError("the group kernels are ReLU only: use batch_kernel")
    for g in range(group_start.shape[0] - 1):
        _run_group(g, st, sth, cfg, fc, use_flow, job_seed, job_mu, job_v0, group_start,
                   min_group, checkpoints, out_test, out_loss, out_train, out_margin,
                   out_status, out_info)


@njit(cache=True)
def flow_kernel(st, cfg, fc, mu, gamma, rho, U, v, times, out_gamma, out_rho, out_U, out_v,
                out_loss, out_err, status, info):
    """Normalised-flow run from the state (gamma, rho, U, v) at time 0, recording
    the state, loss and train error at each time in ``times`` (GD steps,
    ascending, finite).  status = (index of the failing time, reason) or
    (-1, 0); info = (-1, final time, normalised steps, -1)."""
    A = mu * st.w0_e1
    m, n = gamma.shape[1], st.yhat.shape[0]
    w = _work(m, n, U.shape[0] + 1)
    count = np.zeros(1, dtype=np.int64)
    L0 = _initial_loss(A, gamma, rho, U, v, st, cfg, w)
    status[0] = -1
    status[1] = 0
    info[0] = -1.0
    info[3] = 0.0
    t = 0.0
    for c in range(times.shape[0]):
        reason, t = _advance(A, mu, gamma, rho, U, v, st, cfg, fc, True, w, t, times[c], L0,
                             count)
        if reason == 0:
            _forward(A, gamma, rho, U, v, st, cfg, w)
            reason, loss = _lprime_stable(w.f, st.y, w.lp)
            out_gamma[c] = gamma
            out_rho[c] = rho
            out_U[c] = U
            out_v[c] = v
            out_loss[c] = loss
            out_err[c] = _train_error(w.f, st.y)
        if reason != 0:
            status[0] = c
            status[1] = reason
            break
    info[1] = t
    info[2] = count[0]
