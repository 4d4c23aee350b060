"""Batches of jobs on the reduced kernels (docs/theory.md#phase-boundary).

``run_batch`` runs Q jobs (seed index, ||mu||, v0) of one parameter set to the
checkpoint times and returns per-job arrays (Q, K) of ``RESULTS``: jobs of
one seed advance together in configuration groups (``job_groups``,
``kernels.group_kernel``) where the group kernels apply, else one by one
(``kernels.batch_kernel``); t = inf goes to ``limit_run.limit_batch``.
``check_precision`` says where float32 runs.  Evaluators
(``boundary.reduced_evaluator``) and sweeps (``compare.phase``) call it.
"""
from __future__ import annotations

import numpy as np

from .data import sample_stats
from .kernels import GROUP_MAX, GROUP_MAX_F32, GROUP_MIN, GROUP_TEST_MAX, Groups, JobOutputs, \
    Jobs, KStats, Schedule, batch_kernel, group_kernel
from .kernels.threads import thread_count
from .levels import level_of
from .limit import check_limit
from .params import PRECISIONS, Params, ParamError, check_choice
from .run import FLOW, check_checkpoints, check_integrator, check_stats, kernel_config, \
    kernel_stats


RESULTS = ("test_error", "loss", "train_error", "margin")


def seed_list(params: Params, n_seeds: int) -> np.ndarray:
    """Seeds params.seed + s for s = 0..n_seeds-1."""
    return params.seed + np.arange(n_seeds)


def stacked_stats(params: Params, sampler: str, seeds):
    """Kernel statistics of every seed, stacked on a leading axis."""
    return kernel_stats([sample_stats(params.replace(seed=int(s)), sampler) for s in seeds])


GROUP_BYTES = 256 * 2 ** 20  # state of one group (the limit keeps ~10 arrays of (2, m, n, C))


