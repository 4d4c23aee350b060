"""Numba kernels of the model family (``dynamics.general``, docs/theory.md#general-reduction):
the forward pass pre = B + R alpha, l' and the loss, the GD update of (alpha,
v), a recorded run and a batch of jobs.  sigma, sigma' and l' are the shared
``kernels.primitives``."""
from __future__ import annotations

import numpy as np
from numba import njit

from .kernels.threads import run_chunks
from .kernels.primitives import _dsig, _error_rate, _lprime_loss, _sig, _wrong
from .params import LOSS_MAX, THETA_MAX


@njit(cache=True)
def _forward(R, B, alpha, v, code, a, c, pre, f):
    """pre = B + R alpha (2, m, n, P) and f_i = c sum_j j sum_{r,p} v sigma(pre)."""
    m, n, P = B.shape[1], B.shape[2], B.shape[3]
    K = R.shape[2]
    f[:] = 0.0
    for j in range(2):
        cj = c if j == 0 else -c
        for r in range(m):
            al = alpha[j, r]
            for i in range(n):
                acc_f = 0.0
                for p in range(P):
                    acc = B[j, r, i, p]
                    Rip = R[i, p]
                    for k in range(K):
                        acc += al[k] * Rip[k]
                    pre[j, r, i, p] = acc
                    acc_f += v[j, r, p] * _sig(acc, code, a)
                f[i] += cj * acc_f


@njit(cache=True)
def _loss_lprime(f, y, lp):
    """(reason, loss, train error): l'_i = -1/(1 + exp(y_i f_i)) (stable);
    reason 1: non-finite output, 2: loss above LOSS_MAX."""
    n = f.shape[0]
    loss, err = 0.0, 0.0
    for i in range(n):
        yf = y[i] * f[i]
        if not np.isfinite(yf):
            return 1, np.inf, 1.0
        lpi, li = _lprime_loss(yf)
        lp[i] = lpi
        loss += li
        err += _wrong(yf)
    loss /= n
    return (2 if loss > LOSS_MAX else 0), loss, err / n


@njit(cache=True)
def _update(R, y, alpha, v, pre, lp, code, a, c, eta, eta_v, train_v, dalpha, dv):
    """One GD step from the current pre and l' (simultaneous update); returns
    3 if a coefficient leaves THETA_MAX, else 0."""
    m, n, P = pre.shape[1], pre.shape[2], pre.shape[3]
    K = R.shape[2]
    dalpha[:] = 0.0
    dv[:] = 0.0
    for j in range(2):
        for r in range(m):
            da = dalpha[j, r]
            for i in range(n):
                g = (c / n) * lp[i] * y[i]
                if j == 1:
                    g = -g
                for p in range(P):
                    h = g * v[j, r, p] * _dsig(pre[j, r, i, p], code, a)
                    Rip = R[i, p]
                    for k in range(K):
                        da[k] += h * Rip[k]
                    dv[j, r, p] += g * _sig(pre[j, r, i, p], code, a)
    big = 0.0
    for j in range(2):
        for r in range(m):
            for k in range(K):
                alpha[j, r, k] -= eta * dalpha[j, r, k]
                big = max(big, abs(alpha[j, r, k]))
            if train_v:
                for p in range(P):
                    v[j, r, p] -= eta_v * dv[j, r, p]
                    big = max(big, abs(v[j, r, p]))
    return 3 if not big <= THETA_MAX else 0


@njit(cache=True)
def record_kernel(R, B, y, code, a, c, eta, eta_v, train_v, steps, every, alpha, v,
                  out_alpha, out_v, out_pre, out_loss, out_err, status):
    """GD for ``steps`` steps from (alpha, v) (updated in place), recording at
    0, every, 2 every, ... and ``steps``; status = (step, reason) of a
    divergence, else (-1, 0)."""
    m, n, P = B.shape[1], B.shape[2], B.shape[3]
    pre = np.empty((2, m, n, P))
    f, lp = np.empty(n), np.empty(n)
    dalpha, dv = np.empty_like(alpha), np.empty_like(v)
    status[0], status[1] = -1, 0
    k = 0
    for t in range(steps + 1):
        _forward(R, B, alpha, v, code, a, c, pre, f)
        reason, loss, err = _loss_lprime(f, y, lp)
        if reason:
            status[0], status[1] = t, reason
            return
        if t % every == 0 or t == steps:
            out_alpha[k] = alpha
            out_v[k] = v
            out_pre[k] = pre
            out_loss[k], out_err[k] = loss, err
            k += 1
        if t == steps:
            return
        reason = _update(R, y, alpha, v, pre, lp, code, a, c, eta, eta_v, train_v, dalpha, dv)
        if reason:
            status[0], status[1] = t + 1, reason
            return


@njit(cache=True)
def _test_error(Rt, Bt, yt, alpha, v, code, a, c):
    """Test error, a tie f = 0 counted 1/2 (``_error_rate``; NaN without test points)."""
    nt = yt.shape[0]
    if nt == 0:
        return np.nan
    m, P = Bt.shape[1], Bt.shape[3]
    pre = np.empty((2, m, nt, P))
    f = np.empty(nt)
    _forward(Rt, Bt, alpha, v, code, a, c, pre, f)
    return _error_rate(f, yt)


