"""Numba kernels of the reduced coefficient recursion (SPEC section 4).

Pure functions of plain arrays and scalars, ``@njit(cache=True)``; every
helper a kernel calls lives in this module (numba#1833).  Index conventions:
axis j in {0, 1} stands for j = +1, -1 (sign ``1 - 2j``); p in {0, 1} is the
patch (signal, noise).  At step t, with all right-hand sides at t:

  s_{j,r,i} = yhat_i (A_{j,r} + j gamma_{j,r})
  z_{j,r,i} = B_{j,r,i} + sum_k rho_{j,r,k} G_{k,i}     (G = I: "orthogonal")
  f_i       = c sum_j j sum_r [v_{j,r,1} ReLU(s) + v_{j,r,2} ReLU(z)]
  l'_i      = -1 / (1 + exp(y_i f_i))
  gamma    += -(eta c/n) ||mu||^2 v_{j,r,1} sum_i l'_i y_i yhat_i 1[s > 0]
  rho_i    += -(eta c/n) N_i j y_i l'_i v_{j,r,2} 1[z > 0]
  v_{j,r,1}+= -(eta_v c/n) j sum_i l'_i y_i ReLU(s)      (not if v frozen)
  v_{j,r,2}+= -(eta_v c/n) j sum_i l'_i y_i ReLU(z)

Optimizers act on these GD increments delta (``opt`` = [code, a, b, eps]):
code 0, momentum a = beta (a = 0: plain GD): u = beta u + delta, theta += u;
exact, since heavy ball in weight space is linear in the gradients.
code 1, Adam (a, b, eps) and code 2, sign GD use the coefficient gradient
g = -delta / lr (lr = eta or eta_v) per coefficient: an analogy only, since
those rules act per weight coordinate and W leaves span{mu, xi_i}.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange


@njit(cache=True)
def _logistic_loss(yf):
    """log(1 + exp(-yf)), overflow-safe."""
    if yf >= 0.0:
        return np.log1p(np.exp(-yf))
    return -yf + np.log1p(np.exp(yf))


@njit(cache=True)
def _neuron_output(v1, v2, s, z):
    """v_1 ReLU(s) + v_2 ReLU(z), branch-free (vectorises)."""
    return v1 * max(s, 0.0) + v2 * max(z, 0.0)


@njit(cache=True)
def _forward(A, gamma, rho, v, B, G, yhat, use_gram, c, s, z, f):
    """Fill s, z (2, m, n) and f (n) for the current state.

    z is accumulated row by row (z += rho_k G_k.), a contiguous inner loop.
    """
    m = gamma.shape[1]
    n = yhat.shape[0]
    for i in range(n):
        f[i] = 0.0
    for j in range(2):
        js = 1.0 - 2.0 * j
        for r in range(m):
            a = A[j, r] + js * gamma[j, r]
            v1 = v[j, r, 0]
            v2 = v[j, r, 1]
            zr = z[j, r]
            for i in range(n):
                zr[i] = B[j, r, i]
            if use_gram:
                for k in range(n):  # no branch here: it blocks SIMD
                    rk = rho[j, r, k]
                    Gk = G[k]
                    for i in range(n):
                        zr[i] += rk * Gk[i]
            else:
                for i in range(n):
                    zr[i] += rho[j, r, i]
            for i in range(n):
                si = yhat[i] * a
                s[j, r, i] = si
                f[i] += js * c * _neuron_output(v1, v2, si, zr[i])


@njit(cache=True)
def _increments(gamma, v, s, z, lp, yhat, y, N, mu2, c, eta, eta_v, train_v,
                dgamma, drho, dv):
    """GD increments of (gamma, rho, v) at t from s, z, l' (SPEC 4)."""
    m = gamma.shape[1]
    n = yhat.shape[0]
    cw = eta * c / n
    cv = eta_v * c / n
    for j in range(2):
        js = 1.0 - 2.0 * j
        for r in range(m):
            v2 = v[j, r, 1]
            sg = 0.0
            sv1 = 0.0
            sv2 = 0.0
            for i in range(n):  # masks instead of branches (SIMD-friendly)
                q = lp[i] * y[i]
                si = s[j, r, i]
                zi = z[j, r, i]
                ms = 1.0 if si > 0.0 else 0.0
                mz = 1.0 if zi > 0.0 else 0.0
                sg += q * yhat[i] * ms
                sv1 += q * si * ms
                sv2 += q * zi * mz
                drho[j, r, i] = -(cw * N[i] * js * q * v2) * mz
            dgamma[j, r] = -(cw * mu2 * v[j, r, 0] * sg)
            if train_v:
                dv[j, r, 0] = -(cv * js * sv1)
                dv[j, r, 1] = -(cv * js * sv2)
            else:
                dv[j, r, 0] = 0.0
                dv[j, r, 1] = 0.0


