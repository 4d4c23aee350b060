"""The model levels and what each one can run: one table.

A *level* is a way to compute the training of the network
(docs/theory.md): a reduced recursion of the paper's model (``exact``,
``orthogonal``, ``fixed-output``), the exact reduction of the model family
(``general``), or the weight-space network itself (``full``).  ``LEVEL``
declares, per level, the capabilities every validator reads (the kernels'
Gram and output-layer flags, optimizers, integrators, t = inf, float32,
samplers, data files), so that adding a level is one entry here plus its run
functions (ARCHITECTURE.md, "Add a level").  ``validate`` checks a run's
level-dependent choices against the table in one place, with a one-line
``ParamError`` naming the option.
"""
from __future__ import annotations

from dataclasses import dataclass

PAPER, FAMILY, NETWORK = "paper", "family", "network"


@dataclass(frozen=True)
class Level:
    """What a level is and what it supports."""

    name: str
    kind: str                    # PAPER (reduced, paper's model), FAMILY or NETWORK
    describes: str               # one line for help texts and errors
    use_gram: bool = True        # noise Gram off-diagonals kept (False: orthogonal noise)
    trains_v: bool = True        # the output layer can be trained (False: frozen at v0)
    optimizers: tuple = ("gd", "momentum")   # optimizer kinds (adam/sign leave the span)
    integrators: tuple = ("gd", "flow")      # of one run (dyn simulate, dyn compare)
    sweep_integrators: tuple = ("gd", "flow")  # of sweeps (dyn solve, dyn phase)
    limit: bool = False          # t = inf: the max-margin program (dynamics.limit)
    float32: bool = False        # dyn phase --precision float32 (the group kernels)
    samplers: tuple | None = None  # statistics samplers (None: every sampler)
    data_files: bool = False     # --data (bring your own data)

    @property
    def reduced(self) -> bool:
        """A reduced recursion (not the weight-space network)."""
        return self.kind != NETWORK


LEVEL = {lv.name: lv for lv in (
    Level("exact", PAPER, "the exact recursion of the paper's model "
          "(docs/theory.md#exact-recursion)", limit=True, float32=True),
    Level("orthogonal", PAPER, "the recursion with the noise Gram's off-diagonals dropped",
          use_gram=False, float32=True),
    Level("fixed-output", PAPER, "the recursion with the output layer frozen at v0",
          trains_v=False, float32=True),
    Level("general", FAMILY, "the exact reduction of the model family "
          "(docs/theory.md#general-reduction)", optimizers=("gd",), integrators=("gd",),
          sweep_integrators=("gd",), data_files=True),
    Level("full", NETWORK, "the weight-space network (fullsim)",
          optimizers=("gd", "momentum", "adam", "sign"), sweep_integrators=("gd",),
          samplers=("data",), data_files=True),
)}


def of_kind(kind: str) -> tuple:
    """Names of the levels of one kind (PAPER, FAMILY, NETWORK), in table order."""
    return tuple(k for k, lv in LEVEL.items() if lv.kind == kind)


PAPER_LEVELS = of_kind(PAPER)
LEVELS = tuple(k for k, lv in LEVEL.items() if lv.reduced)       # reduced levels (dynamics)
ALL_LEVELS = tuple(LEVEL)
LIMIT_LEVELS = tuple(k for k, lv in LEVEL.items() if lv.limit)
DATA_FILE_LEVELS = tuple(k for k, lv in LEVEL.items() if lv.data_files)


def level_of(level: str) -> Level:
    """The table entry of ``level`` (ParamError naming the choices otherwise)."""
    from .params import check_choice
    check_choice("level", level, tuple(LEVEL))
    return LEVEL[level]


def sampler_for(level: str, sampler: str) -> str:
    """The sampler a level actually runs: its only one when it has one
    (level full trains on data vectors), else ``sampler``."""
    only = LEVEL[level].samplers
    return only[0] if only is not None and len(only) == 1 else sampler


def validate(params, level: str, *, sampler: str | None = None, integrator: str | None = None,
             sweep: bool = False, times=None, precision: str | None = None) -> Level:
    """Check the level-dependent choices of a run against ``LEVEL``: the
    level name, the sampler, the integrator (``sweep``: of a sweep), t = inf
    in ``times`` (``limit.check_limit``: the level and what its program
    covers) and the precision (``batch.check_precision``).  One-line
    ``ParamError`` naming the option; returns the level's entry."""
    from .params import SAMPLERS, ParamError, check_choice
    lv = level_of(level)
    if sampler is not None:
        check_choice("sampler", sampler, SAMPLERS)
        if lv.samplers is not None and sampler not in lv.samplers:
            raise ParamError("sampler", sampler, f"level {level} runs with sampler "
                             f"{' or '.join(lv.samplers)} only ({lv.describes})")
    if integrator is not None:
        allowed = lv.sweep_integrators if sweep else lv.integrators
        if integrator not in allowed:
            raise ParamError("integrator", integrator, f"level {level} runs "
                             f"{' or '.join(allowed)} only" + (" in sweeps" if sweep else ""))
    if times is not None and any(float(t) == float("inf") for t in times):
        from .limit import check_limit
        check_limit(params, level)
    if precision is not None:
        from .batch import check_precision
        check_precision(params, level, precision)
    return lv
