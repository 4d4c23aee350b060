"""`dyn phase`: resumable test-error sweeps over two parameter axes.

Grid: axis x (rows) by axis y (columns), S seeds per point.  Seeds: the
realisation of seed s at grid point (ix, iy) is
``SeedSequence([seed, kx, ky, s])`` reduced to an int, where kx (ky) is the
index along x (y) if that axis changes the data statistics (d, n, m, sigma0)
and 0 otherwise (mu, v0, eta).  So the seeds are common along mu, v0 and eta
(common random numbers, smooth boundaries) and never depend on execution
order, chunking, backend or worker count: results are identical bit for bit.

Work unit ("chunk"): one row x = x[ix], all y and seeds.  Each finished chunk
is written atomically to ``OUT/chunks/row_XXXX.nc``; ``OUT/manifest.json``
holds a fingerprint of everything that defines the sweep, so a re-run resumes
(skips finished rows) and a changed parameter set is refused.  At the end the
rows are assembled into ``OUT/phase.nc`` and ``OUT/phase.png``.
"""
from __future__ import annotations

import hashlib
import json
import os
import re

import numpy as np
import xarray as xr

from dynamics import __version__
from dynamics.boundary import crossing, run_batch, run_full_batch, stacked_stats
from dynamics.params import Params, ParamError

from .dataset import atomic_target, global_attrs, read_netcdf, write_netcdf

# axis name -> Params field; which axes change the data statistics
AXES = {"v0": "v0", "mu": "mu_norm", "d": "d", "n": "n", "m": "m",
        "sigma0": "sigma_0", "eta": "eta"}
STATS_AXES = {"d", "n", "m", "sigma0"}
INT_AXES = {"d", "n", "m"}
_SPEC = re.compile(r"^\s*(\w+)\s*=\s*([^.][^:]*?)\s*\.\.\s*([^:]+?)\s*:\s*(\d+)\s*$")


def parse_axis(text: str, option: str = "axis"):
    """'NAME=LO..HI:K' -> (name, values): K log-spaced values (ints rounded, unique)."""
    m = _SPEC.match(text or "")
    if not m:
        raise ParamError(option, text, "expected NAME=LO..HI:K, e.g. v0=1e-3..10:64")
    name, lo, hi, k = m.group(1), m.group(2), m.group(3), int(m.group(4))
    if name not in AXES:
        raise ParamError(option, text, f"axis name must be one of {', '.join(AXES)}")
    try:
        lo, hi = float(lo), float(hi)
    except ValueError:
        raise ParamError(option, text, "LO and HI must be numbers") from None
    if not (0 < lo < hi and np.isfinite(hi)) or k < 2:
        raise ParamError(option, text, "need 0 < LO < HI and K >= 2")
    vals = np.geomspace(lo, hi, k)
    if name in INT_AXES:
        vals = np.unique(np.round(vals).astype(int))
        if vals.size < 2:
            raise ParamError(option, text, "integer axis needs at least 2 distinct values")
    for v in vals:  # every grid value must make valid Params
        try:
            Params(**{AXES[name]: v.item()})
        except ParamError as exc:
            raise ParamError(option, text, f"value {v} is invalid: {exc.allowed}") from None
    return name, vals


def point_seed(seed: int, kx: int, ky: int, s: int) -> int:
    """Seed of replicate s at grid key (kx, ky): a pure function of indices."""
    state = np.random.SeedSequence([seed, kx, ky, s]).generate_state(2, np.uint32)
    return int((int(state[0]) << 31) ^ int(state[1]))


def fingerprint(spec: dict) -> str:
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]


def make_spec(params: Params, x, y, n_seeds, level, sampler, tau) -> dict:
    """Everything that defines a sweep (plain JSON types)."""
    return {"params": params.to_dict(), "x": [x[0], x[1].tolist()],
            "y": [y[0], y[1].tolist()], "n_seeds": int(n_seeds), "level": level,
            "sampler": sampler, "tau": float(tau), "version": __version__}


def _point_params(spec, ix, iy) -> Params:
    (xn, xv), (yn, yv) = spec["x"], spec["y"]
    return Params(**spec["params"]).replace(**{AXES[xn]: xv[ix], AXES[yn]: yv[iy]})


