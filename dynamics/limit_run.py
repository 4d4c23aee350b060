"""t = inf for a batch of jobs (docs/guide/time-and-limit.md): the finite
checkpoints and the flow to the pattern time in one Numba kernel
(``kernels.pattern_kernel``), then one max-margin program per job
(``limit.limit_job``).  ``boundary.run_batch`` calls ``limit_batch`` when the
last checkpoint is inf."""
from __future__ import annotations

import numba
import numpy as np

from . import limit as lm
from .boundary import RESULTS
from .kernels import KStats, pattern_kernel
from .limit import LIMIT_FIELDS
from .params import Params
from .run import FLOW, kernel_config


def limit_batch(params: Params, level: str, stacked, job_seed, job_mu, job_v0, cp,
                use_flow: bool, parallel: bool = True, t_pattern: float | None = None) -> dict:
    """``run_batch`` when the last checkpoint is inf: the finite checkpoints
    as usual, then the flow to GD time ``t_pattern`` (default
    ``limit.PATTERN_TIME``; ``kernels.pattern_kernel``), and at inf the
    certified limit of the program seeded by that state's pattern
    (``limit.evaluate_limit``): its test error (ties 1/2), margin 1/(2 OPT),
    loss and train error 0.  res["limit"] (Q, len(LIMIT_FIELDS)) holds the
    certificate; info[:, 0] = certified 1/0.  A run whose flow diverged or
    does not separate the data at t_pattern (status reason 5) or whose
    program failed (reason 6) gets NaN at inf."""
    cfg = kernel_config(params, level)
    t_pattern = lm.PATTERN_TIME if t_pattern is None else float(t_pattern)
    job_seed = np.ascontiguousarray(job_seed, dtype=np.int64)
    job_mu = np.ascontiguousarray(job_mu, dtype=np.float64)
    job_v0 = (np.full(job_mu.shape, params.v0) if job_v0 is None
              else np.ascontiguousarray(job_v0, dtype=np.float64))
    Q, K = job_mu.shape[0], cp.size
    m, n = stacked.B.shape[2], stacked.B.shape[3]
    res = {k: np.full((Q, K), np.nan) for k in RESULTS}
    res["status"] = np.empty((Q, 2), dtype=np.int64)
    res["info"] = np.empty((Q, 4))
    res["limit"] = np.full((Q, len(LIMIT_FIELDS)), np.nan)
    state = (np.empty((Q, 2, m)), np.empty((Q, 2, m, n)), np.empty((Q, 2, m, 2)))
    threads = numba.get_num_threads()
    if not parallel:
        numba.set_num_threads(1)
    try:
        pattern_kernel(stacked, cfg, FLOW, use_flow, job_seed, job_mu, job_v0,
                       np.ascontiguousarray(cp[:-1]), t_pattern, res["test_error"],
                       res["loss"], res["train_error"], res["margin"], res["status"],
                       res["info"], *state)
    finally:
        numba.set_num_threads(threads)
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
    args = [(KStats(*(x[job_seed[q]] for x in stacked)), cfg, params, float(job_mu[q]),
             state[0][q], state[1][q], state[2][q], float(res["margin"][q, K - 1]), t_pattern)
            for q in todo]
    for q, (fields, err) in zip(todo, map(lm.limit_job, args)):
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
