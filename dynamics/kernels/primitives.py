"""Arithmetic shared by every kernel path (and by ``dynamics.general``):
the activation sigma and sigma', the logistic loss and l', the blocked row
products of the Gram blocks, and the parameter update theta += u.

Divergence policy (``dynamics.params``): a run stops at the first step where
an output is non-finite (reason 1), the loss exceeds LOSS_MAX (reason 2) or a
coefficient exceeds THETA_MAX in absolute value (reason 3); ``status`` holds
(step, reason), step = -1 when the run finished.
"""
from __future__ import annotations

import numpy as np
from numba import njit

from ..params import LOSS_MAX, THETA_MAX


# ---------------------------------------------------------------- activation
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
    """sigma(x) given dx = sigma'(x): x dx for relu and leaky, x^a for relu^a."""
    if act == 1:
        return x ** a if x > 0.0 else 0.0
    return x * dx


@njit(cache=True)
def _copy2(dst, src):
    """dst[i, k] = src[i, k] for 2-d arrays of one shape.  Kernels copy
    arrays with these loops, not ``dst[...] = src``: an array assignment
    compiles Numba's broadcasting with its shape-error message (string
    formatting), seconds of compilation per caller on a cold start."""
    for i in range(dst.shape[0]):
        for k in range(dst.shape[1]):
            dst[i, k] = src[i, k]


@njit(cache=True)
def _copy_flat(dst, src):
    """dst = src elementwise, both C-contiguous of one shape (``_copy2``)."""
    d, s = dst.ravel(), src.ravel()
    for k in range(d.shape[0]):
        d[k] = s[k]


@njit(cache=True)
def _relu_inplace(x):
    for i in range(x.shape[0]):
        x[i] = max(x[i], 0.0)


# ---------------------------------------------------------------- loss and l'
@njit(cache=True)
def _logistic_loss(yf):
    """log(1 + exp(-yf)), overflow-safe."""
    if yf >= 0.0:
        return np.log1p(np.exp(-yf))
    return -yf + np.log1p(np.exp(yf))


@njit(cache=True, inline="always")
def _lprime_loss(yf):
    """(l', loss) of one sample with margin yf = y f (finite): l' =
    -1/(1 + exp(yf)) and log(1 + exp(-yf)) from one exp of a non-positive
    argument (``_logistic_loss``'s numbers)."""
    if yf >= 0.0:
        e = np.exp(-yf)
        return -e / (1.0 + e), np.log1p(e)
    e = np.exp(yf)
    return -1.0 / (1.0 + e), -yf + np.log1p(e)


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
def _lprime_stable(f, y, lp):
    """l'_i = -1/(1 + exp(y_i f_i)) without overflow (``_lprime_loss``);
    returns (reason, loss): reason 1 and an infinite loss at the first
    non-finite output, else 0 and the loss (its bound is the caller's)."""
    n = f.shape[0]
    loss = 0.0
    for i in range(n):
        yf = y[i] * f[i]
        if not np.isfinite(yf):
            return 1, np.inf
        lpi, li = _lprime_loss(yf)
        lp[i] = lpi
        loss += li
    return 0, loss / n


@njit(cache=True)
def _error_rate(f, y):
    """Fraction of wrong signs, a tie f_i = 0 counted 1/2:
    (#{y_i f_i < 0} + #{y_i f_i = 0}/2) / n (``dynamics.run.error_count``)."""
    err = 0.0
    for i in range(f.shape[0]):
        err += _wrong(y[i] * f[i])
    return err / f.shape[0]


@njit(cache=True)
def _wrong(yf):
    """1 for a wrong sign (yf < 0), 1/2 for a tie (yf = 0), else 0."""
    if yf < 0.0:
        return 1.0
    return 0.5 if yf == 0.0 else 0.0


# ---------------------------------------------------------------- Gram blocks
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
    The Gram product of every path."""
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
    loops: a 2-d slice assignment z[:, :] = B ran ~3x slower).  The one-job
    GD loop calls it transposed (rows = samples, rho -> G^T, G -> rho^T)."""
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


# ---------------------------------------------------------------- update
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
