"""Compiled entry points and their dispatch in Python.

Each public function below picks the path of its job in Python and calls a
compiled entry whose call graph holds only that path: depth 1 passes
``U = None`` (the deep code is pruned), a batch whose checkpoints all lie
within ``FlowConfig.gd_max`` without the flow integrator passes ``fc = None``
(the normalised scheme is pruned), plain GD passes ``momentum = None`` (at
depth 1 the generic step behind the fused loop is pruned), one-job batches
and groups are separate entries.  The batch entries are ``nogil`` serial
loops over a range of jobs (or groups) that ``threads.run_chunks`` calls
from as many threads as Numba has (``parallel=False``: one call on this
thread, as on a dask worker); no entry is ``parallel=True``, whose parfor
lowering would double the compilation of every path (``threads``).
"""
from __future__ import annotations

import numpy as np
from numba import njit

from .flow import normalised_gd, pattern_leg
from .groups import _run_group
from .job import _initial_loss, _pattern_job, _run_job
from .loop1 import _gd_loop_depth1
from .measure import _clean_error, _test_outputs, _theta_norm_sq
from .primitives import _copy_flat, _error_rate, _loss, _lprime, _lprime_stable
from .step import _forward, _gd_step
from .threads import run_chunks
from .types import GROUP_TEST_MAX, JobOutputs, Jobs, _depth, _work


# ---------------------------------------------------------------- dispatch
def _upper(U):
    """Upper layers (L-1, 2, m, m) as the kernels take them: None at depth 1."""
    return None if U.shape[0] == 0 else U


def _flow_config(fc, use_flow, checkpoints):
    """fc when some checkpoint needs the normalised scheme, else None."""
    return fc if use_flow or (checkpoints.size and checkpoints.max() > fc.gd_max) else None


def _checked(cfg):
    """``cfg``, refused when ``cfg.general`` disagrees with ``cfg.act``: the
    kernels compile and run the ReLU bodies alone on general = None, so a
    hand-built KConfig(act=2) with the default general would run ReLU."""
    if (cfg.general is None) != (cfg.act == 0):
        raise ValueError(f"KConfig.general must be None exactly for ReLU (act 0), got "
                         f"act={cfg.act}, general={cfg.general!r}; build the config with "
                         f"dynamics.run.kernel_config")
    return cfg


def _momentum(cfg):
    """None for plain GD (cfg.beta == 0), True with heavy-ball momentum."""
    return None if cfg.beta == 0.0 else True


def run_kernel(st, cfg, mu, steps, record_every, state, rec):
    """Iterate the recursion ``steps`` times from ``state`` (``State``).

    The state arrays are updated in place (final state on return).  Records at
    t % record_every == 0 and at t == steps go to ``rec`` (``Records``).  On
    divergence rec.status = (step, reason) and the run stops; else
    rec.status[0] = -1.
    """
    _run_kernel(st, _checked(cfg), _momentum(cfg), mu, steps, record_every, state.gamma,
                state.rho, _upper(state.U), state.v, rec)


def outputs_kernel(st, cfg, mu, gammas, rhos, Us, vs, out_f):
    """Training outputs f (R, n) of R recorded states (any depth)."""
    _outputs_kernel(st, _checked(cfg), mu, gammas, rhos, None if Us.shape[1] == 0 else Us, vs, out_f)


def test_outputs(A, gamma, rho, U, v, st, cfg, f):
    """f(x) of every test point into f (nt,) (``measure._test_outputs``)."""
    _test_outputs(A, gamma, rho, _upper(U), v, st, _checked(cfg), f)


def clean_error_kernel(A, gamma, rho, U, v, st, cfg):
    """Clean test error: fraction of test points with yhat f(x) < 0, ties f = 0 counted 1/2."""
    return _clean_error(A, gamma, rho, _upper(U), v, st, _checked(cfg))


def theta_norm_sq(A, mu, gamma, rho, U, v, st, train_v):
    """||theta||^2 of the state (``measure._theta_norm_sq``)."""
    return _theta_norm_sq(A, mu, gamma, rho, _upper(U), v, st, train_v)


def flow_kernel(st, cfg, fc, mu, state, times, rec, fc_last=None):
    """Normalised-flow run from ``state`` (``State``) at time 0, recording the
    state, loss and train error at each time in ``times`` (GD steps,
    ascending, finite) into ``rec`` (``Records``); with ``fc_last`` (a
    ``FlowConfig``) the last leg is a ``flow.pattern_leg`` (its coarse part
    with fc_last's steps).
    rec.status = (index of the failing time, reason) or (-1, 0); rec.info =
    (-1, final time, normalised steps, -1)."""
    _flow_kernel(st, _checked(cfg), fc, fc_last, mu, state.gamma, state.rho, _upper(state.U),
                 state.v, times, rec)


