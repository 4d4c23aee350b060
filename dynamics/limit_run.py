"""t = inf for a batch of jobs (docs/guide/time-and-limit.md): the finite
checkpoints and the flow to the pattern time in one Numba kernel
(``kernels.pattern_kernel``), then one max-margin program per job
(``limit.certify``, then ``evaluate_limit`` here).  ``batch.run_batch``
calls ``limit_batch`` when the last checkpoint is inf.

The programs are plain Python (Clarabel holds the GIL), so with more than one
Numba thread and at least POOL_MIN programs they run in forked worker
processes, as many as Numba threads (``map_programs``); each program is
deterministic, so results do not depend on the number of workers."""
from __future__ import annotations

import ctypes
import multiprocessing
import signal
import warnings
from typing import NamedTuple

import numpy as np

from . import limit as lm
from .batch import RESULTS, job_outputs
from .kernels import Jobs, KStats, PatternLeg, Schedule, State, outputs_kernel, \
    pattern_kernel, test_outputs
from .kernels.threads import thread_count
from .limit import LIMIT_FIELDS
from .params import Params
from .run import FLOW, PATTERN_FLOW, kernel_config


POOL_MIN = 24  # fewer programs run in this process (forking costs more than it saves) ...
POOL_N = 40    # ... unless n >= POOL_N (a program takes ~0.2 s at n = 40, seconds at n = 80)


def _worker_start():
    """A program worker: default signal actions (Ctrl-C ends it with the
    command), SIGKILL when the parent dies (Linux), so no worker outlives a
    killed run, and one BLAS thread (the products are n x n)."""
    from threadpoolctl import threadpool_limits

    threadpool_limits(1)
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _certify(item):
    return lm.certify(*item)


