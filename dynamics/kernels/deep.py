"""Depth L >= 2 (docs/theory.md#depth): forward pass through the upper layers
U and the increments of (gamma, rho, U, v).

Per class j the activations of hidden layer l+1 (l = 0..L-1) at sample i and
patch p are H[j, l, p, k, i] = ReLU(pre); layer 1 is ReLU of (s, z) of depth
1, H[l+1] = ReLU(U(l)_j H[l]),  F_j = c sum_{p,k} v_{j,k,p} H[L-1].
Backward (1[pre > 0] = 1[H > 0]): delta = df/dpre, delta[L-1] = j c v 1[H > 0],
delta[l] = (U(l)_j^T delta[l+1]) 1[H[l] > 0]; with q_i = l'_i y_i,

  gamma_{j,r} += -(eta/n) ||mu||^2 j sum_i q_i yhat_i delta[0, 0, r, i]
  rho_{j,r,i} += -(eta/n) N_i q_i delta[0, 1, r, i]
  U(l)_{j,k,r} += -(eta/n) sum_{i,p} q_i delta[l+1, p, k, i] H[l, p, r, i]
  v_{j,k,p}   += -(eta_v c/n) j sum_i q_i H[L-1, p, k, i].

A depth-1 run never compiles this module's functions (``U = None``).
"""
from __future__ import annotations

from numba import njit

from .primitives import _noise_block, _relu_inplace


@njit(cache=True, inline="always")
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


@njit(cache=True, inline="always")
def _top_output(f, js_c, vj, top):
    """f_i += j c sum_{p,k} v_{j,k,p} top[p, k, i] (top = H[L-1])."""
    for p in range(2):
        for k in range(top.shape[1]):
            vk = js_c * vj[k, p]
            row = top[p, k]
            for i in range(f.shape[0]):
                f[i] += vk * row[i]


@njit(cache=True, inline="always")
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


@njit(cache=True, inline="always")
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
                qi = lp[i] * st.y[i]
                sg += qi * st.yhat[i] * delta[0, 0, r, i]
                drho[j, r, i] = -(cw * st.N[i] * qi * delta[0, 1, r, i])
            dgamma[j, r] = -(cw * mu2 * js * sg)