def batch_kernel(st, cfg, jobs, schedule, out, parallel=True):
    """Run many configurations, each job alone (``job._run_job``), in parallel
    over jobs (``parallel=False``: one thread, the same results).

    ``st`` holds the statistics stacked over seeds (leading axis S); ``jobs``
    (``Jobs``): job q uses seed index jobs.seed[q], ||mu|| = jobs.mu[q] and
    v0 = jobs.v0[q]; ``schedule`` (``Schedule``): the K checkpoints and the
    integrator.  ``out`` (``JobOutputs``): rows (Q, K) at the checkpoints,
    status and info (see ``_run_job``).  Jobs are independent, so results do
    not depend on the number of threads.
    """
    cp, fc, use_flow = schedule
    upper = None if st.U0.shape[1] == 0 else st.U0
    run_chunks(_batch_kernel, jobs.seed.shape[0],
               (st, upper, _checked(cfg), _flow_config(fc, use_flow, cp), use_flow,
                _momentum(cfg), jobs, cp, out), parallel)


def group_kernel(st, sth, cfg, jobs, groups, schedule, out, parallel=True):
    """``batch_kernel`` with the jobs of one seed stepped together
    (``Groups``: jobs groups.start[g] .. groups.start[g+1]-1 share one seed,
    ``groups._run_group``); parallel over groups.  Groups below
    groups.min_size jobs or above GROUP_TEST_MAX test outputs run job by job
    in float64 through ``batch_kernel`` after the others (the group entry
    holds no one-job path, and the one-job entry compiles only when such a
    group exists).  With sth = st a job's result does not
    depend on its group, so results equal ``batch_kernel``'s bit for bit for
    any thread count; sth = st as float32 runs the groups in float32 (results
    independent of the thread count).  Depth 1 and ReLU only (run_batch calls
    batch_kernel for the others)."""
    if cfg.act != 0 or st.U0.shape[1] != 0:
        raise ValueError("the group kernels are depth 1 and ReLU only: use batch_kernel")
    cp, fc, use_flow = schedule
    size = np.diff(groups.start)
    alone = (size < groups.min_size) | (size * st.test_yhat.shape[1] > GROUP_TEST_MAX)
    together = np.flatnonzero(~alone)
    if together.size:
        run_chunks(_group_kernel, together.size,
                   (st, sth, _checked(cfg), _flow_config(fc, use_flow, cp), use_flow, jobs,
                    groups.start, together, cp, out), parallel)
    if alone.any():  # job by job in float64 (the one-job entry: compiled only when needed)
        idx = np.concatenate([np.arange(groups.start[g], groups.start[g + 1])
                              for g in np.flatnonzero(alone)])
        part = JobOutputs(*(x[idx] for x in out))  # fancy indexing: contiguous copies
        batch_kernel(st, cfg, Jobs(*(x[idx] for x in jobs)), schedule, part, parallel)
        for whole, x in zip(out, part):
            whole[idx] = x


def pattern_kernel(st, cfg, jobs, schedule, leg, out, states, parallel=True):
    """``batch_kernel`` for runs whose last time is the limit (depth 1): the
    K - 1 finite checkpoints of ``schedule`` as there, then the normalised
    flow on to GD time leg.t (``flow.pattern_leg``: schedule.fc's steps to
    its gd_max, then leg.fc's), whose checkpoint values go to column K - 1
    of ``out`` and whose state to states.gamma[q], states.rho[q],
    states.v[q] (``State`` with a leading job axis; U unused): the pattern
    that seeds the limit program (``dynamics.limit``).  Parallel over jobs;
    results do not depend on the threads.  Plain GD only (the limit follows
    gradient flow)."""
    if cfg.beta != 0.0:
        raise ValueError("pattern_kernel runs plain GD (cfg.beta == 0): the limit follows "
                         "gradient flow")
    cp, fc, use_flow = schedule
    run_chunks(_pattern_kernel, jobs.seed.shape[0],
               (st, _checked(cfg), fc, use_flow, jobs, cp, float(leg.t), leg.fc, out,
                states.gamma, states.rho, states.v), parallel)


# ---------------------------------------------------------------- compiled entries
@njit(cache=True, inline="always")
def _record(rec, k, gamma, rho, U, v, loss, f, y):
    """Record k of ``rec`` (``Records``): the state (U None at depth 1), the
    loss and the train error of the outputs f."""
    _copy_flat(rec.gamma[k], gamma)
    _copy_flat(rec.rho[k], rho)
    if U is not None:
        _copy_flat(rec.U[k], U)
    _copy_flat(rec.v[k], v)
    rec.loss[k] = loss
    rec.train_error[k] = _error_rate(f, y)


@njit(cache=True)
def _run_kernel(st, cfg, momentum, mu, steps, record_every, gamma, rho, U, v, rec):
    """``run_kernel`` (U None at depth 1, momentum None for plain GD: then
    the fused loop between records, ``_run_depth1_gd``)."""
    m, n = gamma.shape[1], st.yhat.shape[0]
    A = mu * st.w0_e1
    w = _work(m, n, _depth(U))
    rec.status[0] = -1
    rec.status[1] = 0
    if U is None:
        if momentum is None:
            _run_depth1_gd(st, cfg, A, mu, steps, record_every, gamma, rho, v, w, rec)
            return
    k = 0
    for t in range(steps + 1):
        _forward(A, gamma, rho, U, v, st, cfg, w)
        reason = _lprime(w.f, st.y, w.lp)
        if reason == 0 and (t % record_every == 0 or t == steps):
            _record(rec, k, gamma, rho, U, v, _loss(w.f, st.y), w.f, st.y)
            k += 1
        if reason == 0 and t < steps:
            reason = _gd_step(A, mu * mu, gamma, rho, U, v, st, cfg, w, momentum)
            if reason != 0:
                t += 1  # the new state is out of bounds
        if reason != 0:
            rec.status[0] = t
            rec.status[1] = reason
            return
        if t == steps:
            return


