"""Bring your own data: a ``.npz`` file read into ``PatchData`` (the model
family, docs/theory.md#general-reduction), checked before anything is loaded
(shapes and memory from the headers; dtypes, finiteness, labels), and the
parameters a file makes meaningless refused (``check_file_params``)."""
from __future__ import annotations

import os

import numpy as np

from .data import check_memory, seed_streams
from .general import PatchData
from .params import SPEC_OF, Params, ParamError


NPZ_HELP = ("arrays x (n, P, d), y (n,) in {+1,-1} or {0,1}; optional w0 (2, m, d), "
            "v0 (scalar or (2, m, P)), x_test (nt, P, d), y_test (nt,)")


NPZ_KEYS = ("x", "y", "w0", "v0", "x_test", "y_test")


def _real_dtype(name, a):
    """Refuse arrays that are not real numbers, naming the dtype."""
    if a.dtype == np.bool_ or np.issubdtype(a.dtype, np.complexfloating) \
            or not np.issubdtype(a.dtype, np.number):
        raise ValueError(f"{name} has dtype {a.dtype}; it must hold real numbers")


def _labels(name, arr, n):
    a = np.asarray(arr)
    if a.shape != (n,):
        raise ValueError(f"{name} has shape {a.shape}, expected ({n},)")
    _real_dtype(name, a)
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name} must hold finite numbers")
    vals = set(np.unique(a).tolist())
    if vals <= {0.0, 1.0} and 0.0 in vals:
        return np.where(a > 0, 1.0, -1.0)
    if not vals <= {1.0, -1.0}:
        raise ValueError(f"{name} must hold labels in {{+1, -1}} or {{0, 1}}, got values "
                         f"{sorted(vals)[:4]}")
    if name == "y" and len(vals) < 2:
        raise ValueError(f"{name} holds one class only ({sorted(vals)[0]:g}); a binary "
                         f"task needs both labels")
    return a.astype(np.float64)


def _finite_array(name, arr, ndim):
    a = np.asarray(arr)
    _real_dtype(name, a)
    if a.ndim != ndim:
        raise ValueError(f"{name} must be a numeric array with {ndim} dimensions, got "
                         f"shape {a.shape} and dtype {a.dtype}")
    a = a.astype(np.float64)
    if not np.all(np.isfinite(a)):
        bad = np.argwhere(~np.isfinite(a))[0]
        raise ValueError(f"{name} holds NaN or inf (first at index {tuple(bad.tolist())})")
    return a


def _member(f, name, path):
    """Array ``name`` of an open .npz; a truncated or corrupt member as one
    ValueError naming the array and the file."""
    import zipfile
    import zlib
    try:
        return f[name]
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError) as exc:
        raise ValueError(f"cannot read array {name!r} of {path}: truncated or corrupt "
                         f"({type(exc).__name__})") from None


def check_data_path(path) -> str:
    """A --data path that is a readable regular file; else ValueError naming why
    (missing, a folder/FIFO/device, a symlink loop)."""
    import errno
    path = os.fspath(path)
    try:
        st = os.stat(path)
    except OSError as exc:
        why = ("a symlink loop" if exc.errno == errno.ELOOP else "does not exist"
               if exc.errno == errno.ENOENT else exc.strerror)
        raise ValueError(f"data file {path}: {why}") from None
    import stat as st_
    if not st_.S_ISREG(st.st_mode):
        raise ValueError(f"data file {path} is not a regular file (a folder, FIFO or device)")
    return path


def npz_shapes(path) -> dict:
    """Shapes and dtypes of the arrays in an .npz file, read from the headers only."""
    import zipfile
    from numpy.lib import format as npf
    shapes = {}
    try:
        with zipfile.ZipFile(path) as zf:
            for name in zf.namelist():
                if not name.endswith(".npy"):
                    continue
                with zf.open(name) as fh:
                    version = npf.read_magic(fh)
                    read = (npf.read_array_header_1_0 if version == (1, 0)
                            else npf.read_array_header_2_0)
                    shape, _, dtype = read(fh)
                shapes[name[:-4]] = (shape, dtype)
    except (OSError, zipfile.BadZipFile, ValueError) as exc:
        raise ValueError(f"cannot read {path} as an .npz file: {exc}") from None
    return shapes


