"""The step of a configuration group (ReLU, clean labels +-1): outputs,
l' and the in-place increments of C jobs at once, job index innermost.
A second copy of ``step1``'s arithmetic (contract: ARCHITECTURE.md "Second
copies")."""
from __future__ import annotations

import numpy as np
from numba import njit

from ..params import LOSS_MAX
from .primitives import _addmul_rows, _loss


@njit(cache=True)
def _outputs_group(A, gamma, rho, v, B, G, yhat, use_gram, cc, a, h, z, f):
    """Outputs f (N, C) of C jobs on N points with signal labels yhat (N,) of
    +-1, <w0, xi> = B (2, m, N) and Gram rows G (n, N): ``_forward_depth1``
    (training: B, G, yhat of the training set, z (2, m, N, C) kept for the
    increments) and ``_test_outputs`` (rho = rho/N, the test set, z (1, 1, N, C)
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


@njit(cache=True, inline="always")
def _forward_group(A, gamma, rho, v, st, cfg, a, h, z, f):
    """``_forward_depth1`` for C jobs at once: z (2, m, n, C), f (n, C)."""
    _outputs_group(A, gamma, rho, v, st.B, st.G, st.yhat, cfg.use_gram, cfg.c, a, h, z, f)


@njit(cache=True)
def _step_group(gr, st, cfg, beta):
    """``_increments_depth1`` + ``_apply`` (momentum beta) for the C jobs of group
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
    rho, started at +0.0, is never -0.0).
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


@njit(cache=True, inline="always")
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
