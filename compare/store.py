"""A resumable, locked, row-chunked sweep store on Zarr.

Knows nothing about the physics.  A sweep is an xarray Dataset *template*
(final dims, coords and dtypes; data values irrelevant) whose data variables
all have the row dimension first.  Rows are filled one at a time with
:meth:`SweepStore.save`, each written to the Zarr chunks that hold it as soon
as it is finished, so a killed sweep resumes where it stopped.

Layout on disk (Zarr format 3, no consolidated metadata)::

    PATH/              the store: template variables chunked R rows along the
                       row dim (``rows_per_chunk``) and whole along the
                       others, plus ``_row_done`` (int8, 1 per finished row,
                       same R); attrs ``fingerprint`` and ``spec_json``
    PATH.lock          sibling lock file (flock), holds the holder's pid
    .NAME.tmp-*        temporaries of this module (cleaned up under the lock)

Invariants: a row is finished iff ``_row_done[row] == 1``, and that flag is
set only after the row's data was written.  The store appears at PATH only
complete (written to a temporary sibling, then renamed).  Only one process at
a time may use PATH: the lock is an exclusive ``fcntl.flock`` that the OS
releases when the holder dies, even by SIGKILL.
"""
from __future__ import annotations

import glob
import hashlib
import json
import math
import os
import shutil
import threading
import uuid

import dask.array as da
import numpy as np
import xarray as xr
import zarr

from .locks import HOLDERS, LockHolder, PathLock, StoreBusy, StoreError, acquire_lock

__all__ = ["PathLock", "StoreError", "StoreBusy", "SweepStore"]

DONE = "_row_done"
ALL_CHUNKS = "_all_chunks_written"  # stores that write every saved chunk (checked on resume)
ZARR_FORMAT = 3
# Zarr v3 has no consolidated metadata in its spec: never write or look for it
# (avoids zarr's ZarrUserWarning on write and xarray's RuntimeWarning fallback
# on read).
_ZARR_KW = {"consolidated": False}
# Rows per Zarr chunk: a chunk write or read costs ~1 ms whatever its size, so
# the default sweep's 64 rows x 7 variables in one-row chunks took 0.65 s to
# write and 0.16 s to read, in 16-row chunks 0.20 s and 0.04 s.  A row written
# into a chunk that holds others is a read-modify-write under the store's lock;
# Zarr >= 3.1.3 replaces a chunk file atomically (temporary file, then rename),
# so a kill during that write leaves the chunk's finished rows intact.
ROWS_PER_CHUNK_MAX = 16
CHUNK_BYTES = 4 * 2 ** 20  # ... but no chunk above ~4 MiB (large sweeps: fewer rows)
_OVERWRITE_HINT = "use another --out, or add --overwrite to discard the stored sweep"


