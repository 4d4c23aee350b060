"""Trajectories as xarray Datasets, and atomic netCDF I/O.

Layout of one trajectory: dims ``step``, ``j`` (+1, -1), ``r``, ``i``, ``p``
(1 = signal patch, 2 = noise patch), ``hidden_layer`` (1..L), ``block``
(W, U1..U{L-1}, v) and at depth L >= 2 ``layer`` (1..L-1), ``k``; variables
gamma, rho, v, U, loss, train_error, test_error, balance, layer_balance,
layer_change.  ``combine`` stacks a reduced and a full
trajectory of one configuration on a ``model`` dimension ("reduced", "full").
Attributes: CF-style globals, every parameter as a flat scalar plus
``params_json``, level, sampler, package version and creation time.
"""
from __future__ import annotations

import datetime as _dt
import os
import tempfile

import numpy as np
import xarray as xr

from dynamics import __version__
from dynamics.files import atomic_target, check_replaceable
from dynamics.params import Params, ParamError
from dynamics.general import GeneralTrajectory
from dynamics.run import Trajectory
from dynamics.theory.measure import MECHANISM_ATTRS, mechanisms

ENGINE = "netcdf4"

_META = {
    "gamma": ("signal coefficient gamma_{j,r}", "1"),
    "rho": ("noise coefficient rho_{j,r,i}", "1"),
    "v": ("output weight v_{j,r,p}", "1"),
    "loss": ("training logistic loss", "1"),
    "train_error": ("training error (observed labels)", "1"),
    "test_error": ("clean test error at the last step", "1"),
    "balance": ("first-layer balance ||outgoing_{j,r}||^2 - ||w_{j,r}||^2 "
                "(depth 1: sum_p v_{j,r,p}^2 - ||w_{j,r}||^2)", "1"),
    "U": ("upper layer U(layer)_{j,k,r}: neuron r of hidden layer `layer` to neuron k "
          "of layer+1", "1"),
    "layer_balance": ("per hidden neuron ||outgoing||^2 - ||incoming||^2 (docs/theory.md#depth)", "1"),
    "layer_change": ("relative change ||theta_l(t) - theta_l(0)|| / ||theta_l(0)||", "1"),
    "test_error_noisy": ("test error vs flipped labels = flip + (1-2 flip) clean", "1"),
    "out_of_span": ("||W-W0 outside span{mu, xi_i}|| / ||W-W0||", "1"),
    "pre": ("first-layer pre-activation <w_{j,r}(t), x_i^(p)>", "1"),
    "alpha": ("coefficient of w_{j,r} - w_{j,r}(0) on the orthonormal patch basis "
              "(docs/theory.md#general-reduction)", "1"),
    "yhat": ("clean training label", "1"),
    "y": ("observed training label", "1"),
}


def global_attrs(params: Params | None, swept=(), unused=(), **extra) -> dict:
    """CF-style global attributes plus the flat parameter attributes.

    ``swept``: parameters that vary along a dimension of the output; their flat
    attribute is left out (the coordinate holds the values) and they are
    listed in ``swept_parameters`` (params_json keeps the base value).
    ``unused``: parameters without effect (e.g. ||mu|| with a data file): left
    out of the flat attributes and listed in ``unused_parameters``.
    """
    now = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    attrs = {
        "Conventions": "CF-1.8",
        "title": extra.pop("title", "dyn output"),
        "source": f"dyn {__version__}",
        "history": f"{now} created by dyn {__version__}",
        "created": now,
        "dyn_version": __version__,
    }
    if params is not None:
        attrs.update({k: v for k, v in params.to_attrs().items()
                      if k not in swept and k not in unused})
        if swept:
            attrs["swept_parameters"] = " ".join(swept)
        if unused:
            attrs["unused_parameters"] = " ".join(unused)
    for key, val in extra.items():
        attrs[key] = _netcdf_attr(val)
    return attrs


def _netcdf_attr(val):
    """netCDF refuses None/bool/dict attributes (xarray#1681): convert them."""
    if val is None:
        return ""
    if isinstance(val, (bool, np.bool_)):
        return int(val)
    if isinstance(val, dict):
        import json
        return json.dumps(val, sort_keys=True)
    return val


def _with_meta(ds: xr.Dataset) -> xr.Dataset:
    for name, (long_name, units) in _META.items():
        if name in ds:
            ds[name].attrs.update(long_name=long_name, units=units)
    return ds


