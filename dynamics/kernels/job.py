"""One job of a batch: train from (0, U0, v0) and write the values of each
checkpoint (GD segments, normalised segments beyond ``FlowConfig.gd_max``
or with the flow integrator).

Three arguments choose the compiled path by their type (``entry.py`` sets
them): ``upper`` (the stacked initial upper layers, None at depth 1), ``fc``
(a ``FlowConfig``, None when no checkpoint needs the normalised scheme) and
``momentum`` (None for plain GD, cfg.beta == 0: at depth 1 the fused loop
alone, so the generic step is not compiled; True with heavy-ball momentum).
Numba prunes the branches of the other choice before typing.
"""
from __future__ import annotations

import numpy as np
from numba import njit

from .flow import normalised_gd, pattern_leg
from .loop1 import _gd_loop_depth1
from .measure import _checkpoint
from .primitives import _copy_flat, _lprime, _lprime_stable
from .step import _forward, _gd_step
from .types import _depth, _job_stats, _upper_at, _upper_copy, _work


@njit(cache=True)
def _advance(A, mu, gamma, rho, U, v, st, cfg, fc, use_flow, momentum, w, t, target, L0,
             count):
    """Move the state from GD time t to ``target`` (GD steps, finite: the
    limit is the program of ``dynamics.limit``): GD steps unless use_flow or
    target > fc.gd_max (then the normalised scheme; fc None: GD only).
    momentum None (cfg.beta == 0) at depth 1: the fused loop.  Returns (reason, t)."""
    if np.isinf(target):
        raise ValueError("t = inf is the limit program (dynamics.limit), not a kernel time")
    if fc is not None:
        if use_flow or target > fc.gd_max:
            return normalised_gd(A, mu, gamma, rho, U, v, st, cfg, fc, w, t, target, L0, count)
    if U is None:
        if momentum is None:
            return _gd_loop_depth1(A, mu * mu, gamma, rho, v, st, cfg, w, t, target,
                                   cfg.general)
    reason = 0
    while True:
        _forward(A, gamma, rho, U, v, st, cfg, w)
        reason = _lprime(w.f, st.y, w.lp)
        if reason != 0 or t >= target:
            break
        reason = _gd_step(A, mu * mu, gamma, rho, U, v, st, cfg, w, momentum)
        t += 1.0
        if reason != 0:
            break
    return reason, t


@njit(cache=True, inline="always")
def _initial_loss(A, gamma, rho, U, v, st, cfg, w):
    """L_0 of the initial state (the normalised scheme's reference loss)."""
    _forward(A, gamma, rho, U, v, st, cfg, w)
    reason, loss = _lprime_stable(w.f, st.y, w.lp)
    return loss if reason == 0 else 1.0


@njit(cache=True, inline="always")
def _reset_job(job, out):
    """Outputs of a job before it runs: NaN results, status (-1, 0), no limit."""
    out.status[job, 0] = -1
    out.status[job, 1] = 0
    out.info[job, 0] = -1.0
    out.info[job, 1] = 0.0
    out.info[job, 2] = 0.0
    out.info[job, 3] = -1.0
    out.test[job, :] = np.nan
    out.loss[job, :] = np.nan
    out.train[job, :] = np.nan
    out.margin[job, :] = np.nan


@njit(cache=True, inline="always")
def _continue_job(job, k0, t, A, mu, gamma, rho, U, v, sj, cfg, fc, use_flow, momentum, w, L0,
                  count, checkpoints, out):
    """A job (statistics sj) from GD time t at checkpoint index k0 on: advance
    to each checkpoint and write its values (``_run_job``); the state moves
    in place."""
    for k in range(k0, checkpoints.shape[0]):
        reason, t = _advance(A, mu, gamma, rho, U, v, sj, cfg, fc, use_flow, momentum, w, t,
                             checkpoints[k], L0, count)
        if reason == 0:
            reason = _checkpoint(job, k, A, mu, gamma, rho, U, v, sj, cfg, w, out)
        if reason != 0:
            out.status[job, 0] = int(min(t, 4e18))
            out.status[job, 1] = reason
            break
    out.info[job, 1] = t
    out.info[job, 2] = count[0]


@njit(cache=True, inline="always")
def _run_job(job, st, upper, cfg, fc, use_flow, momentum, jobs, checkpoints, out):
    """Job ``job`` of a batch (``Jobs``): train from (0, U0, v0); at each
    checkpoint (GD steps, ascending, finite) write test error, loss, train
    error and normalised margin min_i y_i f_i / ||theta||^(L+1) to ``out``
    (``JobOutputs``; NaN after a divergence).
    out.info[job] = (-1, final time in GD steps, normalised steps taken, -1);
    the limit's columns 0 and 3 are filled by ``limit_run.limit_batch``.
    Returns the final state and buffers (``_start_job``'s tuple).
    """
    sj, mu, A, gamma, rho, U, v, w, count, L0 = _start_job(job, st, upper, cfg, jobs)
    _reset_job(job, out)
    _continue_job(job, 0, 0.0, A, mu, gamma, rho, U, v, sj, cfg, fc, use_flow, momentum, w, L0,
                  count, checkpoints, out)
    return sj, mu, A, gamma, rho, U, v, w, count, L0


@njit(cache=True, inline="always")
def _start_job(job, st, upper, cfg, jobs):
    """Initial state of a job: (its statistics, mu, A, gamma = 0, rho = 0, U0
    (None at depth 1), v = v0, work buffers, step count, initial loss L0)."""
    sj = _job_stats(st, jobs.seed[job])
    mu = jobs.mu[job]
    m, n = sj.B.shape[1], sj.yhat.shape[0]
    A = mu * sj.w0_e1
    gamma = np.zeros((2, m))
    rho = np.zeros((2, m, n))
    U = _upper_copy(_upper_at(upper, jobs.seed[job]))
    v = np.full((2, m, 2), jobs.v0[job])
    w = _work(m, n, _depth(U))
    count = np.zeros(1, dtype=np.int64)
    L0 = _initial_loss(A, gamma, rho, U, v, sj, cfg, w)
    return sj, mu, A, gamma, rho, U, v, w, count, L0


@njit(cache=True, inline="always")
def _pattern_job(job, st, cfg, fc, use_flow, jobs, checkpoints, t_pattern, fc_leg, out,
                 out_gamma, out_rho, out_v):
    """A job of ``pattern_kernel`` (depth 1): ``_run_job`` over the finite
    checkpoints, then the flow to t_pattern (``pattern_leg``: fc's steps to
    fc.gd_max, then fc_leg's)."""
    K = out.test.shape[1]
    sj, mu, A, gamma, rho, U, v, w, count, L0 = _run_job(
        job, st, None, cfg, fc, use_flow, None, jobs, checkpoints, out)
    if out.status[job, 0] >= 0:
        return
    reason, t = pattern_leg(A, mu, gamma, rho, U, v, sj, cfg, fc, fc_leg, w,
                            out.info[job, 1], max(t_pattern, out.info[job, 1]), L0, count)
    if reason == 0:
        reason = _checkpoint(job, K - 1, A, mu, gamma, rho, U, v, sj, cfg, w, out)
    if reason != 0:
        out.status[job, 0] = int(min(t, 4e18))
        out.status[job, 1] = reason
    out.info[job, 1] = t
    out.info[job, 2] = count[0]
    _copy_flat(out_gamma[job], gamma)
    _copy_flat(out_rho[job], rho)
    _copy_flat(out_v[job], v)