def _seeds(spec, ix, iy):
    (xn, _), (yn, _) = spec["x"], spec["y"]
    kx = ix if xn in STATS_AXES else 0
    ky = iy if yn in STATS_AXES else 0
    base = spec["params"]["seed"]
    return [point_seed(base, kx, ky, s) for s in range(spec["n_seeds"])]


_STATS_CACHE: dict = {}  # (Params, sampler, seeds) -> stacked statistics, last few rows


def _cached_stats(pkey: Params, sampler: str, seeds) -> dict:
    """Stacked statistics, reused across rows that share them (e.g. along v0).

    A pure cache: the statistics are a function of the key alone.
    """
    key = (pkey, sampler, tuple(seeds))
    if key not in _STATS_CACHE:
        while len(_STATS_CACHE) >= 4:
            _STATS_CACHE.pop(next(iter(_STATS_CACHE)))
        _STATS_CACHE[key] = stacked_stats(pkey, sampler, seeds)
    return _STATS_CACHE[key]


def compute_chunk(spec: dict, ix: int, parallel: bool = True) -> dict:
    """Row ix of the sweep: arrays (ny, S) of test error, loss, train error.

    Pure function of (spec, ix): module-level and plain data, so it can run on
    a dask worker.  Points sharing statistics and kernel constants (differing
    only in mu and v0) run in one batch call.
    """
    ny, S = len(spec["y"][1]), spec["n_seeds"]
    out = {k: np.full((ny, S), np.nan) for k in ("test_error", "loss", "train_error")}
    out["seeds"] = np.zeros((ny, S), dtype=np.int64)
    groups = {}
    for iy in range(ny):
        p = _point_params(spec, ix, iy)
        seeds = _seeds(spec, ix, iy)
        out["seeds"][iy] = seeds
        key = (p.replace(mu_norm=1.0, v0=1.0, seed=0), tuple(seeds))
        groups.setdefault(key, []).append((iy, p))
    for (pkey, seeds), members in groups.items():
        iys = np.array([iy for iy, _ in members])
        mus = np.array([p.mu_norm for _, p in members])
        v0s = np.array([p.v0 for _, p in members])
        S_ = len(seeds)
        jobs = (np.tile(np.arange(S_), len(members)), np.repeat(mus, S_), np.repeat(v0s, S_))
        if spec["level"] == "full":
            res = run_full_batch(pkey, seeds, *jobs)
        else:
            stacked = _cached_stats(pkey, spec["sampler"], seeds)
            res = run_batch(pkey, spec["level"], stacked, *jobs, parallel=parallel)
        for k in ("test_error", "loss", "train_error"):
            out[k][iys] = res[k].reshape(len(members), S_)
    return out


class PhaseStore:
    """Folder with manifest.json, chunks/row_XXXX.nc and the assembled result."""

    def __init__(self, out_dir, spec: dict, overwrite: bool = False):
        self.dir = os.fspath(out_dir)
        self.spec = spec
        self.fp = fingerprint(spec)
        os.makedirs(os.path.join(self.dir, "chunks"), exist_ok=True)
        man = os.path.join(self.dir, "manifest.json")
        if os.path.exists(man) and not overwrite:
            with open(man) as fh:
                old = json.load(fh)
            if old.get("fingerprint") != self.fp:
                diff = sorted(k for k in set(old.get("spec", {})) | set(spec)
                              if old.get("spec", {}).get(k) != spec.get(k))
                raise ValueError(
                    f"{self.dir} holds a sweep with different settings ({', '.join(diff)} "
                    f"differ); use another --out, or --overwrite to discard it")
        else:
            for f in self.finished():
                os.remove(self._path(f))
            _atomic_text(man, json.dumps({"fingerprint": self.fp, "spec": spec}, indent=1))

    def _path(self, ix):
        return os.path.join(self.dir, "chunks", f"row_{ix:04d}.nc")

    def finished(self) -> list[int]:
        names = os.listdir(os.path.join(self.dir, "chunks"))
        return sorted(int(n[4:8]) for n in names if re.fullmatch(r"row_\d{4}\.nc", n))

    def save(self, ix, chunk):
        ds = xr.Dataset({k: (("y", "seed"), v) for k, v in chunk.items()},
                        attrs={"fingerprint": self.fp, "row": ix})
        write_netcdf(ds, self._path(ix))

    def load(self, ix) -> xr.Dataset:
        ds = read_netcdf(self._path(ix))
        if ds.attrs.get("fingerprint") != self.fp:
            raise ValueError(f"chunk {self._path(ix)} belongs to another sweep")
        return ds


