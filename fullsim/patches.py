"""The weight-space network of the model family (docs/theory.md#general-reduction) on any patches.

W (2, m, D), v (2, m, P), float64, full-batch GD with the activation of
``params`` (``dynamics.activation``):

    pre = <w_{j,r}, x_{i,p}>,  f_i = c sum_j j sum_{r,p} v_{j,r,p} sigma(pre)
    dL/dw_{j,r} = (c/n) j sum_{i,p} l'_i y_i v_{j,r,p} sigma'(pre) x_{i,p}
    dL/dv_{j,r,p} = (c/n) j sum_i l'_i y_i sigma(pre)

The reference that ``dynamics.general.simulate_general`` must reproduce on the
same ``PatchData`` (the paper's family from ``model_data`` or a data file).
"""
from __future__ import annotations

import time

import numpy as np

from dynamics.data import check_memory
from dynamics.activation import activation, activation_code, activation_grad
from dynamics.general import GeneralTrajectory, PatchData, check_general, check_record_general, \
    homogeneity, model_data
from dynamics.params import Params, check_record_every
from dynamics.run import DivergenceError, error_count, record_steps

from .network import blas_threads, divergence_reason

_JS = np.array([1.0, -1.0])


def patch_forward(W, V, X, c, code, a):
    """pre (2, m, n, P) and f (n,) for W (2, m, D), V (2, m, P), X (n, P, D)."""
    m, D = W.shape[1], W.shape[2]
    n, P = X.shape[0], X.shape[1]
    pre = (W.reshape(2 * m, D) @ X.reshape(n * P, D).T).reshape(2, m, n, P)
    f = c * np.einsum("j,jrp,jrip->i", _JS, V, activation(pre, code, a))
    return pre, f


def patch_gradients(W, V, X, y, c, code, a):
    """(loss, train error, pre, f, gW, gV) of the logistic loss."""
    m, D = W.shape[1], W.shape[2]
    n, P = X.shape[0], X.shape[1]
    pre, f = patch_forward(W, V, X, c, code, a)
    yf = y * f
    loss = float(np.mean(np.logaddexp(0.0, -yf)))
    g = (c / n) * (-np.exp(-np.logaddexp(0.0, yf))) * y  # (c/n) l'_i y_i
    jg = _JS[:, None, None, None] * g[None, None, :, None]
    coef = jg * V[:, :, None, :] * activation_grad(pre, code, a)
    gW = (coef.reshape(2 * m, n * P) @ X.reshape(n * P, D)).reshape(2, m, D)
    gV = np.sum(jg * activation(pre, code, a), axis=2)
    return loss, error_count(yf) / yf.size, pre, f, gW, gV


def patch_test_error(W, V, data: PatchData, mu: float, c, code, a) -> float:
    """Clean test error on the test patches of ``data`` (NaN without any)."""
    if len(data.y_test) == 0:
        return float("nan")
    scale = data.scale(mu)[None, :, None]
    wrong = 0
    for sl, xt in data.test_chunks():
        _, f = patch_forward(W, V, xt * scale, c, code, a)
        wrong += error_count(data.y_test[sl] * f)
    return wrong / len(data.y_test)


@blas_threads
def simulate_full_patches(params: Params, data: PatchData | None = None,
                          sampler: str = "data", record_every: int = 1,
                          keep_weights: bool = False,
                          train_v: bool | None = None) -> GeneralTrajectory:
    """Full-batch GD of the weight-space network on ``data`` (default:
    ``model_data(params, sampler)``), recorded like ``simulate_general``;
    ``train_v`` None: params.train_v."""
    p = params
    check_general(p)
    record_every = check_record_every(record_every, p.steps)
    if data is None:  # the recording's memory first: model_data allocates
        check_record_general(p, p.n, 2, p.m, record_every)
        data = model_data(p, sampler)
    n, P, D, m = data.shape
    check_memory(8.0 * (3 * 2 * m * D + 2 * n * P * D), f"the full network at D={D}, m={m}")
    check_record_general(p, n, P, m, record_every)
    rec = record_steps(p.steps, record_every)
    code, a = activation_code(p)
    train_v = p.train_v if train_v is None else train_v
    t0 = time.perf_counter()
    X = data.patches(p.mu_norm)
    W, V = data.w0.copy(), data.initial_v(p)
    R = len(rec)
    pre_rec, v_rec = np.full((R, 2, m, n, P), np.nan), np.full((R, 2, m, P), np.nan)
    loss_rec, err_rec = np.full(R, np.nan), np.full(R, np.nan)
    k = 0
    for t in range(p.steps + 1):
        L, e, pre, f, gW, gV = patch_gradients(W, V, X, data.y, p.c, code, a)
        reason = divergence_reason(f, L, W, V)
        if reason:
            raise DivergenceError(t, reason, p, "full")
        if t == rec[k]:
            pre_rec[k], v_rec[k], loss_rec[k], err_rec[k] = pre, V, L, e
            k += 1
        if t == p.steps:
            break
        W -= p.eta * gW
        if train_v:
            V -= p.eta_v_eff * gV
    sq = np.sum(W * W) + (np.sum(V * V) if train_v else 0.0)
    traj = GeneralTrajectory(
        params=p, level="full", sampler=sampler if data.source == "model" else "file",
        source=data.source, steps=rec, pre=pre_rec, v=v_rec, loss=loss_rec,
        train_error=err_rec, test_error=patch_test_error(W, V, data, p.mu_norm, p.c, code, a),
        y=data.y, wall_time=time.perf_counter() - t0, unused=data.unused)
    traj.extra["margin"] = float(np.min(data.y * f)
                                 / sq ** (0.5 * homogeneity(p.replace(train_v=train_v))))
    if keep_weights:
        traj.extra.update(W=W, V=V)
    return traj