@njit(cache=True)
def _apply(theta, delta, mom, sq, lr, opt, t):
    """theta += optimizer(delta) elementwise (flat views; t = 1, 2, ...)."""
    code = opt[0]
    if code == 0.0:
        beta = opt[1]
        for k in range(theta.size):
            mom[k] = beta * mom[k] + delta[k]
            theta[k] += mom[k]
    elif code == 1.0:
        b1, b2, eps = opt[1], opt[2], opt[3]
        c1 = 1.0 - b1 ** t
        c2 = 1.0 - b2 ** t
        for k in range(theta.size):
            g = -delta[k] / lr
            mom[k] = b1 * mom[k] + (1.0 - b1) * g
            sq[k] = b2 * sq[k] + (1.0 - b2) * g * g
            theta[k] -= lr * (mom[k] / c1) / (np.sqrt(sq[k] / c2) + eps)
    else:
        for k in range(theta.size):
            g = -delta[k] / lr
            if g > 0.0:
                theta[k] -= lr
            elif g < 0.0:
                theta[k] += lr


@njit(cache=True)
def run_kernel(A, B, G, N, yhat, y, mu2, c, eta, eta_v, steps, record_every,
               use_gram, train_v, opt, gamma, rho, v,
               out_gamma, out_rho, out_v, out_loss, out_err):
    """Iterate the recursion ``steps`` times from the state (gamma, rho, v).

    The state arrays are updated in place (final state on return).  Records at
    t % record_every == 0 and at t == steps go to the out_* arrays.  Returns -1
    on success, or the first step t whose forward pass is not finite.
    """
    m = gamma.shape[1]
    n = yhat.shape[0]
    s = np.empty((2, m, n))
    z = np.empty((2, m, n))
    f = np.empty(n)
    lp = np.empty(n)
    dgamma = np.empty((2, m))
    drho = np.empty((2, m, n))
    dv = np.empty((2, m, 2))
    # optimizer state: first and second moments per coefficient
    mg, mr, mv = np.zeros((2, m)), np.zeros((2, m, n)), np.zeros((2, m, 2))
    sg, sr, sv = np.zeros((2, m)), np.zeros((2, m, n)), np.zeros((2, m, 2))
    rec = 0
    for t in range(steps + 1):
        _forward(A, gamma, rho, v, B, G, yhat, use_gram, c, s, z, f)
        finite = True
        for i in range(n):
            yf = y[i] * f[i]
            finite &= np.isfinite(yf)
            lp[i] = -1.0 / (1.0 + np.exp(yf))  # l'_i; exp(+inf) -> l' = -0
        if not finite:
            return t
        if t % record_every == 0 or t == steps:
            loss = 0.0
            err = 0.0
            for i in range(n):
                yf = y[i] * f[i]
                loss += _logistic_loss(yf)
                if yf <= 0.0:
                    err += 1.0
            out_gamma[rec] = gamma
            out_rho[rec] = rho
            out_v[rec] = v
            out_loss[rec] = loss / n
            out_err[rec] = err / n
            rec += 1
        if t == steps:
            break
        _increments(gamma, v, s, z, lp, yhat, y, N, mu2, c, eta, eta_v, train_v,
                    dgamma, drho, dv)
        _apply(gamma.ravel(), dgamma.ravel(), mg.ravel(), sg.ravel(), eta, opt, t + 1)
        _apply(rho.ravel(), drho.ravel(), mr.ravel(), sr.ravel(), eta, opt, t + 1)
        if train_v:
            _apply(v.ravel(), dv.ravel(), mv.ravel(), sv.ravel(), eta_v, opt, t + 1)
    return -1