@njit(cache=True, inline="always")
def _run_depth1_gd(st, cfg, A, mu, steps, record_every, gamma, rho, v, w, rec):
    """``_run_kernel`` at depth 1 with plain GD: ``loop1._gd_loop_depth1``
    from record to record (the numbers of the generic step bit for bit,
    tests/equivalence/test_reduction.py; a cold start then compiles no
    second depth-1 step)."""
    t, target, k = 0.0, 0, 0
    while True:
        reason, t = _gd_loop_depth1(A, mu * mu, gamma, rho, v, st, cfg, w, t, float(target),
                                    cfg.general)
        if reason != 0:
            rec.status[0] = int(t)
            rec.status[1] = reason
            return
        _record(rec, k, gamma, rho, None, v, _loss(w.f, st.y), w.f, st.y)
        k += 1
        if target == steps:
            return
        target = min(target + record_every, steps)


@njit(cache=True)
def _outputs_kernel(st, cfg, mu, gammas, rhos, Us, vs, out_f):
    """``outputs_kernel`` (Us None at depth 1)."""
    A = mu * st.w0_e1
    L = 1
    if Us is not None:
        L = Us.shape[1] + 1
    w = _work(gammas.shape[2], out_f.shape[1], L)
    for t in range(gammas.shape[0]):
        if Us is None:
            _forward(A, gammas[t], rhos[t], None, vs[t], st, cfg, w)
        else:
            _forward(A, gammas[t], rhos[t], Us[t], vs[t], st, cfg, w)
        _copy_flat(out_f[t], w.f)


@njit(cache=True)
def _flow_kernel(st, cfg, fc, fc_last, mu, gamma, rho, U, v, times, rec):
    """``flow_kernel`` (U None at depth 1)."""
    A = mu * st.w0_e1
    m, n = gamma.shape[1], st.yhat.shape[0]
    w = _work(m, n, _depth(U))
    count = np.zeros(1, dtype=np.int64)
    L0 = _initial_loss(A, gamma, rho, U, v, st, cfg, w)
    rec.status[0] = -1
    rec.status[1] = 0
    rec.info[0] = -1.0
    rec.info[3] = 0.0
    t = 0.0
    for k in range(times.shape[0]):
        if np.isinf(times[k]):
            raise ValueError("t = inf is the limit program (dynamics.limit), not a kernel time")
        if fc_last is not None and k == times.shape[0] - 1:  # (pruned when fc_last is None)
            reason, t = pattern_leg(A, mu, gamma, rho, U, v, st, cfg, fc, fc_last, w, t,
                                    times[k], L0, count)
        else:
            reason, t = normalised_gd(A, mu, gamma, rho, U, v, st, cfg, fc, w, t, times[k], L0,
                                      count)
        if reason == 0:
            _forward(A, gamma, rho, U, v, st, cfg, w)
            reason, loss = _lprime_stable(w.f, st.y, w.lp)
            _record(rec, k, gamma, rho, U, v, loss, w.f, st.y)
        if reason != 0:
            rec.status[0] = k
            rec.status[1] = reason
            break
    rec.info[1] = t
    rec.info[2] = count[0]


@njit(cache=True, nogil=True)
def _batch_kernel(lo, hi, st, upper, cfg, fc, use_flow, momentum, jobs, checkpoints, out):
    """``batch_kernel``: jobs lo .. hi-1 (upper None at depth 1, fc None
    without the normalised scheme, momentum None for plain GD)."""
    for q in range(lo, hi):
        _run_job(q, st, upper, cfg, fc, use_flow, momentum, jobs, checkpoints, out)


@njit(cache=True, nogil=True)
def _group_kernel(lo, hi, st, sth, cfg, fc, use_flow, jobs, group_start, together, checkpoints,
                  out):
    """``group_kernel``: groups together[lo .. hi-1]."""
    for i in range(lo, hi):
        _run_group(together[i], st, sth, cfg, fc, use_flow, jobs, group_start, checkpoints,
                   out)


@njit(cache=True, nogil=True)
def _pattern_kernel(lo, hi, st, cfg, fc, use_flow, jobs, checkpoints, t_pattern, fc_leg, out,
                    out_gamma, out_rho, out_v):
    """``pattern_kernel``: jobs lo .. hi-1 (``_pattern_job``)."""
    for q in range(lo, hi):
        _pattern_job(q, st, cfg, fc, use_flow, jobs, checkpoints, t_pattern, fc_leg, out,
                     out_gamma, out_rho, out_v)
