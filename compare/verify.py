"""Check a reduced level against the weight-space network on the same data."""
from __future__ import annotations

import numpy as np

from dynamics.data import sample_data
from dynamics.general import GENERAL_VARIABLES, GeneralTrajectory, model_data, simulate_general
from dynamics.params import Params, ParamError
from dynamics.run import check_paper_model, compared_variables, simulate, simulate_flow, \
    trains_v
from fullsim import simulate_full
from fullsim.network import simulate_full_flow
from fullsim.patches import simulate_full_patches

from .metrics import discrepancy


def flow_times(steps: int, count: int = 24) -> np.ndarray:
    """Record times of a flow comparison: 0 and log-spaced GD steps up to ``steps``."""
    return np.unique(np.concatenate([[0.0], np.geomspace(1.0, steps, count).round()]))


def as_general(traj) -> GeneralTrajectory:
    """A paper-level Trajectory as a GeneralTrajectory (pre = (s, z) per
    patch, v, loss), to compare it with the family's network."""
    s, z = traj.patch_preactivations()
    return GeneralTrajectory(params=traj.params, level=traj.level, sampler=traj.sampler,
                             source="model", steps=traj.steps,
                             pre=np.stack([s, z], axis=-1), v=traj.v, loss=traj.loss,
                             train_error=traj.train_error, test_error=traj.test_error,
                             y=traj.stats.y, wall_time=traj.wall_time)


def run_pair(params: Params, level: str = "exact", record_every: int = 1,
             integrator: str = "gd", data=None):
    """(reduced, full) trajectories on one real data realisation (sampler data);
    integrator "flow": both under the normalised flow, recorded at ``flow_times``.
    Level "general" (or ``data``, a ``PatchData`` such as a loaded file): the
    general level and the family's network (``fullsim.patches``) on the same
    patches (GD only)."""
    if level != "general" and data is None and params.activation != "relu":
        # a paper level with another activation: the family's network checks it
        # on the same realisation, compared in pre-activation space
        check_paper_model(params, level)
        if integrator != "gd":
            raise ParamError("integrator", integrator, "the network check of activation "
                             f"{params.activation} runs GD (the flow comparison is ReLU "
                             "only; the reduced flow itself takes the activation)")
        data = model_data(params, "data")
        reduced = simulate(params, level, "data", record_every=record_every,
                           stats=sample_data(params).stats)
        return (as_general(reduced),
                simulate_full_patches(params, data, "data", record_every,
                                      train_v=trains_v(params, level)))
    if level == "general" or data is not None:
        if integrator != "gd":
            raise ParamError("integrator", integrator, "the general level runs GD")
        if level != "general":
            raise ParamError("level", level, "data from a file needs --level general")
        data = model_data(params, "data") if data is None else data
        return (simulate_general(params, data, "data", record_every),
                simulate_full_patches(params, data, "data", record_every))
    real = sample_data(params)
    train_v = trains_v(params, level)
    if integrator == "flow":
        times = flow_times(params.steps)
        reduced = simulate_flow(params, level, "data", times=times, stats=real.stats)
        return reduced, simulate_full_flow(params, times, real=real, train_v=train_v)
    reduced = simulate(params, level, "data", record_every=record_every, stats=real.stats)
    full = simulate_full(params, record_every=record_every, real=real, train_v=train_v)
    return reduced, full


def verify_points(params: Params, level: str, mus, labels, seeds, tol=1e-6,
                  progress=None):
    """Reduced vs full at each ||mu|| in ``mus`` and each seed.

    Returns (Dataset with dims point, seed[, variable], the (reduced, full)
    pair of the middle point and first seed for figures).
    """
    shape = (len(mus), len(seeds))
    te_r, te_f = np.full(shape, np.nan), np.full(shape, np.nan)
    act, vsign = np.full(shape, np.nan), np.full(shape, np.nan)
    names = (GENERAL_VARIABLES if level == "general" or params.activation != "relu"
             else compared_variables(params))
    max_err = np.full(shape + (len(names),), np.nan)
    example = None
    for a, mu in enumerate(mus):
        for b, seed in enumerate(seeds):
            red, full = run_pair(params.replace(mu_norm=float(mu), seed=int(seed)), level)
            met = discrepancy(red, full, tol)
            te_r[a, b], te_f[a, b] = red.test_error, full.test_error
            act[a, b] = float(met.activation_agreement.min())
            vsign[a, b] = float(met.v_sign_agreement.min())
            max_err[a, b] = met.max_rel_err.values
            if example is None and a == len(mus) // 2:
                example = (red, full)
            if progress:
                progress(1)
    import xarray as xr  # only the verification table needs it (dyn compare does not)

    ds = xr.Dataset(
        {
            "verify_mu": (("point",), np.asarray(mus, float)),
            "test_error_reduced": (("point", "verify_seed"), te_r),
            "test_error_full": (("point", "verify_seed"), te_f),
            "activation_agreement_min": (("point", "verify_seed"), act),
            "v_sign_agreement_min": (("point", "verify_seed"), vsign),
            "max_rel_err": (("point", "verify_seed", "variable"), max_err),
        },
        coords={"point": list(labels), "verify_seed": np.asarray(seeds),
                "variable": list(names)},
    )
    return ds, example