def load_npz(path, params: Params) -> PatchData:
    """Bring your own data: ``NPZ_HELP``.  Missing w0 is drawn N(0, sigma_0^2 I)
    from the seed; missing v0 is params.v0; the shapes are checked and the
    memory estimated from the file headers before anything is loaded."""
    path = check_data_path(path)
    shapes = npz_shapes(path)
    unknown = sorted(set(shapes) - set(NPZ_KEYS))
    if unknown:
        raise ValueError(f"{path} holds an unknown array {unknown[0]!r} (the names are "
                         f"{', '.join(NPZ_KEYS)})")
    if "x" not in shapes or "y" not in shapes:
        raise ValueError(f"{path} must contain arrays x and y ({NPZ_HELP}); found "
                         f"{sorted(shapes) or 'none'}")
    if "y_test" in shapes and "x_test" not in shapes:
        raise ValueError(f"{path} holds y_test without x_test (its inputs)")
    xs = shapes["x"][0]
    if len(xs) != 3 or min(xs) < 1:
        raise ValueError(f"x has shape {xs}, expected (n, P, d) with n, P, d >= 1")
    n, P, d = xs
    m = params.m
    nbytes = 8.0 * (n * P * d + 2 * (2 * m * d)
                    + (np.prod(shapes["x_test"][0]) if "x_test" in shapes else 0))
    check_memory(nbytes, f"data file {path} (x {xs})", hint="use a smaller file")
    with np.load(path, allow_pickle=False) as f:
        x = _finite_array("x", _member(f, "x", path), 3)
        y = _labels("y", _member(f, "y", path), n)
        if "w0" in f:
            w0 = _finite_array("w0", _member(f, "w0", path), 3)
            if w0.shape != (2, m, d):
                raise ValueError(f"w0 has shape {w0.shape}, expected (2, m, d) = "
                                 f"(2, {m}, {d}) (set --m to the file's m)")
        else:
            w0 = params.sigma_0 * np.random.default_rng(
                seed_streams(params.seed)[1]).standard_normal((2, m, d))
        v0 = None
        if "v0" in f:
            v = np.asarray(_member(f, "v0", path))
            _real_dtype("v0", v)
            v = v.astype(np.float64)
            if v.shape == ():
                v = np.full((2, m, P), float(v))
            if v.shape != (2, m, P) or not np.all(np.isfinite(v)):
                raise ValueError(f"v0 must be a finite scalar or have shape (2, m, P) = "
                                 f"(2, {m}, {P}), got {v.shape}")
            if not np.all(v > 0):
                raise ValueError(f"v0 must be > 0 everywhere (as --v0), got min {v.min():g}")
            v0 = v
        if "x_test" in f:
            xt = _finite_array("x_test", _member(f, "x_test", path), 3)
            if xt.shape[1:] != (P, d):
                raise ValueError(f"x_test has shape {xt.shape}, expected (nt, {P}, {d})")
            if "y_test" not in f:
                raise ValueError("x_test needs y_test (its labels)")
            yt = _labels("y_test", _member(f, "y_test", path), xt.shape[0])
        else:
            xt, yt = np.zeros((0, P, d)), np.zeros(0)
    unused = FILE_UNUSED + (("sigma_0", "seed") if "w0" in shapes else ()) + \
        (("v0",) if v0 is not None else ())
    return PatchData(x=x, y=y, yhat=y, w0=w0, y_test=yt,
                     test_chunks=lambda: iter([(slice(0, len(yt)), xt)]), v0=v0,
                     source=os.path.basename(path), unused=unused)


# Parameters of the generated data that a data file replaces.
FILE_UNUSED = ("mu_norm", "sigma_p", "flip", "n_test", "noise", "noise_model", "signal")


def check_file_params(params: Params, data: PatchData):
    """Refuse parameters that would be silently ignored with data from a file:
    sizes that differ from the file's, and any non-default ``data.unused``."""
    n, P, D, m = data.shape
    if params.n != n:
        raise ParamError("n", params.n, f"the data file has n = {n} samples: pass --n {n}, "
                         f"or leave --n out to take it from the file")
    if params.d != D:
        raise ParamError("d", params.d, f"the data file has d = {D}: pass --d {D}, or leave "
                         f"--d out to take it from the file")
    for name in data.unused:
        if getattr(params, name) != SPEC_OF[name].default:
            raise ParamError(name, getattr(params, name), f"has no effect with --data "
                             f"{data.source} (the file sets the data"
                             + (" and this value" if name in ("v0", "sigma_0", "seed")
                                else "") + ")")