def _atomic_text(path, text):
    with atomic_target(path) as tmp, open(tmp, "w") as fh:
        fh.write(text)


def run_phase(spec: dict, out_dir, overwrite=False, scheduler=None, dask_workers=None,
              progress=None) -> xr.Dataset:
    """Compute missing rows (locally or on dask), then assemble the Dataset."""
    store = PhaseStore(out_dir, spec, overwrite)
    nx = len(spec["x"][1])
    todo = [ix for ix in range(nx) if ix not in set(store.finished())]
    if progress:
        progress(nx - len(todo))
    if todo and (scheduler or dask_workers):
        _run_dask(spec, store, todo, scheduler, dask_workers, progress)
    else:
        for ix in todo:
            store.save(ix, compute_chunk(spec, ix))
            if progress:
                progress(1)
    return assemble(spec, store)


def _run_dask(spec, store, todo, scheduler, dask_workers, progress):
    try:
        from dask.distributed import Client, LocalCluster, as_completed
    except ImportError:
        raise ValueError("dask.distributed is not installed: pip install 'dyn[dask]'") from None
    cluster = None
    if scheduler:
        client = Client(scheduler)
    else:
        cluster = LocalCluster(n_workers=int(dask_workers), threads_per_worker=1,
                               processes=True, dashboard_address=None)
        client = Client(cluster)
    try:
        futures = {client.submit(compute_chunk, spec, ix, False, pure=False): ix for ix in todo}
        for fut in as_completed(futures):
            store.save(futures[fut], fut.result())
            if progress:
                progress(1)
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def assemble(spec: dict, store: PhaseStore) -> xr.Dataset:
    """Rows -> Dataset (x, y, seed) with means, fitted flag and mu* curve."""
    (xn, xv), (yn, yv) = spec["x"], spec["y"]
    rows = [store.load(ix) for ix in range(len(xv))]
    data = {k: ((xn, yn, "seed"), np.stack([r[k].values for r in rows]))
            for k in ("test_error", "loss", "train_error")}
    seeds = np.stack([r["seeds"].values for r in rows])
    ds = xr.Dataset(data, coords={xn: np.asarray(xv), yn: np.asarray(yv),
                                  "seed": np.arange(spec["n_seeds"])})
    ds["point_seed"] = ((xn, yn, "seed"), seeds.astype(np.int64))
    ds["test_error_mean"] = ds.test_error.mean("seed")
    ds["loss_mean"] = ds.loss.mean("seed")
    ds["fitted"] = (ds.train_error.max("seed") == 0).astype(np.int8)
    tau = spec["tau"]
    if "mu" in (xn, yn):
        other = yn if xn == "mu" else xn
        mean = ds.test_error_mean.transpose(other, "mu").values
        ds["mu_star"] = ((other,), [crossing(np.asarray(ds.mu), row, tau) for row in mean])
        ds["mu_star"].attrs["long_name"] = f"||mu|| where mean test error crosses {tau:g}"
    ds["test_error"].attrs.update(long_name="clean test error", units="1")
    ds["point_seed"].attrs["long_name"] = "seed of the realisation (dyn simulate --seed)"
    p = Params(**spec["params"])
    ds.attrs = global_attrs(p, title=f"dyn phase: test error over ({xn}, {yn})",
                            level=spec["level"], sampler=spec["sampler"],
                            n_seeds=spec["n_seeds"], threshold=tau, x_axis=xn, y_axis=yn,
                            fingerprint=store.fp, spec_json=json.dumps(spec, sort_keys=True))
    return ds