def map_programs(items: list, workers: int) -> list:
    """``limit.certify`` of every (problem, pattern) in ``items``, in order:
    in this process, or in ``workers`` forked processes when workers > 1,
    fork exists and there are at least POOL_MIN items (2 at n >= POOL_N).
    The workers are terminated on the way out, whatever happens (Ctrl-C, an
    error)."""
    least = 2 if items and items[0][0].n >= POOL_N else POOL_MIN
    if workers <= 1 or len(items) < least \
            or "fork" not in multiprocessing.get_all_start_methods():
        return [lm.certify(*it) for it in items]
    with warnings.catch_warnings():  # the workers only run Clarabel and numpy
        warnings.filterwarnings("ignore", message=".*fork.*", category=DeprecationWarning)
        pool = multiprocessing.get_context("fork").Pool(workers, initializer=_worker_start)
    try:
        # small chunks: a program takes 10-100 ms at n = 20 (seconds at n = 80),
        # and a worker left without work at the end of the map idles for up
        # to one chunk
        return pool.map(_certify, items, chunksize=max(1, len(items) // (32 * workers)))
    finally:
        pool.terminate()
        pool.join()


class FlowEnd(NamedTuple):
    """The flow's state (gamma, rho, v) at GD time t, whose pattern seeds the
    program, and its normalised margin there."""

    gamma: np.ndarray
    rho: np.ndarray
    v: np.ndarray
    margin: float
    t: float


def limit_batch(params: Params, level: str, stacked, jobs: Jobs, cp, *, use_flow: bool,
                parallel: bool = True, t_pattern: float | None = None) -> dict:
    """``run_batch`` when the last checkpoint is inf: the finite checkpoints
    as usual, then the flow with ``run.PATTERN_FLOW``'s steps to GD time
    ``t_pattern`` (default ``limit.PATTERN_TIME``; ``kernels.pattern_kernel``), and at inf the
    certified limit of the program seeded by that state's pattern
    (``limit.certify``, ``evaluate_limit``): its test error (ties 1/2), margin 1/(2 OPT),
    loss and train error 0.  res["limit"] (Q, len(LIMIT_FIELDS)) holds the
    certificate; info[:, 0] = certified 1/0.  A run whose flow diverged or
    does not separate the data at t_pattern (status reason 5) or whose
    program failed (reason 6) gets NaN at inf."""
    cfg = kernel_config(params, level)
    t_pattern = lm.PATTERN_TIME if t_pattern is None else float(t_pattern)
    job_seed, job_mu = jobs.seed, jobs.mu
    Q, K = job_mu.shape[0], cp.size
    m, n = stacked.B.shape[2], stacked.B.shape[3]
    res = {k: np.full((Q, K), np.nan) for k in RESULTS}
    res["status"] = np.empty((Q, 2), dtype=np.int64)
    res["info"] = np.empty((Q, 4))
    res["limit"] = np.full((Q, len(LIMIT_FIELDS)), np.nan)
    state = State(np.empty((Q, 2, m)), np.empty((Q, 2, m, n)), np.empty(0),
                  np.empty((Q, 2, m, 2)))
    pattern_kernel(stacked, cfg, jobs, Schedule(np.ascontiguousarray(cp[:-1]), FLOW, use_flow),
                   PatternLeg(t_pattern, PATTERN_FLOW), job_outputs(res), state,
                   parallel=parallel)
    res["info"][:, 0] = 0.0
    res["info"][:, 3] = -1.0
    res["limit"][:, LIMIT_FIELDS.index("t_pattern")] = t_pattern
    todo = []
    for q in range(Q):
        if res["status"][q, 0] >= 0:
            continue
        if not res["margin"][q, K - 1] > 0.0:  # data not separated: no program
            res["status"][q] = (int(min(t_pattern, 4e18)), 5)
            res["test_error"][q, K - 1] = np.nan
            continue
        todo.append(q)
    ksts = [KStats(*(x[job_seed[q]] for x in stacked)) for q in todo]
    items = []
    for q, kst in zip(todo, ksts):
        mu = float(job_mu[q])
        items.append((lm.make_problem(kst, params, mu),
                      lm.flow_pattern(kst, mu, state.gamma[q], state.rho[q], state.v[q])))
    certs = map_programs(items, thread_count(parallel))
    for q, kst, cert in zip(todo, ksts, certs):
        end = FlowEnd(state.gamma[q], state.rho[q], state.v[q], float(res["margin"][q, K - 1]),
                      t_pattern)
        fields, err, _, _ = evaluate_limit(kst, cfg, params, float(job_mu[q]), end,
                                           certified=cert)
        res["limit"][q] = [fields[k] for k in LIMIT_FIELDS]
        if not np.isfinite(err):
            res["status"][q] = (int(min(t_pattern, 4e18)), 6)
            res["test_error"][q, K - 1] = np.nan
            continue
        res["info"][q, 0] = fields["certified"]
        res["test_error"][q, K - 1] = err
        res["loss"][q, K - 1] = 0.0
        res["train_error"][q, K - 1] = 0.0
        res["margin"][q, K - 1] = 1.0 / (2.0 * fields["opt"])
    return res


def outputs(kst, cfg, mu: float, gamma, rho, v, zero_init: bool = False):
    """Training and test outputs (f_train (n,), f_test (nt,)) of a depth-1
    state through the kernels; ``zero_init`` drops w(0) (a limit state)."""
    st = kst
    if zero_init:
        st = kst._replace(w0_e1=np.zeros_like(kst.w0_e1), B=np.zeros_like(kst.B),
                          test_B=np.zeros_like(kst.test_B))
    U = kst.U0
    f_train = np.empty((1, kst.yhat.shape[0]))
    outputs_kernel(st, cfg, float(mu), gamma[None], rho[None], U[None], v[None], f_train)
    f_test = np.empty(kst.test_yhat.shape[0])
    test_outputs(mu * st.w0_e1, gamma, rho, U, v, st, cfg, f_test)
    return f_train[0], f_test


def evaluate_limit(kst, cfg, params: Params, mu: float, end: FlowEnd, *,
                   max_moves: int | None = None, certified=None):
    """The certified limit of one run from the flow's late state ``end``
    (``FlowEnd``): (fields, test_error, limit state (gamma, rho, v), Limit).
    ``fields``: LIMIT_FIELDS -> value (see LIMIT_META).  ``certified``: the
    result of ``certify`` for this run when already computed."""
    gamma, rho, v, flow_margin, t_pattern = end
    prob = lm.make_problem(kst, params, mu)
    if certified is None:
        certified = lm.certify(prob, lm.flow_pattern(kst, mu, gamma, rho, v), max_moves)
    lim, zdual = certified
    out = dict.fromkeys(LIMIT_FIELDS, np.nan)
    out["t_pattern"] = t_pattern
    if not lim.optimum.ok:
        return out, np.nan, None, lim
    g, r, vv = lm.limit_state(prob, lim, mu)
    f_train, f_test = outputs(kst, cfg, mu, g, r, vv, zero_init=True)
    err, ties = lm.tie_error(f_test, kst.test_yhat)
    ff_train, ff_test = outputs(kst, cfg, mu, gamma, rho, v)
    a, b = np.concatenate([f_train, f_test]), np.concatenate([ff_train, ff_test])
    out.update(certified=float(lim.certified), opt_pattern=lim.opt_pattern,
               opt=lim.optimum.opt, flips=float(lim.moves),
               margin_ratio=flow_margin * 2.0 * lim.optimum.opt,
               cosine=float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b))), ties=ties,
               kappa_pos=lim.kappa[0], kappa_neg=lim.kappa[1], zero_unit_dual=zdual)
    return out, err, (g, r, vv), lim