def general_dataset(traj: GeneralTrajectory) -> xr.Dataset:
    """A run of the general level or of its network (docs/theory.md#general-reduction): dims step, j,
    r, i, p (1..P) and, reduced, k (basis); variables pre, v, loss,
    train_error, test_error, y (and alpha)."""
    p = traj.params
    P = traj.v.shape[-1]
    data = {"pre": (("step", "j", "r", "i", "p"), traj.pre),
            "v": (("step", "j", "r", "p"), traj.v),
            "loss": (("step",), traj.loss),
            "train_error": (("step",), traj.train_error),
            "test_error": ((), traj.test_error),
            "y": (("i",), traj.y)}
    if traj.alpha is not None:
        data["alpha"] = (("step", "j", "r", "k"), traj.alpha)
    ds = xr.Dataset(data, coords={"step": traj.steps, "j": np.array([1, -1]),
                                  "r": np.arange(traj.v.shape[2]),
                                  "i": np.arange(len(traj.y)), "p": np.arange(1, P + 1)},
                    attrs=global_attrs(p, unused=traj.unused,
                                       title="dyn trajectory (model family)",
                                       level=traj.level, sampler=traj.sampler,
                                       data_source=traj.source, wall_time=traj.wall_time,
                                       integrator="gd"))
    return _with_meta(ds)


def _run_attrs(traj) -> dict:
    """What was run: the integrator and, for the flow, its
    times, which replace --steps (then left out: ``unused_parameters``)."""
    if "flow" not in traj.extra:
        return {"integrator": "gd"}
    return {"integrator": "flow", "times": times_text(traj.steps), "unused": ("steps",)}


def times_text(times) -> str:
    """--times as given on the command line, exactly: '200,1e+30,inf'."""
    return ",".join(f"{t:g}" if float(f"{t:g}") == t else repr(t)
                    for t in map(float, times))


def trajectory_dataset(traj: Trajectory) -> xr.Dataset:
    """One trajectory as an xarray Dataset (what ``dyn simulate --out`` writes).

    Parameters
    ----------
    traj : Trajectory or GeneralTrajectory
        A run of any level (``dynamics.simulate``, ``fullsim.simulate_full``,
        ``dynamics.general.simulate_general``).

    Returns
    -------
    xarray.Dataset
        Dims ``step``, ``j``, ``r``, ``i``, ``p`` (and ``layer``, ``k`` at
        depth >= 2); the coefficients, losses, errors, balances and the
        measured mechanisms, each with ``long_name`` and ``units``; every
        parameter as a global attribute (docs/reference/outputs.md).
    """
    if traj.layout == "patches":
        return general_dataset(traj)
    p = traj.params
    s, z = traj.patch_preactivations()
    coords = {"step": traj.steps, "j": np.array([1, -1]), "r": np.arange(p.m),
              "i": np.arange(p.n), "p": np.array([1, 2]),
              "hidden_layer": np.arange(1, p.depth + 1),
              "block": ["W"] + [f"U{l}" for l in range(1, p.depth)] + ["v"]}
    if p.depth > 1:
        coords.update(layer=np.arange(1, p.depth), k=np.arange(p.m))
    ds = xr.Dataset(
        {
            "gamma": (("step", "j", "r"), traj.gamma),
            "rho": (("step", "j", "r", "i"), traj.rho),
            "pre": (("step", "j", "r", "i", "p"), np.stack([s, z], axis=-1)),
            "v": (("step", "j", "r", "p"), traj.v),
            "loss": (("step",), traj.loss),
            "train_error": (("step",), traj.train_error),
            "test_error": ((), traj.test_error),
            "test_error_noisy": ((), traj.test_error_noisy),
            "balance": (("step", "j", "r"), traj.balance()),
            "layer_balance": (("step", "hidden_layer", "j", "r"), traj.layer_balance()),
            "layer_change": (("step", "block"), traj.layer_change()),
            **({"U": (("step", "layer", "j", "k", "r"), traj.upper)} if p.depth > 1 else {}),
            **({"out_of_span": (("step",), traj.extra["out_of_span"])}
               if "out_of_span" in traj.extra else {}),
            "yhat": (("i",), traj.stats.yhat),
            "y": (("i",), traj.stats.y),
        },
        coords=coords,
        attrs=global_attrs(p, title="dyn trajectory", level=traj.level,
                           sampler=traj.sampler, wall_time=traj.wall_time,
                           **_run_attrs(traj)),
    )
    # measured mechanisms of the theory (docs/theory.md#mechanisms-and-laws, ReLU): ratios, norms, l' deviation
    for name, (dims, values) in (mechanisms(traj).items() if p.activation == "relu" else ()):
        if name not in ds:
            ds[name] = (dims, values)
            ds[name].attrs.update(MECHANISM_ATTRS[name])
    for key, val in traj.extra.get("flow", {}).items():  # what the flow ran
        ds.attrs[f"flow_{key}"] = val
    if "limit" in traj.extra:  # step = inf: the certified limit (dynamics.limit)
        for key, val in traj.extra["limit"].items():
            ds.attrs[f"limit_{key}"] = val if isinstance(val, str) else float(val)
        ds.attrs["limit_note"] = ("the record at step = inf is the limit direction of the "
                                  "max-margin program (w(0) dropped, margins >= 1); its "
                                  "test_error counts ties f = 0 as 1/2")
    return _with_meta(ds)


