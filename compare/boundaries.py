"""Boundaries for any level: picks the evaluator and calls the solver.

The solver (``dynamics.boundary.find_boundaries``) takes an evaluator; this
module is the one place that knows which evaluator serves which level:
``dynamics.boundary.reduced_evaluator`` for the reduced levels,
``fullsim.full_evaluator`` (the weight-space network, sampler data) for "full".
"""
from __future__ import annotations

import numpy as np

from dynamics.boundary import Boundary, check_precision, find_boundaries, reduced_evaluator, \
    run_batch, seed_list, stacked_stats
from dynamics.params import ALL_LEVELS, SAMPLERS, TAU, Params, ParamError, check_choice, \
    check_count
from dynamics.run import check_checkpoints
from dynamics.general import general_evaluator, run_general_batch, stacked_general
from fullsim import full_evaluator, run_full_batch


def run_jobs(params: Params, level: str, sampler: str, seeds, job_seed, job_mu, job_v0,
             checkpoints=None, stacked=None, parallel: bool = True,
             precision: str = "float64") -> dict:
    """Per-job results (Q, K) at the checkpoint steps for any level (the
    job-level twin of ``make_evaluator``); ``stacked``: reuse reduced statistics;
    ``precision`` float32 only where ``check_precision`` allows it."""
    check_choice("level", level, ALL_LEVELS)
    check_precision(params, level, precision)
    if level == "full":
        return run_full_batch(params, seeds, job_seed, job_mu, job_v0, checkpoints)
    if level == "general":
        stacked = stacked_general(params, sampler, seeds) if stacked is None else stacked
        return run_general_batch(params, stacked, job_seed, job_mu, job_v0, checkpoints,
                                 parallel)
    stacked = stacked_stats(params, sampler, seeds) if stacked is None else stacked
    return run_batch(params, level, stacked, job_seed, job_mu, job_v0, checkpoints, parallel,
                     precision=precision)


def make_evaluator(params: Params, level: str, sampler: str, seeds, checkpoints=None,
                   integrator: str = "gd"):
    """(evaluator, sampler actually used) for ``level``; "full" uses sampler data."""
    check_choice("level", level, ALL_LEVELS)
    check_choice("sampler", sampler, SAMPLERS)
    if level == "full":
        if integrator != "gd" or any(np.isinf(check_checkpoints(checkpoints, params.steps))):
            raise ParamError("level", level, "the weight-space network runs GD to finite "
                             "times only in sweeps; use a reduced level for the flow and "
                             "t = inf (dyn compare --integrator flow checks the reduction)")
        return full_evaluator(params, seeds, checkpoints), "data"
    if level == "general":
        if integrator != "gd":
            raise ParamError("integrator", integrator, "the general level runs GD to "
                             "finite times (no flow, no t = inf)")
        if any(np.isinf(check_checkpoints(checkpoints, params.steps))):
            raise ParamError("times", list(checkpoints), "the general level runs GD to "
                             "finite times; t = inf (the limit) needs a paper level "
                             "(exact, orthogonal, fixed-output)")
        return general_evaluator(params, sampler, seeds, checkpoints), sampler
    return reduced_evaluator(params, level, sampler, seeds, checkpoints,
                             integrator=integrator), sampler


def find_boundaries_at(params: Params, level: str = "exact", sampler: str = "wishart",
                       n_seeds: int = 8, times=None, taus=(TAU,), guess=None,
                       integrator: str = "gd", **kwargs) -> list[Boundary]:
    """mu* at each checkpoint step in ``times`` (default: params.steps), all
    from the same runs (common random numbers in time and in ||mu||)."""
    seeds = seed_list(params, check_count("seeds", n_seeds))
    evaluate, sampler = make_evaluator(params, level, sampler, seeds, times, integrator)
    return find_boundaries(evaluate, params, seeds, times, taus, guess=guess,
                           level=level, sampler=sampler, **kwargs)


def find_boundary(params: Params, level: str = "exact", sampler: str = "wishart",
                  n_seeds: int = 8, taus=(TAU,), guess=None, **kwargs) -> Boundary:
    """mu* at params.steps (see ``dynamics.boundary.find_boundaries``)."""
    return find_boundaries_at(params, level, sampler, n_seeds, None, taus, guess, **kwargs)[0]
