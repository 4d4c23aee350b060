"""The weight-space network as a boundary evaluator (``dynamics.boundary``).

``full_evaluator`` has the same contract as ``dynamics.boundary.reduced_evaluator``:
||mu|| values (M,) -> per-seed results (S, M, K) at K checkpoint steps, so the
solver and the sweeps treat level "full" like any other level.  Each job
trains on the real data of its seed (sampler data): exact for any optimizer,
but O(m n d) per step.
"""
from __future__ import annotations

import numpy as np

from dynamics.batch import RESULTS
from dynamics.boundary import Evaluator, job_evaluator
from dynamics.run import check_checkpoints
from dynamics.params import Params

from .network import simulate_full


def run_full_batch(params: Params, seeds, job_seed, job_mu, job_v0=None,
                   checkpoints=None) -> dict:
    """Job q trains seed seeds[job_seed[q]] at ||mu|| = job_mu[q], v0 = job_v0[q];
    arrays (Q, K) of RESULTS at each checkpoint and ``status`` (Q, 2), as
    ``dynamics.batch.run_batch`` (a divergence is recorded, not raised)."""
    cp = check_checkpoints(checkpoints, params.steps)
    job_v0 = np.full(len(job_mu), params.v0) if job_v0 is None else job_v0
    Q = len(job_mu)
    out = {k: np.empty((Q, cp.size)) for k in RESULTS}
    out["status"] = np.empty((Q, 2), dtype=np.int64)
    for q, (si, mu, v0) in enumerate(zip(job_seed, job_mu, job_v0)):
        p = params.replace(seed=int(seeds[si]), mu_norm=float(mu), v0=float(v0),
                           steps=int(cp[-1]) if cp[-1] > 0 else params.steps)
        tr = simulate_full(p, record_every=p.steps, checkpoints=cp, raise_on_divergence=False)
        for k in RESULTS:
            out[k][q] = tr.extra["checkpoints"][k]
        out["status"][q] = tr.extra["status"]
    return out


def full_evaluator(params: Params, seeds, checkpoints=None) -> Evaluator:
    """Evaluator training the weight-space network for every (||mu||, seed)."""
    return job_evaluator(
        lambda job_seed, job_mu, cp: run_full_batch(params, seeds, job_seed, job_mu,
                                                    checkpoints=cp),
        len(seeds), check_checkpoints(checkpoints, params.steps))