def combine(reduced: Trajectory, full: Trajectory) -> xr.Dataset:
    """Reduced and full trajectories of one configuration on a dimension ``model``.

    Parameters
    ----------
    reduced, full : Trajectory
        Two runs of the same parameters and record schedule (for example
        ``compare.verify.run_pair``).

    Returns
    -------
    xarray.Dataset
        The variables of ``trajectory_dataset`` with a leading dimension
        ``model`` ("reduced", "full"), the labels once, and ``wall_time``
        per model.

    Raises
    ------
    ValueError
        If the parameters or the recorded steps differ.
    """
    if reduced.params != full.params or not np.array_equal(reduced.steps, full.steps):
        raise ValueError("combine needs the same parameters and record schedule")
    labels = reduced.label_names
    parts = [trajectory_dataset(t) for t in (reduced, full)]
    ds = xr.concat([d.drop_vars(list(labels)) for d in parts], dim="model",
                   combine_attrs="drop")
    ds = ds.assign_coords(model=["reduced", "full"])
    for name in labels:
        ds[name] = parts[0][name]
    ds["wall_time"] = ("model", [reduced.wall_time, full.wall_time])
    run = _run_attrs(reduced)
    ds.attrs = global_attrs(reduced.params, title="dyn reduced vs full",
                            unused=tuple(getattr(reduced, "unused", ())) + run.pop("unused", ()),
                            **run,
                            level=reduced.level, sampler=reduced.sampler,
                            **({"data_source": reduced.source}
                               if reduced.source is not None else {}))
    return _with_meta(ds)


def check_output_path(path, kind: str = "file") -> str:
    """Validate an output path before any computation (ValueError naming it).

    kind "file": not an existing directory, device, FIFO or other non-regular
    file, and not an existing regular file other than a dyn output
    (``check_dyn_target``); kind "dir": not an existing non-directory.  Either way the path is non-empty and its nearest existing
    ancestor is a writable directory (missing folders are created later).
    """
    text = os.fspath(path)
    if not text.strip():
        raise ValueError("the output path must not be empty")
    full = os.path.abspath(text)
    if kind == "file" and os.path.isdir(full):
        raise ValueError(f"{text} is a directory; give a file name")
    if kind == "file":
        try:
            check_dyn_target(full)
        except ParamError as exc:
            raise ValueError(f"{text} {exc.allowed}") from None
    if kind == "dir" and os.path.exists(full) and not os.path.isdir(full):
        raise ValueError(f"{text} exists and is not a directory")
    parent = os.path.dirname(full) if kind == "file" else full
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        raise ValueError(f"cannot create {text}: {parent} is a file, not a directory")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ValueError(f"cannot write {text}: {parent} is not writable")
    try:  # access() says yes for root everywhere (e.g. /proc): try a file there
        fd, probe = tempfile.mkstemp(prefix=".dyn-probe-", dir=parent)
        os.close(fd)
        os.remove(probe)
    except OSError as exc:
        raise ValueError(f"cannot write {text}: {parent} refuses new files "
                         f"({exc.strerror})") from None
    return text


_NETCDF_MAGIC = (b"CDF\x01", b"CDF\x02", b"CDF\x05", b"\x89HDF\r\n\x1a\n")


def is_dyn_output(path) -> bool:
    """True if ``path`` is a netCDF file written by dyn (global attribute
    ``dyn_version``) or an empty file (nothing to lose, e.g. ``touch x.nc``)."""
    try:
        if os.path.getsize(path) == 0:
            return True
        with open(path, "rb") as fh:
            head = fh.read(8)
        if not head.startswith(_NETCDF_MAGIC):
            return False
        import netCDF4
        with netCDF4.Dataset(path, "r") as nc:
            return "dyn_version" in nc.ncattrs()
    except Exception:  # unreadable, truncated, not netCDF after all: not ours
        return False


def check_dyn_target(path):
    """The netCDF outputs' rule (ParamError naming ``out``): a new path, or an
    existing dyn output (or empty file), which is replaced; an existing device,
    FIFO or folder, or a regular file that is not a dyn output, is refused
    rather than silently replaced."""
    check_replaceable(path)
    if os.path.exists(path) and not is_dyn_output(path):
        raise ParamError("out", os.fspath(path),
                         "exists and is not a dyn output (not a netCDF file with dyn's "
                         "attributes); dyn replaces only its own outputs: remove it or "
                         "choose another path")


def write_netcdf(ds: xr.Dataset, path) -> str:
    """Write atomically: temporary file in the same folder, then rename.  An
    existing ``path`` is replaced only if it is a dyn output (``check_dyn_target``)."""
    check_dyn_target(path)
    with atomic_target(path, ".nc.tmp") as tmp:
        ds.to_netcdf(tmp, engine=ENGINE)
    return os.fspath(path)


def read_netcdf(path) -> xr.Dataset:
    """Read a dyn netCDF file fully into memory (file closed on return)."""
    with xr.open_dataset(path, engine=ENGINE) as ds:
        return ds.load()
