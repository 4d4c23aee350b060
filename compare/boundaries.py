"""Boundaries for any level: picks the evaluator and calls the solver.

The solver (``dynamics.boundary.find_boundaries``) takes an evaluator; this
module is the one place that knows which evaluator serves which kind of
level (``dynamics.levels``): ``dynamics.boundary.reduced_evaluator`` for the
paper's levels, ``dynamics.general.general_evaluator`` for the family,
``fullsim.full_evaluator`` (the weight-space network, sampler data) for "full".
"""
from __future__ import annotations

from dynamics.batch import run_batch, seed_list, stacked_stats
from dynamics.boundary import Boundary, find_boundaries, reduced_evaluator
from dynamics.levels import FAMILY, NETWORK, sampler_for, validate
from dynamics.params import SAMPLERS, TAU, Params, check_choice, check_count
from dynamics.run import check_checkpoints
from dynamics.general import general_evaluator, run_general_batch, stacked_general
from fullsim import full_evaluator, run_full_batch


def run_jobs(params: Params, level: str, sampler: str, seeds, job_seed, job_mu, job_v0,
             checkpoints=None, stacked=None, parallel: bool = True,
             precision: str = "float64") -> dict:
    """Per-job results (Q, K) at the checkpoint steps for any level (the
    job-level twin of ``make_evaluator``); ``stacked``: reuse reduced statistics;
    ``precision`` float32 only where ``check_precision`` allows it."""
    kind = validate(params, level, precision=precision).kind
    if kind == NETWORK:
        return run_full_batch(params, seeds, job_seed, job_mu, job_v0, checkpoints)
    if kind == FAMILY:
        stacked = stacked_general(params, sampler, seeds) if stacked is None else stacked
        return run_general_batch(params, stacked, job_seed, job_mu, job_v0, checkpoints,
                                 parallel)
    stacked = stacked_stats(params, sampler, seeds) if stacked is None else stacked
    return run_batch(params, level, stacked, job_seed, job_mu, job_v0, checkpoints, parallel,
                     precision=precision)


def make_evaluator(params: Params, level: str, sampler: str, seeds, checkpoints=None,
                   integrator: str = "gd"):
    """(evaluator, sampler actually used) for ``level`` (``levels.sampler_for``:
    "full" uses sampler data); what the level cannot run is refused first
    (``levels.validate``: the integrator of sweeps, t = inf)."""
    check_choice("sampler", sampler, SAMPLERS)
    kind = validate(params, level, integrator=integrator, sweep=True,
                    times=check_checkpoints(checkpoints, params.steps)).kind
    if kind == NETWORK:
        return full_evaluator(params, seeds, checkpoints), sampler_for(level, sampler)
    if kind == FAMILY:
        return general_evaluator(params, sampler, seeds, checkpoints), sampler
    return reduced_evaluator(params, level, sampler, seeds, checkpoints,
                             integrator=integrator), sampler


def find_boundaries_at(params: Params, level: str = "exact", sampler: str = "wishart", *,
                       n_seeds: int = 8, times=None, taus=(TAU,), guess=None,
                       integrator: str = "gd", **kwargs) -> list[Boundary]:
    """mu* at each checkpoint step in ``times`` (default: params.steps), all
    from the same runs (common random numbers in time and in ||mu||)."""
    seeds = seed_list(params, check_count("seeds", n_seeds))
    evaluate, sampler = make_evaluator(params, level, sampler, seeds, times, integrator)
    return find_boundaries(evaluate, params, seeds, times=times, taus=taus, guess=guess,
                           level=level, sampler=sampler, **kwargs)


def find_boundary(params: Params, level: str = "exact", sampler: str = "wishart", *,
                  n_seeds: int = 8, taus=(TAU,), guess=None, **kwargs) -> Boundary:
    """mu* at params.steps (see ``dynamics.boundary.find_boundaries``)."""
    return find_boundaries_at(params, level, sampler, n_seeds=n_seeds, times=None, taus=taus,
                              guess=guess, **kwargs)[0]
