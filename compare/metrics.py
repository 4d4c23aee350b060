"""Discrepancy metrics between a reduced and a full trajectory.

Relative error of a variable at step t: ||a_t - b_t||_max / ||b_t||_max
(0 when both are 0), b the full network.  Reported per variable: max and
median over steps and the first step above ``tol`` (-1 if never).  Also: final
loss and test-error differences, agreement of activation patterns
1[z_{j,r,i} > 0] and 1[s_{j,r,i} > 0], and of the signs of v.
"""
from __future__ import annotations

import numpy as np

from dynamics.run import Trajectory


def rel_err_per_step(a, b) -> np.ndarray:
    """max|a_t - b_t| / max|b_t| per leading index t (0 where both vanish)."""
    a = np.asarray(a).reshape(len(a), -1)
    b = np.asarray(b).reshape(len(b), -1)
    num = np.max(np.abs(a - b), axis=1)
    den = np.max(np.abs(b), axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.where(den > 0, num / np.where(den > 0, den, 1.0), np.where(num > 0, np.inf, 0.0))
    return out


def series(traj: Trajectory, name: str):
    """The array compared for ``name`` (balance: every hidden layer's)."""
    if name == "balance":
        return traj.layer_balance()
    return traj.upper if name == "U" else getattr(traj, name)


def discrepancy_fields(reduced: Trajectory, full: Trajectory, tol: float = 1e-6) -> dict:
    """The metrics as plain arrays: {"data_vars": {name: (dims, values)},
    "coords": ..., "attrs": ...}, the arguments of ``xr.Dataset`` (building a
    Dataset imports dask.array when dask is installed, ~0.5 s: ``dyn compare``
    prints from these fields and builds the Dataset only to write it)."""
    if not np.array_equal(reduced.steps, full.steps):
        raise ValueError("trajectories must share the record schedule")
    steps = reduced.steps
    names = reduced.compared_variables()
    per_step = np.stack([rel_err_per_step(series(reduced, v), series(full, v))
                         for v in names])
    exceed = per_step > tol
    first = np.where(exceed.any(axis=1), steps[np.argmax(exceed, axis=1)], -1)
    s_r, z_r = reduced.patch_preactivations()
    s_f, z_f = full.patch_preactivations()
    act_z = np.mean(((z_r > 0) == (z_f > 0)).reshape(len(steps), -1), axis=1)
    act_s = np.mean(((s_r > 0) == (s_f > 0)).reshape(len(steps), -1), axis=1)
    v_sign = np.mean(np.sign(reduced.v) == np.sign(full.v), axis=(1, 2, 3))
    return {
        "data_vars": {
            "rel_err": (("variable", "step"), per_step),
            "max_rel_err": (("variable",), per_step.max(axis=1)),
            "median_rel_err": (("variable",), np.median(per_step, axis=1)),
            "first_step_above_tol": (("variable",), first),
            "activation_agreement": (("step",), act_z),
            "signal_activation_agreement": (("step",), act_s),
            "v_sign_agreement": (("step",), v_sign),
            "loss_diff_final": ((), float(reduced.loss[-1] - full.loss[-1])),
            "test_error_diff": ((), float(reduced.test_error - full.test_error)),
            "test_error_reduced": ((), float(reduced.test_error)),
            "test_error_full": ((), float(full.test_error)),
        },
        "coords": {"variable": list(names), "step": steps},
        "attrs": {"tol": tol, "level": reduced.level},
    }


def discrepancy(reduced: Trajectory, full: Trajectory, tol: float = 1e-6) -> xr.Dataset:
    """Metrics Dataset: per-variable errors (dim ``variable``) and scalars."""
    import xarray as xr  # here: dyn compare prints from plain arrays (xarray ~1 s to import)

    return xr.Dataset(**discrepancy_fields(reduced, full, tol))


def format_metrics(met) -> str:
    """A plain-text table of a ``discrepancy`` Dataset or ``discrepancy_fields``."""
    if not isinstance(met, dict):  # a Dataset
        val = {k: met[k].values for k in met.data_vars}
        names, tol = list(met.variable.values), met.attrs["tol"]
    else:
        val = {k: np.asarray(x) for k, (_, x) in met["data_vars"].items()}
        names, tol = met["coords"]["variable"], met["attrs"]["tol"]
    lines = [f"{'variable':<9} {'max rel err':>12} {'median':>12} "
             f"{'first step > ' + format(tol, 'g'):>18}"]
    for k, var in enumerate(names):
        lines.append(f"{var:<9} {float(val['max_rel_err'][k]):12.3e} "
                     f"{float(val['median_rel_err'][k]):12.3e} "
                     f"{int(val['first_step_above_tol'][k]):18d}")
    act, vsign = val["activation_agreement"], val["v_sign_agreement"]
    lines.append(f"final loss diff (reduced - full)  {float(val['loss_diff_final']):+.3e}")
    if np.isnan(float(val['test_error_reduced'])) and np.isnan(float(val['test_error_full'])):
        lines.append("test error reduced / full / diff  not measured (no test set: a data "
                     "file without x_test, y_test)")
    else:
        lines.append(f"test error reduced / full / diff  {float(val['test_error_reduced']):.4f}"
                     f" / {float(val['test_error_full']):.4f} / "
                     f"{float(val['test_error_diff']):+.4f}")
    lines.append(f"activation agreement 1[z>0] (min over steps / final)  "
                 f"{act.min():.4f} / {act[-1]:.4f}")
    lines.append(f"sign(v) agreement (min over steps / final)            "
                 f"{vsign.min():.4f} / {vsign[-1]:.4f}")
    return "\n".join(lines)
