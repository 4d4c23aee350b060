"""What a checkpoint measures: test outputs and the clean test error, ||theta||^2
and the normalised margin, the checkpoint values of a state."""
from __future__ import annotations

import numpy as np
from numba import njit

from .deep import _top_output, _upper_forward
from .primitives import _addmul_rows, _copy2, _error_rate, _lprime_stable, _relu_inplace
from .step import _forward
from .step1 import _accumulate_outputs
from .types import TEST_CHUNK, _depth


@njit(cache=True, inline="always")
def _test_outputs(A, gamma, rho, U, v, st, cfg, f):
    """f(x) of every test point into f (nt,).

    z_{j,r}(x) = <w0, xi> + sum_k (rho_{j,r,k}/N_k) <xi_k, xi> (the same
    blocked accumulation as training, ``_addmul_rows``; no BLAS, which would
    oversubscribe the cores under the kernel threads), in blocks of TEST_CHUNK test
    points (each point's numbers do not depend on the blocking); depth >= 2
    continues through U (docs/theory.md#depth).
    """
    m, n, nt = gamma.shape[1], st.N.shape[0], f.shape[0]
    L = _depth(U)
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
        _copy2(X, st.test_X[:, q0:q0 + N])
        _test_outputs_block(A, gamma, rhohat, U, v, st, cfg, q0, X, H, f[q0:q0 + N])


@njit(cache=True)
def _test_outputs_block(A, gamma, rhohat, U, v, st, cfg, q0, X, H, f):
    """``test_outputs`` of the N test points q0 .. q0+N-1: X (n, N) their
    Gram rows, H (L, 2, m, N) buffer, f (N,)."""
    m, N, L = gamma.shape[1], f.shape[0], _depth(U)
    c = cfg.c
    yhat = st.test_yhat[q0:q0 + N]
    f[:] = 0.0
    for j in range(2):
        js = 1.0 - 2.0 * j
        z = H[0, 1]
        _copy2(z, st.test_B[j][:, q0:q0 + N])
        _addmul_rows(z, rhohat[j], X, True)
        if U is None:
            _accumulate_outputs(f, js, c, A[j], gamma[j], v[j], yhat, z, cfg.act, cfg.act_a,
                                    cfg.general)
        else:  # docs/theory.md#depth: ReLU features of the first layer, then U
            for r in range(m):
                a = A[j, r] + js * gamma[j, r]
                for i in range(N):
                    H[0, 0, r, i] = max(yhat[i] * a, 0.0)
                _relu_inplace(z[r])
            _upper_forward(U, j, H)
            _top_output(f, js * c, v[j], H[L - 1])


@njit(cache=True, inline="always")
def _clean_error(A, gamma, rho, U, v, st, cfg):
    """Clean test error: fraction of test points with yhat f(x) < 0, ties f = 0 counted 1/2."""
    f = np.empty(st.test_yhat.shape[0])
    _test_outputs(A, gamma, rho, U, v, st, cfg, f)
    return _error_rate(f, st.test_yhat)


@njit(cache=True)
def _theta_norm_sq(A, mu, gamma, rho, U, v, st, train_v):
    """||theta||^2 = sum_{j,r} ||w_{j,r}||^2 + ||U||^2 + sum v^2 (docs/theory.md#training-time-and-flow; the
    v term only when v is trained: a frozen v is not a parameter), d-free:
    ||w||^2 = (<w0,e1> + j gamma/||mu||)^2 + ||P w0||^2 + 2 sum_k rhohat_k B_k
              + sum_{k,i} rhohat_k rhohat_i <xi_k, xi_i>,  rhohat = rho/N,
    with <xi_k, xi_i> = G_{k,i} N_k.  The inner sums
    g_k = sum_i G_{k,i} rho_i / N_i run for all k side by side (k innermost,
    over a transposed copy of G; each g_k still adds i = 0, 1, ... in order,
    the numbers of the plain double loop): SIMD divisions instead of a
    scalar division per term; k padded to whole 8-lane vectors."""
    m, n = gamma.shape[1], st.N.shape[0]
    nk = -(-n // 8) * 8  # k padded to whole 8-lane vectors (no scalar remainder loop)
    GT = np.zeros((n, nk))
    _copy2(GT[:, :n], st.G.T)
    g = np.empty(nk)
    total = 0.0
    for j in range(2):
        js = 1.0 - 2.0 * j
        for r in range(m):
            e1 = A[j, r] / mu + js * gamma[j, r] / mu
            acc = e1 * e1 + st.w0_perp_sq[j, r]
            g[:] = 0.0
            for i in range(n):
                ri, Ni, Gi = rho[j, r, i], st.N[i], GT[i]
                for k in range(nk):
                    g[k] += Gi[k] * ri / Ni
            for k in range(n):
                rk = rho[j, r, k] / st.N[k]
                acc += 2.0 * rk * st.B[j, r, k]
                acc += rk * st.N[k] * g[k]
            total += acc
            if train_v:
                total += v[j, r, 0] ** 2 + v[j, r, 1] ** 2
    if U is not None:
        for x in U.ravel():
            total += x * x
    return total


@njit(cache=True, inline="always")
def _margin(A, mu, gamma, rho, U, v, st, f, cfg):
    """Normalised margin min_i y_i f_i / ||theta||^h (f: training outputs).
    f is homogeneous of degree h in the trained parameters theta, so this is
    scale-free: h = (L - 1) + Q + [v trained] for relu^Q (Q = 1 otherwise)
    (the paper's model, L = 1 with v trained: / ||theta||^2, docs/theory.md#training-time-and-flow; a frozen
    v is left out of theta and of h, as in ``general._margin``)."""
    ymin = np.inf
    for i in range(f.shape[0]):
        ymin = min(ymin, st.y[i] * f[i])
    sq = _theta_norm_sq(A, mu, gamma, rho, U, v, st, cfg.train_v)
    h = (_depth(U) - 1) + (cfg.act_a if cfg.act == 1 else 1.0) + (1.0 if cfg.train_v else 0.0)
    if h == 2.0:
        return ymin / sq
    return ymin / sq ** (0.5 * h)


@njit(cache=True, inline="always")
def _checkpoint(job, k, A, mu, gamma, rho, U, v, st, cfg, w, out):
    """Write the checkpoint values of the state (test error, loss, train error,
    normalised margin) to column k of row ``job`` of ``out`` (``JobOutputs``);
    returns the divergence reason."""
    _forward(A, gamma, rho, U, v, st, cfg, w)
    reason, loss = _lprime_stable(w.f, st.y, w.lp)
    if reason == 0:
        out.loss[job, k] = loss
        out.train[job, k] = _error_rate(w.f, st.y)
        out.test[job, k] = _clean_error(A, gamma, rho, U, v, st, cfg)
        out.margin[job, k] = _margin(A, mu, gamma, rho, U, v, st, w.f, cfg)
    return reason
