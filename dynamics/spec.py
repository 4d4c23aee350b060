"""RunSpec: what defines a set of runs of a sweep or a boundary search, in one
frozen object validated once (the CLI and the API build the same object).

    RunSpec(params, level="exact", sampler="wishart", seeds=8, times=None,
            integrator="gd", precision="float64")

``seeds``: a count (seeds ``params.seed + s``, s = 0 .. count - 1, as
``--seeds``) or explicit seed values; ``times``: checkpoints in GD steps
(``inf``: the limit; ``None``: ``params.steps``); ``integrator``: ``gd`` or
``flow`` (every time is then flow time eta*T); ``precision``: ``float32``
only where ``batch.check_precision`` allows it.  Every check that depends
on the level goes through ``levels.validate``; errors are one-line
``ParamError`` naming the option.  ``to_dict`` is the plain-JSON form that
sweeps store and fingerprint.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from .levels import ALL_LEVELS, sampler_for, validate
from .params import PRECISIONS, SAMPLERS, Params, ParamError, check_choice, check_count, \
    check_params
from .run import INTEGRATORS, check_checkpoints


@dataclass(frozen=True)
class RunSpec:
    """A set of runs: model parameters, level, sampler, seeds, checkpoint
    times, integrator and precision (module docstring)."""

    params: Params
    level: str = "exact"
    sampler: str = "wishart"
    seeds: int | tuple = 8
    times: tuple | None = None
    integrator: str = "gd"
    precision: str = "float64"

    def __post_init__(self):
        check_params(self.params)
        check_choice("level", self.level, ALL_LEVELS)
        check_choice("sampler", self.sampler, SAMPLERS)
        check_choice("integrator", self.integrator, INTEGRATORS)
        check_choice("precision", self.precision, PRECISIONS)
        seeds = self.seeds
        if isinstance(seeds, (int, np.integer)) or not hasattr(seeds, "__iter__"):
            seeds = check_count("seeds", seeds)
        elif isinstance(seeds, (str, bytes)):
            raise ParamError("seeds", seeds, "a count or a list of integer seeds")
        else:
            seeds = tuple(check_count("seeds", s, lo=0) for s in seeds)
            if not seeds:
                raise ParamError("seeds", "[]", "at least one seed")
        object.__setattr__(self, "seeds", seeds)
        times = self.times
        if times is not None:
            if isinstance(times, (str, bytes)) or not hasattr(times, "__iter__"):
                raise ParamError("times", times, "must be a list of GD steps, inf = the limit "
                                 "(e.g. [200, 2000, inf])")
            times = tuple(check_checkpoints(list(times), self.params.steps,
                                            integers=self.integrator != "flow").tolist())
            object.__setattr__(self, "times", times)
        validate(self.params, self.level, integrator=self.integrator, sweep=True,
                 times=times, precision=self.precision)

    @property
    def seed_values(self) -> np.ndarray:
        """The seeds as an int64 array (a count becomes params.seed + 0 .. count-1)."""
        if isinstance(self.seeds, tuple):
            return np.array(self.seeds, dtype=np.int64)
        return self.params.seed + np.arange(self.seeds, dtype=np.int64)

    @property
    def n_seeds(self) -> int:
        """Number of seeds."""
        return len(self.seeds) if isinstance(self.seeds, tuple) else self.seeds

    @property
    def checkpoints(self) -> tuple:
        """The checkpoint times (``times``, or (params.steps,) when None)."""
        return self.times if self.times is not None else (float(self.params.steps),)

    @property
    def run_sampler(self) -> str:
        """The sampler the level actually runs (``levels.sampler_for``: level
        full trains on data vectors whatever ``sampler`` says)."""
        return sampler_for(self.level, self.sampler)

    def replace(self, **changes) -> "RunSpec":
        """A copy with fields changed (validated again)."""
        return replace(self, **changes)

    def to_dict(self) -> dict:
        """Plain JSON types: params as ``Params.to_dict``, times as a list."""
        return {"params": self.params.to_dict(), "level": self.level,
                "sampler": self.sampler,
                "seeds": list(self.seeds) if isinstance(self.seeds, tuple) else self.seeds,
                "times": None if self.times is None else list(self.times),
                "integrator": self.integrator, "precision": self.precision}


def check_spec(spec, name: str = "spec") -> RunSpec:
    """The ``spec`` argument of a run-set entry (``solve``, ``find_boundary``,
    ``run_jobs``, ``make_spec``) must be a ``RunSpec``: one ParamError naming
    it instead of an AttributeError deep inside."""
    if not isinstance(spec, RunSpec):
        raise ParamError(name, type(spec).__name__, "must be a dynamics.RunSpec, e.g. "
                         "RunSpec(Params(), level='exact', seeds=8)")
    return spec