@njit(cache=True)
def _margin(f, y, alpha, v, w0q, w0sq, train_v, h):
    """min_i y_i f_i / ||theta||^h, ||w||^2 = ||w0||^2 + 2 w0q.alpha + |alpha|^2."""
    sq = 0.0
    for j in range(2):
        for r in range(alpha.shape[1]):
            sq += w0sq[j, r]
            for k in range(alpha.shape[2]):
                sq += alpha[j, r, k] * (2.0 * w0q[j, r, k] + alpha[j, r, k])
            if train_v:
                for p in range(v.shape[2]):
                    sq += v[j, r, p] ** 2
    low = np.inf
    for i in range(f.shape[0]):
        low = min(low, y[i] * f[i])
    return low / sq ** (0.5 * h)


@njit(cache=True)
def _scale(A, scale, out):
    """out[..., p] = A[..., p] * scale[p] for the last axis p (R, B layouts)."""
    P = scale.shape[0]
    flat, res = A.reshape(-1, P), out.reshape(-1, P)
    for q in range(flat.shape[0]):
        for p in range(P):
            res[q, p] = flat[q, p] * scale[p]


@njit(cache=True)
def _scale_R(A, scale, out):
    """out[i, p, :] = A[i, p, :] * scale[p] (R, Rt layouts)."""
    for i in range(A.shape[0]):
        for p in range(A.shape[1]):
            for k in range(A.shape[2]):
                out[i, p, k] = A[i, p, k] * scale[p]


@njit(cache=True)
def _run_job(q, R1, B1, Rt1, Bt1, y, yt, w0q, w0sq, signal, job_seed, job_mu, job_v0,
             code, a, c, eta, eta_v, train_v, h, checkpoints, out, status):
    """Job q of ``batch_kernel``: GD from the seed's statistics scaled to
    ||mu|| = job_mu[q], v(0) = job_v0[q], measured at the checkpoint steps."""
    s = job_seed[q]
    m, n, P = B1.shape[2], B1.shape[3], B1.shape[4]
    K = R1.shape[3]
    nt = yt.shape[1]
    sc = np.ones(P)
    for p in range(P):
        if signal[p]:
            sc[p] = job_mu[q]
    R, B = np.empty((n, P, K)), np.empty((2, m, n, P))
    Rt, Bt = np.empty((nt, P, K)), np.empty((2, m, nt, P))
    _scale_R(R1[s], sc, R)
    _scale(B1[s], sc, B)
    _scale_R(Rt1[s], sc, Rt)
    _scale(Bt1[s], sc, Bt)
    alpha = np.zeros((2, m, K))
    v = np.full((2, m, P), job_v0[q])
    pre = np.empty((2, m, n, P))
    f, lp = np.empty(n), np.empty(n)
    dalpha, dv = np.empty_like(alpha), np.empty_like(v)
    out[q] = np.nan
    status[q, 0], status[q, 1] = -1, 0
    t, k = 0, 0
    while k < checkpoints.shape[0]:
        _forward(R, B, alpha, v, code, a, c, pre, f)
        reason, loss, err = _loss_lprime(f, y[s], lp)
        if reason:
            status[q, 0], status[q, 1] = t, reason
            break
        while k < checkpoints.shape[0] and checkpoints[k] == t:
            out[q, k, 0] = _test_error(Rt, Bt, yt[s], alpha, v, code, a, c)
            out[q, k, 1], out[q, k, 2] = loss, err
            out[q, k, 3] = _margin(f, y[s], alpha, v, w0q[s], w0sq[s], train_v, h)
            k += 1
        if k == checkpoints.shape[0]:
            break
        reason = _update(R, y[s], alpha, v, pre, lp, code, a, c, eta, eta_v, train_v,
                         dalpha, dv)
        t += 1
        if reason:
            status[q, 0], status[q, 1] = t, reason
            break


def batch_kernel(st, signal, jobs, settings, checkpoints, out, status, parallel=True):
    """Jobs q = (seed, ||mu||, v0) (``kernels.Jobs``) in parallel
    (``parallel=False``: on one thread, the same results), inputs ``st``
    (``general.GStats``) stacked on a seed axis at unit ||mu||
    (``signal[p]``: patch p scales with ||mu||); settings = (code, a, c, eta,
    eta_v, train_v, h) (``general.kernel_settings`` and the homogeneity h).
    out (Q, K, 4): test error, loss, train error, margin at each checkpoint
    (NaN after a divergence, recorded in status (Q, 2) = (step, reason))."""
    run_chunks(_batch_kernel, jobs.seed.shape[0],
               (st.R, st.B, st.Rt, st.Bt, st.y, st.yt, st.w0q, st.w0sq, signal, jobs.seed,
                jobs.mu, jobs.v0, *settings, checkpoints, out, status), parallel)


@njit(cache=True, nogil=True)
def _batch_kernel(lo, hi, R1, B1, Rt1, Bt1, y, yt, w0q, w0sq, signal, job_seed, job_mu,
                  job_v0, code, a, c, eta, eta_v, train_v, h, checkpoints, out, status):
    """``batch_kernel``: jobs lo .. hi-1."""
    for q in range(lo, hi):
        _run_job(q, R1, B1, Rt1, Bt1, y, yt, w0q, w0sq, signal, job_seed, job_mu, job_v0,
                 code, a, c, eta, eta_v, train_v, h, checkpoints, out, status)