def group_limit(m: int, n: int, itemsize: int = 8) -> int:
    """Largest group whose ~10 arrays (2, m, n, C) of ``itemsize`` bytes fit
    in GROUP_BYTES (a float64 group below kernels.GROUP_MIN runs job by job)."""
    return max(1, GROUP_BYTES // (10 * 2 * m * n * itemsize))


def job_groups(job_seed: np.ndarray, group_size: int = GROUP_MAX):
    """Order of the jobs by seed (stable) and the start offsets of groups of
    consecutive jobs of one seed, at most ``group_size`` each (a seed's jobs
    split into equal parts; ``kernels._run_group``)."""
    if group_size < 1:
        raise ValueError(f"group_size must be >= 1, got {group_size}")
    order = np.argsort(job_seed, kind="stable")
    _, first, counts = np.unique(job_seed[order], return_index=True, return_counts=True)
    starts = [0]
    for q0, count in zip(first, counts):
        parts = -(-count // group_size)
        starts += [q0 + (count * (p + 1)) // parts for p in range(parts)]
    return order, np.asarray(starts, dtype=np.int64)


def check_precision(params: Params, level: str, precision: str) -> str:
    """Refuse a precision the level cannot run: float32 runs only in the
    group kernels (paper levels, depth 1, ReLU); everything else is float64."""
    check_choice("precision", precision, PRECISIONS)
    if precision == "float64":
        return precision
    why = None
    if not level_of(level).float32:
        why = f"level {level!r} runs in float64 only"
    elif params.depth != 1:
        why = "depth >= 2 runs in float64 only"
    elif params.activation != "relu":
        why = "activations other than relu run in float64 only"
    if why:
        raise ParamError("precision", precision, f"float32 runs the sweep group kernels of the "
                         f"paper levels at depth 1 with ReLU ({why}); use float64")
    return precision


def float32_stats(stacked: KStats) -> KStats:
    """A float32 copy of the statistics for the float32 group kernels."""
    return KStats(*(np.ascontiguousarray(x, dtype=np.float32) for x in stacked))


def job_outputs(res: dict) -> JobOutputs:
    """The kernels' view (``JobOutputs``) of a results dict (RESULTS, status, info)."""
    return JobOutputs(res["test_error"], res["loss"], res["train_error"], res["margin"],
                      res["status"], res["info"])


def run_batch(run, stacked, job_seed, job_mu, job_v0=None, *, parallel: bool = True,
              group_size: int | None = None, t_pattern: float | None = None) -> dict:
    """Per-job results at the checkpoints ``run.times`` of ``run`` (``RunSpec``:
    params, level, integrator, precision; its seeds are those of
    ``stacked``): arrays (Q, K) of RESULTS, ``status``
    (Q, 2) and ``info`` (Q, 4) = (limit converged 1/0 or -1, final time in GD
    steps, normalised steps, test labels stable before the limit 1/0 or -1).
    Job q runs seed index job_seed[q] at ||mu|| = job_mu[q], v0 = job_v0[q];
    jobs of one seed advance together in groups of at most ``group_size``
    (default GROUP_MAX, GROUP_MAX_F32 in float32)
    (``kernels.group_kernel``; depth 1, ReLU, clean labels +-1, groups of
    >= GROUP_MIN jobs; else ``kernels.batch_kernel``, job by job; same
    results bit for bit);
    ``parallel`` runs the jobs on Numba's thread count (``kernels.threads``;
    else one thread; same results bit for bit).  integrator "gd": finite
    checkpoints are GD steps, inf continues with the flow; "flow": every
    checkpoint is flow time eta*T.
    precision "float32": every job runs in a group (of any size) with float32
    state and statistics (``check_precision``; sweeps only: results differ
    from float64 by float32 round-off, see docs/guide/phase.md), still independent of
    the thread count and of the grouping's split."""
    params, level, precision = run.params, run.level, run.precision
    check_precision(params, level, precision)
    cfg = kernel_config(params, level)
    check_stats(params, stacked, stacked=True)
    use_flow = check_integrator(params, run.integrator)
    cp = check_checkpoints(run.times, params.steps)
    job_seed = np.ascontiguousarray(job_seed, dtype=np.int64)
    job_mu = np.ascontiguousarray(job_mu, dtype=np.float64)
    job_v0 = (np.full(job_mu.shape, params.v0) if job_v0 is None
              else np.ascontiguousarray(job_v0, dtype=np.float64))
    if np.isinf(cp[-1]):  # the limit: the program of the flow's late pattern
        check_limit(params, level)
        if precision != "float64":
            raise ParamError("precision", precision, "t = inf (the limit program) runs in "
                             "float64; use float64")
        from .limit_run import limit_batch
        return limit_batch(params, level, stacked, Jobs(job_seed, job_mu, job_v0), cp,
                           use_flow=use_flow, parallel=parallel, t_pattern=t_pattern)
    m, n, nt = stacked.B.shape[2], stacked.B.shape[3], stacked.test_yhat.shape[1]
    f32 = precision == "float32"
    if group_size is None:
        group_size = GROUP_MAX_F32 if f32 else GROUP_MAX
    size = min(group_size, group_limit(m, n, 4 if f32 else 8))
    if f32:  # every group must run as a group: its test outputs within GROUP_TEST_MAX
        size = min(size, GROUP_TEST_MAX // max(nt, 1))
        if size < 1:
            raise ParamError("precision", precision, f"{nt} test points are more than a "
                             f"float32 group holds ({GROUP_TEST_MAX}); use float64")
    order, starts = job_groups(job_seed, size)
    threads = thread_count(parallel)
    while starts.size - 1 < threads and size // 2 >= (1 if f32 else GROUP_MIN):  # all threads
        size //= 2  # (the grouping never changes a result, only the speed)
        order, starts = job_groups(job_seed, size)
    Q = job_mu.shape[0]
    res = {k: np.empty((Q, cp.size)) for k in RESULTS}
    res["status"] = np.empty((Q, 2), dtype=np.int64)
    res["info"] = np.empty((Q, 4))
    out = job_outputs(res)
    jobs = Jobs(job_seed[order], job_mu[order], job_v0[order])
    schedule = Schedule(cp, FLOW, use_flow)
    groupable = (stacked.U0.shape[1] == 0 and cfg.act == 0  # depth 1, ReLU, labels +-1
                 and np.all(np.abs(stacked.yhat) == 1.0)
                 and np.all(np.abs(stacked.test_yhat) == 1.0))
    if f32 and not groupable:
        raise ParamError("precision", precision, "float32 needs the group kernels (depth 1, "
                         "ReLU, clean labels +-1); use float64")
    if Q and f32:
        group_kernel(stacked, float32_stats(stacked), cfg, jobs, Groups(starts, 1), schedule, out,
                     parallel=parallel)
    elif Q and groupable and np.diff(starts).max() >= GROUP_MIN:
        group_kernel(stacked, stacked, cfg, jobs, Groups(starts, GROUP_MIN), schedule, out,
                     parallel=parallel)
    else:  # no group big enough: the one-job kernel (does not compile the group code)
        batch_kernel(stacked, cfg, jobs, schedule, out, parallel=parallel)
    unsorted = {}
    for k, val in res.items():
        unsorted[k] = np.empty_like(val)
        unsorted[k][order] = val
    return unsorted
