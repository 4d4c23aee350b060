"""The fused one-job GD loop at depth 1 without momentum: a second copy of
``step1``'s arithmetic in a filter-transposed layout (its contract:
ARCHITECTURE.md "Second copies")."""
from __future__ import annotations

import numpy as np
from numba import njit

from ..params import THETA_MAX
from .primitives import _dsig, _gram_block, _lprime, _sig, _sig_from


@njit(cache=True)
def _gd_loop_depth1(A, mu2, gamma, rho, v, st, cfg, w, t, target, general):
    """``_advance``'s GD steps at depth 1 without momentum (``_forward_depth1``,
    ``_lprime``, the in-place ``_increments_depth1``) in the filter-transposed
    layout: rho and z as (n, 2m) (filter p = j m + r innermost, padded to
    whole 8-lane vectors), so that the Gram product is one blocked product
    over rows of 2m filters of both classes (``_addmul_rows`` with rows =
    samples) and the increments run as SIMD loops over the 2m filters
    instead of loops of length n or m with scalar remainders.  Every number is formed by the operations of
    ``_forward_depth1`` + ``_increments_depth1`` in their order (sums over k and i
    ascending, f_i over p ascending from 0), so the results are theirs bit
    for bit (tests/equivalence/test_reduction.py).  rho is converted on entry and
    exit; w.a, w.z, w.f, w.lp end as ``_forward_depth1`` + ``_lprime`` leave them.
    Returns (reason, t)."""
    if general is None:  # ReLU (cfg.general): the other body is not compiled
        return _gd_loop_depth1_body(A, mu2, gamma, rho, v, st, cfg, w, t, target, 0, 0.0)
    return _gd_loop_depth1_body(A, mu2, gamma, rho, v, st, cfg, w, t, target, cfg.act, cfg.act_a)


@njit(cache=True, inline="always")
def _gd_loop_depth1_body(A, mu2, gamma, rho, v, st, cfg, w, t, target, act, act_a):
    """``_gd_loop_depth1`` for activation (act, act_a)."""
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
        # forward (``_forward_depth1``): a, z = B + rho G, f_i = sum_p j c [v1 s(yhat_i a) + v2 s(z)]
        for j in range(2):
            js = 1.0 - 2.0 * j
            for r in range(m):
                p = j * m + r
                a = A[j, r] + js * gamma[j, r]
                w.a[j, r] = a
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
        # increments (``_increments_depth1``, in place)
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
