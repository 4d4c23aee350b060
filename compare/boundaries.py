"""Boundaries for any level: picks the evaluator and calls the solver.

The solver (``dynamics.boundary.find_boundaries``) takes an evaluator; this
module is the one place that knows which evaluator serves which kind of
level (``dynamics.levels``): ``dynamics.boundary.reduced_evaluator`` for the
paper's levels, ``dynamics.general.general_evaluator`` for the family,
``fullsim.full_evaluator`` (the weight-space network, sampler data) for "full".
"""
from __future__ import annotations

from dynamics.batch import run_batch, stacked_stats
from dynamics.boundary import Boundary, find_boundaries, reduced_evaluator
from dynamics.levels import FAMILY, LEVEL, NETWORK
from dynamics.params import TAU, ParamError
from dynamics.spec import RunSpec, check_spec
from dynamics.general import general_evaluator, run_general_batch, stacked_general
from fullsim import full_evaluator, run_full_batch


def run_jobs(spec: RunSpec, job_seed, job_mu, job_v0, *, stacked=None,
             parallel: bool = True) -> dict:
    """Per-job results (Q, K) at ``spec.checkpoints`` for any level (the
    job-level twin of ``make_evaluator``): job q runs seed index job_seed[q]
    of ``spec.seed_values`` at ||mu|| = job_mu[q], v0 = job_v0[q];
    ``stacked``: reuse reduced statistics of those seeds."""
    spec = check_spec(spec)
    params, seeds, cp = spec.params, spec.seed_values, list(spec.checkpoints)
    kind = LEVEL[spec.level].kind
    if kind == NETWORK:
        return run_full_batch(params, seeds, job_seed, job_mu, job_v0, cp)
    if kind == FAMILY:
        stacked = stacked_general(params, spec.sampler, seeds) if stacked is None else stacked
        return run_general_batch(params, stacked, job_seed, job_mu, job_v0, cp, parallel)
    stacked = stacked_stats(params, spec.sampler, seeds) if stacked is None else stacked
    return run_batch(spec, stacked, job_seed, job_mu, job_v0, parallel=parallel)


def make_evaluator(spec: RunSpec):
    """(evaluator, sampler actually used) for ``spec`` at its checkpoints
    (``RunSpec.run_sampler``: "full" uses sampler data); the boundary
    search runs in float64 only."""
    spec = check_spec(spec)
    if spec.precision != "float64":
        raise ParamError("precision", spec.precision, "boundary searches run in float64 "
                         "(float32 is for dyn phase sweeps)")
    params, level, seeds, cp = spec.params, spec.level, spec.seed_values, spec.times
    kind = LEVEL[level].kind
    if kind == NETWORK:
        return full_evaluator(params, seeds, cp), spec.run_sampler
    if kind == FAMILY:
        return general_evaluator(params, spec.sampler, seeds, cp), spec.sampler
    return reduced_evaluator(params, level, spec.sampler, seeds, cp,
                             integrator=spec.integrator), spec.sampler


def find_boundaries_at(spec: RunSpec, *, taus=(TAU,), guess=None, **kwargs) -> list[Boundary]:
    """mu* at each checkpoint of ``spec`` (``times``; None: params.steps), all
    from the same runs (common random numbers in time and in ||mu||);
    ``kwargs``: ``dynamics.boundary.find_boundaries``'s search options."""
    evaluate, _ = make_evaluator(spec)
    return find_boundaries(evaluate, spec, taus=taus, guess=guess, **kwargs)


def find_boundary(spec: RunSpec, *, taus=(TAU,), guess=None, **kwargs) -> Boundary:
    """mu* at params.steps (see ``dynamics.boundary.find_boundaries``);
    ``spec.times`` and ``spec.integrator`` do not apply."""
    spec = check_spec(spec)
    return find_boundaries_at(spec.replace(times=None, integrator="gd"), taus=taus,
                              guess=guess, **kwargs)[0]