@njit(cache=True)
def clean_error_kernel(A, gamma, rho, v, N, c, test_yhat, test_B, test_X):
    """Clean test error: fraction of test points with yhat f(x) <= 0.

    z_{j,r}(x) = <w0, xi> + sum_k (rho_{j,r,k}/N_k) <xi_k, xi>, accumulated
    row by row (contiguous inner loop over test points; no BLAS, which would
    oversubscribe the cores inside prange).
    """
    m = gamma.shape[1]
    n = N.shape[0]
    nt = test_yhat.shape[0]
    f = np.zeros(nt)
    zrow = np.empty(nt)
    for j in range(2):
        js = 1.0 - 2.0 * j
        for r in range(m):
            a = A[j, r] + js * gamma[j, r]
            v1 = v[j, r, 0]
            v2 = v[j, r, 1]
            for t in range(nt):
                zrow[t] = test_B[j, r, t]
            for k in range(n):
                ck = rho[j, r, k] / N[k]
                Xk = test_X[k]
                for t in range(nt):
                    zrow[t] += ck * Xk[t]
            for t in range(nt):
                f[t] += js * c * _neuron_output(v1, v2, test_yhat[t] * a, zrow[t])
    wrong = 0
    for t in range(nt):
        if test_yhat[t] * f[t] <= 0.0:
            wrong += 1
    return wrong / nt


@njit(cache=True)
def _run_job(q, w0_e1, B, G, N, yhat, y, test_yhat, test_B, test_X,
             job_seed, job_mu, job_v0, c, eta, eta_v, steps, use_gram, train_v,
             opt, out_test, out_loss, out_train, out_status):
    """Job q of a batch: train from (0, 0, v0) and write its final values."""
    m = w0_e1.shape[2]
    n = yhat.shape[1]
    si = job_seed[q]
    mu = job_mu[q]
    A = mu * w0_e1[si]
    gamma = np.zeros((2, m))
    rho = np.zeros((2, m, n))
    v = np.full((2, m, 2), job_v0[q])
    og = np.empty((2, 2, m))  # records at t = 0 and t = steps
    orho = np.empty((2, 2, m, n))
    ov = np.empty((2, 2, m, 2))
    ol = np.empty(2)
    oe = np.empty(2)
    status = run_kernel(A, B[si], G[si], N[si], yhat[si], y[si], mu * mu,
                        c, eta, eta_v, steps, steps + 1, use_gram, train_v, opt,
                        gamma, rho, v, og, orho, ov, ol, oe)
    out_status[q] = status
    if status >= 0:
        out_test[q] = np.nan
        out_loss[q] = np.nan
        out_train[q] = np.nan
    else:
        out_loss[q] = ol[1]
        out_train[q] = oe[1]
        out_test[q] = clean_error_kernel(A, gamma, rho, v, N[si], c,
                                         test_yhat[si], test_B[si], test_X[si])


@njit(cache=True, parallel=True)
def batch_kernel(w0_e1, B, G, N, yhat, y, test_yhat, test_B, test_X,
                 job_seed, job_mu, job_v0, c, eta, eta_v, steps,
                 use_gram, train_v, opt, out_test, out_loss, out_train, out_status):
    """Run many configurations in parallel (numba prange), final values only.

    Realisation arrays are stacked over seeds (leading axis S); job q uses
    seed index job_seed[q], ||mu|| = job_mu[q] and v0 = job_v0[q].  Writes the
    final clean test error, training loss and training error, and the
    divergence step (-1 if none) of each job.  Jobs are independent, so the
    results do not depend on the number of threads.
    """
    for q in prange(job_seed.shape[0]):
        _run_job(q, w0_e1, B, G, N, yhat, y, test_yhat, test_B, test_X,
                 job_seed, job_mu, job_v0, c, eta, eta_v, steps, use_gram, train_v,
                 opt, out_test, out_loss, out_train, out_status)


@njit(cache=True)
def batch_kernel_serial(w0_e1, B, G, N, yhat, y, test_yhat, test_B, test_X,
                        job_seed, job_mu, job_v0, c, eta, eta_v, steps,
                        use_gram, train_v, opt, out_test, out_loss, out_train, out_status):
    """``batch_kernel`` on one thread (for dask workers: no nested threading)."""
    for q in range(job_seed.shape[0]):
        _run_job(q, w0_e1, B, G, N, yhat, y, test_yhat, test_B, test_X,
                 job_seed, job_mu, job_v0, c, eta, eta_v, steps, use_gram, train_v,
                 opt, out_test, out_loss, out_train, out_status)
