"""Configuration groups: jobs of one seed stepped together.

Jobs that share a seed share every statistic (B, G, N, labels, test data);
only A = ||mu|| <w0, e_1> and v0 differ.  A *group* of C such jobs advances
together with the job as the innermost, contiguous axis (state (2, m, [n,]
[2,] C)), so the Gram products (training z = B + rho G, test outputs) and
the increments run as SIMD loops of length C instead of n: GD segments,
the normalised scheme (each job its own step and time; a job that has
arrived gets step 0) and the checkpoint values.  Every
job performs the floating-point operations of the one-job code
(``_forward_depth1``, ``_increments_depth1``, ``_apply``, ``_test_outputs``,
``_checkpoint``) in the same order, so results equal the
one-job path bit for bit (tests/equivalence/test_groups.py); increments are applied in
place as they are formed (exact: the increment of (j, r) reads only the
state of (j, r) and l', fixed for the step).  A finished job is zeroed and
stepped with step size 0 until its group ends.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numba import njit

from ..params import THETA_MAX
from .flow import normalised_dt
from .group_step import _forward_group, _lprime_group, _outputs_group, _step_group
from .job import _initial_loss, _reset_job
from .measure import _margin
from .primitives import _error_rate, _lprime_stable
from .types import LOSS_UNDERFLOW, _job_stats, _work


@njit(cache=True, inline="always")
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


@njit(cache=True, inline="always")
def _group(sj, mus, v0s):
    """Initial state (0, 0, v0) of C jobs of one seed, in the dtype of the
    statistics sj (float64, or float32 for ``--precision float32``); times,
    step counts and the measured results stay float64."""
    C = mus.shape[0]
    m, n, nt = sj.B.shape[1], sj.yhat.shape[0], sj.test_yhat.shape[0]
    dt = sj.B.dtype
    A = np.empty((2, m, C), dt)
    v = np.empty((2, m, 2, C), dt)
    mu2 = np.empty(C, dt)
    for c in range(C):
        mu2[c] = mus[c] * mus[c]
        for j in range(2):  # a loop, not A[:, :, c] = ... (``primitives._copy2``)
            for r in range(m):
                A[j, r, c] = mus[c] * sj.w0_e1[j, r]
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


@njit(cache=True, inline="always")
def _retire(gr, c, job, reason, out_status):
    """Job c of a group (row ``job`` of the outputs) stops at its time t[c] for ``reason``
    (divergence 1-3, step budget 4): record it, mark it finished and zero its
    state (it keeps being stepped with zero step size, harmless finite
    arithmetic, but is never read)."""
    out_status[job, 0] = int(min(gr.t[c], 4e18))
    out_status[job, 1] = reason
    gr.alive[c] = False
    gr.gamma[:, :, c] = 0.0
    gr.rho[:, :, :, c] = 0.0
    gr.v[:, :, :, c] = 0.0
    gr.mg[:, :, c] = 0.0
    gr.mr[:, :, :, c] = 0.0
    gr.mv[:, :, :, c] = 0.0


@njit(cache=True, inline="always")
def _test_outputs_group(gr, sj, cfg, gamma, rho, v, ftest):
    """``_test_outputs`` of the group's jobs at state (gamma, rho, v) into
    ftest (nt, C)."""
    m, n, C = gamma.shape[1], rho.shape[2], gamma.shape[2]
    for j in range(2):
        for r in range(m):
            for k in range(n):
                for c in range(C):
                    gr.rhohat[j, r, k, c] = rho[j, r, k, c] / sj.N[k]
    _outputs_group(gr.A, gamma, gr.rhohat, v, sj.test_B, sj.test_X, sj.test_yhat, True, cfg.c,
                   gr.a, gr.h, gr.ztest, ftest)


@njit(cache=True, inline="always")
def _measure_group(gr, sj, sjh, cfg, which, gamma1, rho1, v1, with_test):
    """``_checkpoint`` for the jobs with which[c], outputs of all jobs at once:
    reason[c] (divergence 1, else 0), the normalised margin (gr.margin) and,
    if reason 0, loss, train error and clean test error (gr.loss, gr.train,
    gr.test; only with with_test, else the test error is not computed).
    Outputs from the statistics sjh in the group's dtype; loss and margin in
    float64 (statistics sj, the job's state gathered into float64 arrays)."""
    C = gr.f.shape[1]
    _forward_group(gr.A, gr.gamma, gr.rho, gr.v, sjh, cfg, gr.a, gr.h, gr.z, gr.f)
    if with_test:
        _test_outputs_group(gr, sjh, cfg, gr.gamma, gr.rho, gr.v, gr.ftest)
    for c in range(C):
        gr.reason[c] = 0
        if not which[c]:
            continue
        reason, loss = _lprime_stable(gr.f[:, c], sj.y, gr.lp[:, c])
        gr.reason[c] = reason
        _gather(c, gr.gamma, gr.rho, gr.v, gamma1, rho1, v1)
        gr.margin[c] = _margin(gr.mu[c] * sj.w0_e1, gr.mu[c], gamma1, rho1, None, v1, sj,
                               gr.f[:, c], cfg)
        if reason == 0:
            gr.loss[c] = loss
            gr.train[c] = _error_rate(gr.f[:, c], sj.y)
            if with_test:
                gr.test[c] = _error_rate(gr.ftest[:, c], sj.test_yhat)


@njit(cache=True, inline="always")
def _record_group(gr, k, job0, out):
    """Checkpoint k of every running job from ``_measure_group``; a job whose
    outputs are not finite stops there."""
    for c in range(gr.mu.shape[0]):
        if not gr.alive[c]:
            continue
        job = job0 + c
        if gr.reason[c] != 0:
            _retire(gr, c, job, gr.reason[c], out.status)
            continue
        out.test[job, k] = gr.test[c]
        out.loss[job, k] = gr.loss[c]
        out.train[job, k] = gr.train[c]
        out.margin[job, k] = gr.margin[c]


@njit(cache=True, inline="always")
def _gd_group(gr, sj, cfg, target, job0, out_status):
    """GD steps of every running job from the common time to ``target``
    (``_advance`` with GD, job by job semantics)."""
    C = gr.mu.shape[0]
    gr.eta[:] = cfg.eta
    gr.eta_v[:] = cfg.eta_v
    t = gr.t.max()  # the common time of the running jobs (finished ones stopped earlier)
    while True:
        _forward_group(gr.A, gr.gamma, gr.rho, gr.v, sj, cfg, gr.a, gr.h, gr.z, gr.f)
        _lprime_group(gr.f, sj.y, gr.lp, gr.reason, gr.worst)
        for c in range(C):
            if gr.alive[c] and gr.reason[c] != 0:
                _retire(gr, c, job0 + c, gr.reason[c], out_status)
        if t >= target:
            break
        _step_group(gr, sj, cfg, cfg.beta)
        t += 1.0
        for c in range(C):
            if gr.alive[c]:
                gr.t[c] = t
                if not gr.big[c] <= THETA_MAX:
                    _retire(gr, c, job0 + c, 3, out_status)


@njit(cache=True, inline="always")
def _normalised_group(gr, sj, cfg, fc, running, t_end, stop):
    """``normalised_gd`` for the jobs with running[c]: each from its time t[c]
    to t_end with its own loss-normalised step (the others get step 0).
    stop[c] = reason (0 ok, 1-3 divergence, 4 step budget, LOSS_UNDERFLOW) of
    each job."""
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
        _forward_group(gr.A, gr.gamma, gr.rho, gr.v, sj, cfg, gr.a, gr.h, gr.z, gr.f)
        for c in range(C):
            gr.eta[c] = 0.0
            gr.eta_v[c] = 0.0
            if moving[c]:
                reason, loss = _lprime_stable(gr.f[:, c], sj.y, gr.lp[:, c])
                if reason != 0:
                    stop[c] = reason
                    moving[c] = False
                    continue
                if loss == 0.0:  # as normalised_gd: a step made it 0, or GD's state stays
                    if gr.count[c] > 0:
                        stop[c] = LOSS_UNDERFLOW
                    else:
                        gr.t[c] = t_end
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
        _step_group(gr, sj, cfg, 0.0)
        for c in range(C):
            if moving[c]:
                gr.count[c] += 1
                dt = gr.dt[c]
                gr.t[c] = t_end if dt >= t_end - gr.t[c] else gr.t[c] + dt
                if not gr.big[c] <= THETA_MAX:
                    stop[c] = 3
                    moving[c] = False


@njit(cache=True)
def _run_group(g, st, sth, cfg, fc, use_flow, jobs, group_start, checkpoints, out):
    """Jobs group_start[g] .. group_start[g+1]-1 of ``jobs`` (one seed) stepped together
    (outputs to ``out``, ``JobOutputs``):
    GD segments (``_gd_group``), normalised segments (``_normalised_group``)
    checkpoint values of all jobs at once
    (``_measure_group``).  The group's state and arithmetic take the dtype
    of sth (the statistics st, float64, or a float32 copy); st (float64)
    serves the one-job parts (initial loss, margins, the job-by-job path).
    With sth = st the results equal ``_run_job``'s bit for bit.  Groups are
    depth 1, plain GD, at least ``Groups.min_size`` jobs and at most
    GROUP_TEST_MAX test outputs (``entry.group_kernel`` sends the others to
    the one-job entry)."""
    job0, job1 = group_start[g], group_start[g + 1]
    sj = _job_stats(st, jobs.seed[job0])
    sjh = _job_stats(sth, jobs.seed[job0])
    C = job1 - job0
    m, n = sj.B.shape[1], sj.yhat.shape[0]
    gr = _group(sjh, jobs.mu[job0:job1], jobs.v0[job0:job1])
    # one-job scratch for checkpoints and measurements
    gamma1, rho1, v1 = np.zeros((2, m)), np.zeros((2, m, n)), np.zeros((2, m, 2))
    w = _work(m, n, 1)
    stop = np.zeros(C, dtype=np.int64)
    for c in range(C):
        job = job0 + c
        _reset_job(job, out)
        v1[:] = jobs.v0[job]
        gr.L0[c] = _initial_loss(gr.mu[c] * sj.w0_e1, gamma1, rho1, None, v1, sj, cfg, w)
    for k in range(checkpoints.shape[0]):
        target = checkpoints[k]
        if np.isinf(target):
            raise ValueError("t = inf is the limit program (dynamics.limit), not a kernel time")
        gd = True
        if fc is not None:
            if use_flow or target > fc.gd_max:
                _normalised_group(gr, sjh, cfg, fc, gr.alive, target, stop)
                for c in range(C):
                    if gr.alive[c] and stop[c] != 0:
                        _retire(gr, c, job0 + c, stop[c], out.status)
                gd = False
        if gd:
            _gd_group(gr, sjh, cfg, target, job0, out.status)
        _measure_group(gr, sj, sjh, cfg, gr.alive, gamma1, rho1, v1, True)
        _record_group(gr, k, job0, out)
    for c in range(C):
        out.info[job0 + c, 1] = gr.t[c]
        out.info[job0 + c, 2] = gr.count[c]