def _finite_json(obj):
    """``obj`` with non-finite floats as the strings "inf", "-inf", "nan"
    (standard JSON has no Infinity/NaN tokens)."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return "nan" if math.isnan(obj) else ("inf" if obj > 0 else "-inf")
    if isinstance(obj, dict):
        return {k: _finite_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite_json(v) for v in obj]
    return obj


def spec_json(spec: dict) -> str:
    """Canonical JSON text of a sweep spec: standard JSON (inf as "inf")."""
    try:
        return json.dumps(_finite_json(spec), sort_keys=True, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"sweep spec must be plain JSON: {exc}") from None


def fingerprint(spec: dict) -> str:
    """sha256 of the canonical spec JSON, first 16 hex digits.  Hashes the
    text sweeps have always hashed (Python's json with inf as Infinity), so
    existing stores keep their fingerprints; the stored ``spec_json`` is standard."""
    spec_json(spec)  # same refusal of specs that are not plain JSON
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]


def rows_per_chunk(template: xr.Dataset, row_dim: str) -> int:
    """Rows per Zarr chunk R: at most ROWS_PER_CHUNK_MAX and the number of rows,
    and R rows of the largest variable within CHUNK_BYTES (at least 1)."""
    n_rows = template.sizes[row_dim]
    row_bytes = max(var.dtype.itemsize * int(np.prod(var.shape[1:]))
                    for var in template.data_vars.values())
    return int(max(1, min(ROWS_PER_CHUNK_MAX, n_rows, CHUNK_BYTES // max(row_bytes, 1))))


_ABSENT = object()


def _show(value, width: int = 60) -> str:
    text = "(absent)" if value is _ABSENT else json.dumps(value, sort_keys=True)
    return text if len(text) <= width else text[: width - 3] + "..."


def spec_diff(old: dict, new: dict) -> list[str]:
    """'key: old -> new' for each differing top-level key (one level into dicts)."""
    out = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key, _ABSENT), new.get(key, _ABSENT)
        if a == b:
            continue
        if isinstance(a, dict) and isinstance(b, dict):
            for sub in sorted(set(a) | set(b)):
                sa, sb = a.get(sub, _ABSENT), b.get(sub, _ABSENT)
                if sa != sb:
                    out.append(f"{key}.{sub}: {_show(sa)} -> {_show(sb)}")
        else:
            out.append(f"{key}: {_show(a)} -> {_show(b)}")
    return out


def _remove(path: str) -> None:
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
    elif os.path.lexists(path):
        os.unlink(path)


class SweepStore(LockHolder):
    """Row-by-row, resumable, single-writer Zarr store of a sweep Dataset.

    Locks ``path + ".lock"``, then creates the store from ``template`` (if
    absent, or if ``overwrite``), resumes it (same spec fingerprint) or
    refuses it.  Use as a context manager, or call :meth:`close` to release
    the lock.

    Parameters
    ----------
    path : str or os.PathLike
        The Zarr store (a folder), e.g. ``OUT/phase.zarr``.
    template : xarray.Dataset
        Layout of the whole sweep (lazy arrays are fine: only the layout is used).
    row_dim : str
        The dimension written row by row (the first axis of the sweep).
    spec : dict
        Everything that defines the sweep (plain JSON types); its fingerprint
        decides between resuming and refusing.
    overwrite : bool, optional
        Discard an existing store with another spec.

    Raises
    ------
    StoreBusy
        Another process holds the lock.
    StoreError
        The existing store has another spec (the changed keys are named).
    """

    def __init__(self, path, template: xr.Dataset, row_dim: str, spec: dict,
                 overwrite: bool = False):
        self._lock_fd = None
        self._zarr_arrays = None  # opened at the first save (SweepStore._arrays)
        self._write_lock = threading.Lock()
        self.path = os.path.normpath(os.fspath(path))  # no trailing "/": lock stays a sibling
        self.row_dim = row_dim
        self.spec_json = spec_json(spec)
        self.spec = json.loads(self.spec_json)  # as stored (tuples -> lists etc.)
        self.fingerprint = fingerprint(spec)
        self._template = self._check_template(template)
        self.n_rows = self._template.sizes[row_dim]
        parent, base = os.path.split(self.path)
        self._parent = parent or "."
        self._tmp_prefix = os.path.join(self._parent, f".{base}.tmp-")
        os.makedirs(self._parent, exist_ok=True)
        self._lock()
        try:
            self._clean_stale()
            if overwrite or not os.path.lexists(self.path):
                self._create()
            else:
                self._check_existing()
        except BaseException:
            self.close()
            raise

    # -- template --------------------------------------------------------
    def _check_template(self, template: xr.Dataset) -> xr.Dataset:
        if self.row_dim not in template.dims:
            raise StoreError(f"template has no dimension {self.row_dim!r}")
        if DONE in template.variables:
            raise StoreError(f"template must not have a variable named {DONE!r}")
        if not template.data_vars:
            raise StoreError("template has no data variables")
        for name, var in template.data_vars.items():
            if var.dims[:1] != (self.row_dim,):
                raise StoreError(f"template variable {name!r} has dims {var.dims}; "
                                 f"{self.row_dim!r} must come first")
            if var.dtype.kind not in "biufc":
                raise StoreError(f"template variable {name!r} has dtype {var.dtype}; "
                                 "only numeric and bool data variables are supported")
        return template

    def _skeleton(self) -> tuple[xr.Dataset, dict]:
        """Template with lazy (never computed) data variables and its encoding."""
        tpl = self._template.drop_encoding()
        # Coords are written now, so must be numpy (dask would be left unwritten);
        # fixed-width strings become variable-length ones, which Zarr v3 specifies
        # (numpy "<U" triggers zarr's UnstableSpecificationWarning).
        tpl = tpl.assign_coords({k: v.compute().astype(object) if v.dtype.kind == "U"
                                 else v.compute() for k, v in tpl.coords.items()})
        data, encoding = {}, {}
        R = rows_per_chunk(tpl, self.row_dim)
        for name, var in tpl.data_vars.items():
            chunks = (R,) + tuple(max(s, 1) for s in var.shape[1:])
            data[name] = xr.Variable(var.dims, da.empty(var.shape, dtype=var.dtype,
                                                        chunks=chunks), var.attrs)
            encoding[name] = {"chunks": chunks}
        data[DONE] = xr.Variable((self.row_dim,), da.zeros(self.n_rows, dtype=np.int8,
                                                           chunks=R))
        # raw 1-byte flags, fill 0: an unwritten row reads as "not done"
        encoding[DONE] = {"chunks": (R,), "fill_value": 0, "compressors": None}
        ds = xr.Dataset(data, coords=tpl.coords,
                        attrs={**tpl.attrs, "fingerprint": self.fingerprint,
                               "spec_json": self.spec_json, ALL_CHUNKS: 1})
        return ds, encoding

    # -- lock --------------------------------------------------------------
    def _lock(self) -> None:
        self._lock_fd = acquire_lock(self.path + ".lock", self.path)
        HOLDERS.add(self)

    # -- create / resume ---------------------------------------------------
    def _clean_stale(self) -> None:
        """Remove temporaries of killed processes (we hold the lock)."""
        for p in glob.glob(glob.escape(self._tmp_prefix) + "*"):
            _remove(p)
        if os.path.isdir(self.path):  # zarr's own atomic-write leftovers
            for root, _, files in os.walk(self.path):
                for f in files:
                    if f.endswith(".partial"):
                        os.unlink(os.path.join(root, f))

    def _create(self) -> None:
        ds, encoding = self._skeleton()
        tmp = self._tmp_prefix + uuid.uuid4().hex[:12]
        try:
            ds.to_zarr(tmp, mode="w", compute=False, encoding=encoding,
                       zarr_format=ZARR_FORMAT, **_ZARR_KW)
            if os.path.lexists(self.path):  # overwrite: move aside, then swap in
                old = self._tmp_prefix + "old-" + uuid.uuid4().hex[:12]
                os.replace(self.path, old)
                os.replace(tmp, self.path)
                _remove(old)
            else:
                os.replace(tmp, self.path)
        finally:
            if os.path.lexists(tmp):
                _remove(tmp)

    def _check_existing(self) -> None:
        hint = "add --overwrite to replace it, or use another --out"
        try:
            stored = xr.open_zarr(self.path, chunks=None, **_ZARR_KW)  # metadata only
        except Exception as exc:
            raise StoreError(f"{self.path} exists but is not a readable sweep store "
                             f"({type(exc).__name__}); {hint}") from None
        fp, old_json = stored.attrs.get("fingerprint"), stored.attrs.get("spec_json")
        if fp is None or DONE not in stored.variables:
            raise StoreError(f"{self.path} exists but is not a sweep store of dyn "
                             f"(no fingerprint); {hint}")
        if fp != self.fingerprint:
            try:
                changes = spec_diff(json.loads(old_json), self.spec)
            except (TypeError, ValueError):
                changes = []
            what = "; ".join(changes) if changes else f"fingerprint {fp} -> {self.fingerprint}"
            raise StoreError(f"{self.path} holds a different sweep ({what}); {_OVERWRITE_HINT}")
        for name, var in self._template.data_vars.items():
            have = stored.variables.get(name)
            if have is None or have.dims != var.dims or have.shape != var.shape \
                    or have.dtype != var.dtype:
                raise StoreError(f"{self.path} has the same spec but a different layout "
                                 f"(variable {name!r}); {_OVERWRITE_HINT}")
        for name, coord in self._template.coords.items():  # e.g. a mu edited by hand
            have = stored.coords.get(name)
            want = np.asarray(coord.values)
            got = None if have is None else np.asarray(have.values)
            same = got is not None and got.shape == want.shape and (
                list(map(str, got.ravel().tolist())) == list(map(str, want.ravel().tolist()))
                if want.dtype.kind in "OUST" or got.dtype.kind in "OUST"
                else np.array_equal(got, want))
            if not same:
                raise StoreError(f"{self.path} has the same spec but its coordinate {name!r} "
                                 f"differs from the spec's; {_OVERWRITE_HINT}")
        self._check_done_rows(bool(stored.attrs.get(ALL_CHUNKS)))

    def _check_done_rows(self, all_chunks: bool) -> None:
        """Every row flagged done has its chunks on disk (stores that write every
        chunk: ``ALL_CHUNKS``), readable: a chunk removed by hand, a flag set by
        hand or a corrupt chunk is refused."""
        done = np.asarray(self.finished(), dtype=int)
        if not done.size:
            return
        group = zarr.open_group(self.path, mode="r")
        for name in self._template.data_vars:
            arr = group[name]
            R = arr.chunks[0]
            for c in np.unique(done // R):
                key = arr.metadata.encode_chunk_key((int(c),) + (0,) * (arr.ndim - 1))
                if all_chunks and not os.path.isfile(os.path.join(self.path, name, key)):
                    raise StoreError(f"{self.path}: rows flagged done have no data "
                                     f"({name!r}, chunk {int(c)} is missing); "
                                     f"{_OVERWRITE_HINT}")
                try:
                    arr[int(c) * R:min((int(c) + 1) * R, self.n_rows)]
                except Exception as exc:
                    raise StoreError(f"{self.path}: chunk {int(c)} of {name!r} cannot be "
                                     f"read ({type(exc).__name__}); {_OVERWRITE_HINT}") from None

    # -- rows --------------------------------------------------------------
    def finished(self) -> list[int]:
        """Indices of the rows saved completely (read fresh from disk)."""
        try:
            done = zarr.open_array(self.path, path=DONE, mode="r")[:]
        except Exception as exc:
            raise StoreError(f"{self.path}: cannot read the row status "
                             f"({type(exc).__name__}: {exc})") from None
        return [int(i) for i in np.flatnonzero(done == 1)]

    def save(self, ix: int, row: dict[str, np.ndarray]) -> None:
        """Write row ``ix`` (arrays cast "same_kind" to the template dtypes), then mark
        it finished.  Rows may be saved from several threads (one at a time:
        rows share chunks)."""
        self.save_rows({ix: row})

    def save_rows(self, rows: dict[int, dict[str, np.ndarray]]) -> None:
        """Write several rows {ix: row} (as ``save``): each run of consecutive
        indices with one Zarr write per variable, then mark them finished.  A
        row is marked only after all of its data is written."""
        if self._lock_fd is None:
            raise StoreError(f"{self.path}: store is closed")
        data = {}
        for ix, row in rows.items():
            if isinstance(ix, (bool, np.bool_)) or not isinstance(ix, (int, np.integer)) \
                    or not 0 <= ix < self.n_rows:
                raise StoreError(f"row index must be an int in [0, {self.n_rows}), got {ix!r}")
            data[int(ix)] = self._checked_row(int(ix), row)
        order = sorted(data)
        runs, start = [], 0
        for k in range(1, len(order) + 1):
            if k == len(order) or order[k] != order[k - 1] + 1:
                runs.append(order[start:k])
                start = k
        with self._write_lock:  # rows share chunks: one read-modify-write at a time
            # Straight into the Zarr arrays (the skeleton fixed the layout: R rows per
            # chunk, nothing to encode), opened once per store: we hold the lock, so
            # nobody else changes the metadata (xarray region writes re-read it per row).
            arrays = self._arrays()
            done = arrays[DONE]
            was_done = done[:]
            for run in runs:  # rewriting: never leave "done" over partial data
                if was_done[run[0]:run[-1] + 1].any():
                    done[run[0]:run[-1] + 1] = 0
            for run in runs:
                lo, hi = run[0], run[-1] + 1
                for name in self._template.data_vars:
                    arrays[name][lo:hi] = np.stack([data[ix][name] for ix in run])
            for run in runs:
                done[run[0]:run[-1] + 1] = 1

    def _checked_row(self, ix: int, row: dict) -> dict:
        """Row ``ix`` cast to the template dtypes, or StoreError naming what is wrong."""
        names = set(self._template.data_vars)
        if set(row) != names:
            missing, extra = sorted(names - set(row)), sorted(set(row) - names)
            raise StoreError(f"row {ix}: missing variables {missing}, unexpected {extra}")
        data = {}
        for name, var in self._template.data_vars.items():
            arr = np.asarray(row[name])
            if arr.shape != var.shape[1:]:
                raise StoreError(f"row {ix}: {name!r} has shape {arr.shape}, "
                                 f"expected {var.shape[1:]}")
            if not np.can_cast(arr.dtype, var.dtype, casting="same_kind"):
                raise StoreError(f"row {ix}: {name!r} has dtype {arr.dtype}, "
                                 f"expected {var.dtype}")
            cast = arr.astype(var.dtype, copy=False)
            if var.dtype.kind in "biu" and not np.array_equal(cast, arr):
                raise StoreError(f"row {ix}: {name!r} does not fit in {var.dtype}")
            data[name] = cast
        return data

    def _arrays(self) -> dict:
        """name -> zarr.Array of the store (data variables and DONE), opened once."""
        if self._zarr_arrays is None:
            group = zarr.open_group(self.path, mode="r+")
            # every saved chunk is written, also one that equals the fill value
            # (a NaN row), so a missing chunk under a done row means lost data
            self._zarr_arrays = {name: group[name].with_config({"write_empty_chunks": True})
                                 for name in (*self._template.data_vars, DONE)}
        return self._zarr_arrays

    def open(self) -> xr.Dataset:
        """The complete sweep as a lazy Dataset (StoreError until every row is saved);
        no dask chunks (``.load()`` of the default sweep through dask took 0.5-0.9 s,
        0.2-0.3 s without)."""
        missing = sorted(set(range(self.n_rows)) - set(self.finished()))
        if missing:
            shown = ", ".join(map(str, missing[:10])) + (", ..." if len(missing) > 10 else "")
            raise StoreError(f"{self.path}: {len(missing)} of {self.n_rows} rows "
                             f"not finished yet ({shown})")
        ds = xr.open_zarr(self.path, chunks=None, **_ZARR_KW).drop_vars(DONE)
        ds.attrs.pop(ALL_CHUNKS, None)  # the store's own bookkeeping
        return ds

    def read_rows(self, name: str, rows) -> np.ndarray:
        """Variable ``name`` at the given rows (numpy), a read error as StoreError."""
        try:
            return zarr.open_group(self.path, mode="r")[name].get_orthogonal_selection(
                (np.asarray(rows, dtype=int),))
        except Exception as exc:
            raise StoreError(f"{self.path}: cannot read {name!r} "
                             f"({type(exc).__name__}); {_OVERWRITE_HINT}") from None

    def load(self) -> xr.Dataset:
        """``open().load()``, a chunk that cannot be read (corrupt on disk) as a
        one-line StoreError."""
        ds = self.open()
        try:
            return ds.load()
        except Exception as exc:
            raise StoreError(f"{self.path}: cannot read the stored data "
                             f"({type(exc).__name__}); {_OVERWRITE_HINT}") from None
