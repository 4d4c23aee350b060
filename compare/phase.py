"""`dyn phase`: resumable test-error sweeps over two parameter axes.

Grid: axis x (rows) by axis y (columns), S seeds per point, K checkpoint
times (dim ``steps``; default the single time T).  Seeds: the realisation of
seed s at grid point (ix, iy) is ``SeedSequence([seed, kx, ky, s])`` reduced
to an int, where kx (ky) is the index along x (y) if that axis changes the
data statistics (``ParamSpec.data``) and 0 otherwise (mu, v0, eta).  So the
seeds are common along mu, v0 and eta (common random numbers, smooth
boundaries) and never depend on execution order, backend or worker count:
results are identical bit for bit.

Work unit: one row x = x[ix] (all y, seeds, times), computed by the pure
function ``compute_chunk`` and saved to ``OUT/phase.zarr`` (``SweepStore``:
Zarr, up to 16 rows per chunk, a fingerprint of the spec so that a re-run resumes
and a changed parameter set is refused, an exclusive lock against concurrent
writers).  At the end ``assemble`` derives means, the fitted flag, mu* per
time and the divergence count; the CLI exports phase.nc and phase.png.
"""
from __future__ import annotations

import os
import re
import time
from functools import lru_cache

import dask.array as da
import numpy as np
import xarray as xr

from dynamics import __version__
from dynamics.batch import RESULTS, check_precision, stacked_stats
from dynamics.boundary import crossing, crossing_made_by_failures, zero_output_runs
from dynamics.levels import FAMILY, LEVEL, NETWORK, sampler_for
from dynamics.general import check_family_sampler, stacked_general
from dynamics.data import check_sampler
from dynamics.files import remove_stale_temporaries
from dynamics.params import AXES, Params, ParamError, check_threshold
from dynamics.run import BUDGET_REASON, check_paper_model, kernel_config
from dynamics.spec import RunSpec, check_spec
from dynamics.limit import LIMIT_FIELDS, PATTERN_TIME, check_limit

from .boundaries import run_jobs
from .dataset import global_attrs
from .store import StoreError, SweepStore, fingerprint, spec_json

_SPEC = re.compile(r"^\s*(\w+)\s*=\s*([^.][^:]*?)\s*\.\.\s*([^:]+?)\s*:\s*(\d+)\s*$")
MAX_AXIS = 4096  # points per axis


def parse_axis(text: str):
    """'NAME=LO..HI:K' -> (name, values): K log-spaced values (ints rounded, unique)."""
    m = _SPEC.match(text or "")
    if not m:
        raise ParamError("axis", text, "expected NAME=LO..HI:K, e.g. v0=1e-3..10:64")
    name, lo, hi, k = m.group(1), m.group(2), m.group(3), int(m.group(4))
    if name not in AXES:
        raise ParamError("axis", text, f"axis name must be one of {', '.join(AXES)}")
    if not 2 <= k <= MAX_AXIS:
        raise ParamError("axis", text, f"K must be in [2, {MAX_AXIS}]")
    try:
        lo, hi = float(lo), float(hi)
    except ValueError:
        raise ParamError("axis", text, "LO and HI must be numbers") from None
    if not (0 < lo < hi and np.isfinite(hi)):
        raise ParamError("axis", text, "need 0 < LO < HI")
    spec = AXES[name]
    vals = np.geomspace(lo, hi, k)
    if spec.kind is int:
        vals = np.unique(np.round(vals).astype(int))
        if vals.size < 2:
            raise ParamError("axis", text, "integer axis needs at least 2 distinct values")
    for v in (vals[0], vals[-1]):  # log-spaced: the ends bound every value
        try:
            spec.check(v.item())
        except ParamError as exc:
            raise ParamError("axis", text, f"value {v:g} of {name}: {exc.allowed}") from None
    return name, vals


@lru_cache(maxsize=2 ** 16)
def point_seed(seed: int, kx: int, ky: int, s: int) -> int:
    """Seed of replicate s at grid key (kx, ky): a pure function of indices
    (cached: along axes that do not change the data every point shares it)."""
    state = np.random.SeedSequence([seed, kx, ky, s]).generate_state(2, np.uint32)
    return int((int(state[0]) << 31) ^ int(state[1]))


def check_level(params: Params, level: str, sampler: str = "wishart"):
    """Refuse, before any work, what the level cannot run beyond what
    ``RunSpec`` checked (family options on the paper's levels, a random
    signal with the d-free sampler)."""
    kind = LEVEL[level].kind
    if kind == FAMILY:
        check_family_sampler(params, sampler)
    elif kind == NETWORK:
        check_paper_model(params, level)
    else:
        kernel_config(params, level)


def make_spec(run: RunSpec, x, y, *, tau) -> dict:
    """Everything that defines a sweep of the runs ``run`` (``RunSpec``: its
    params are the base point, its seeds a count per grid point) over the
    axes x and y, as plain JSON types (the store's fingerprint); every grid
    point must suit the sampler (errors name the axis option).  ``precision``
    float32 is in the spec (so in its fingerprint: a float64 store is not
    resumed in float32); float64 specs have no such key."""
    check_spec(run, "run")
    if isinstance(run.seeds, tuple):
        raise ParamError("seeds", list(run.seeds), "a count (each grid point draws its own "
                         "seeds from params.seed)")
    if run.integrator != "gd":
        raise ParamError("integrator", run.integrator, "dyn phase runs GD (times beyond "
                         "FlowConfig.gd_max continue with the flow)")
    params, level, sampler, precision = run.params, run.level, run.sampler, run.precision
    n_seeds, times = run.seeds, list(run.checkpoints)
    check_level(params, level, sampler)
    tau = check_threshold(tau, n_test=params.n_test)
    for option, (name, vals) in (("x", x), ("y", y)):
        for val in (vals[0], vals[-1]):
            point = params.replace(**{AXES[name].name: np.asarray(val).item()})
            try:  # an axis may take the sweep out of float32's scope (e.g. depth)
                check_precision(point, level, precision)
            except ParamError as exc:
                raise ParamError("precision", precision,
                                 f"--{option} {name}={val}: {exc.allowed}") from None
            if np.isinf(times[-1]):
                try:
                    check_limit(point, level)
                except ParamError as exc:
                    raise ParamError("times", "inf", f"--{option} {name}={val}: "
                                     f"{exc.allowed}") from None
            try:
                check_sampler(point, sampler_for(level, sampler))
            except ParamError as exc:
                if exc.param not in ("n", "d") or AXES[name].name not in ("n", "d", "m"):
                    raise  # not about this axis (e.g. noise vs sampler, or --n/--d)
                raise ParamError(option, f"{name}={val}", exc.allowed) from None
    spec = {"params": params.to_dict(), "x": [x[0], np.asarray(x[1]).tolist()],
            "y": [y[0], np.asarray(y[1]).tolist()], "n_seeds": int(n_seeds), "level": level,
            "sampler": sampler, "tau": float(tau), "times": times, "version": __version__}
    if precision != "float64":
        spec["precision"] = precision
    if np.isinf(times[-1]):  # t = inf is the program seeded at this pattern time (fingerprinted)
        spec["limit_pattern_time"] = PATTERN_TIME
    return spec


def _seeds(spec, ix, iy):
    (xn, _), (yn, _) = spec["x"], spec["y"]
    kx = ix if AXES[xn].data else 0
    ky = iy if AXES[yn].data else 0
    base = spec["params"]["seed"]
    return [point_seed(base, kx, ky, s) for s in range(spec["n_seeds"])]


_STATS_CACHE: dict = {}  # (Params, sampler, seeds) -> stacked statistics, last few rows


def _cached_stats(pkey: Params, sampler: str, seeds, level: str = "exact"):
    """Stacked statistics, reused across rows that share them (e.g. along v0).

    A pure cache: the statistics are a function of the key alone.
    """
    general = level == "general"
    key = (pkey, sampler, tuple(seeds), general)
    if key not in _STATS_CACHE:
        while len(_STATS_CACHE) >= 4:
            _STATS_CACHE.pop(next(iter(_STATS_CACHE)))
        _STATS_CACHE[key] = (stacked_general if general else stacked_stats)(pkey, sampler,
                                                                            seeds)
    return _STATS_CACHE[key]


def spec_precision(spec: dict) -> str:
    """The sweep's precision (a spec without the key is float64; ``make_spec``)."""
    return spec.get("precision", "float64")


def rows_per_batch(spec: dict) -> int:
    """Rows computed in one batch call: 2 in float32 (a seed's jobs of two rows
    sharing a realisation fill groups of GROUP_MAX_F32 = 128, 1.1-1.2x faster
    per job than 64), else 1.  The results do not depend on it."""
    return 2 if spec_precision(spec) == "float32" else 1


def compute_chunk(spec: dict, ix: int, parallel: bool = True) -> dict:
    """Row ix of the sweep: arrays (ny, S, K) of RESULTS, point seeds (ny, S)
    and the divergence status (ny, S, 2) (``compute_rows`` of one row)."""
    return compute_rows(spec, [ix], parallel)[0]


def compute_rows(spec: dict, ixs, parallel: bool = True) -> list[dict]:
    """Rows ixs of the sweep, one dict per row as ``compute_chunk``.

    Pure function of (spec, ixs): module-level and plain data, so it can run
    on a dask worker.  Points sharing statistics and kernel constants (differing
    only in mu and v0), across all rows, run in one batch call; a job's result
    does not depend on its batch, so every row equals its ``compute_chunk``.
    """
    ny, S, K = len(spec["y"][1]), spec["n_seeds"], len(spec["times"])
    outs = []
    (xn, xv), (yn, yv) = spec["x"], spec["y"]
    base = Params(**spec["params"])
    groups = {}  # (axis values other than mu and v0, seeds) -> [(row, iy, mu, v0)]
    for row, ix in enumerate(ixs):
        out = {k: np.full((ny, S, K), np.nan) for k in RESULTS}
        out["point_seed"] = np.zeros((ny, S), dtype=np.int64)
        out["status"] = np.zeros((ny, S, 2), dtype=np.int64)
        out["limit_certified"] = np.full((ny, S), np.nan)
        outs.append(out)
        for iy in range(ny):
            seeds = tuple(_seeds(spec, ix, iy))
            out["point_seed"][iy] = seeds
            point = {AXES[xn].name: xv[ix], AXES[yn].name: yv[iy]}
            shared = tuple(sorted((k, v) for k, v in point.items()
                                  if k not in ("mu_norm", "v0")))
            groups.setdefault((shared, seeds), []).append(
                (row, iy, point.get("mu_norm", base.mu_norm), point.get("v0", base.v0)))
    for (shared, seeds), members in groups.items():
        pkey = base.replace(**dict(shared), mu_norm=1.0, v0=1.0, seed=0)  # axes were checked
        mus = np.array([mu for _, _, mu, _ in members], dtype=np.float64)
        v0s = np.array([v0 for _, _, _, v0 in members], dtype=np.float64)
        S_ = len(seeds)
        jobs = (np.tile(np.arange(S_), len(members)), np.repeat(mus, S_), np.repeat(v0s, S_))
        stacked = (None if spec["level"] == "full"
                   else _cached_stats(pkey, spec["sampler"], seeds, spec["level"]))
        run = RunSpec(pkey, spec["level"], spec["sampler"], seeds, spec["times"],
                      precision=spec_precision(spec))
        res = run_jobs(run, *jobs, stacked=stacked, parallel=parallel)
        for k in RESULTS + ("status",):
            val = res[k].reshape((len(members), S_) + res[k].shape[1:])
            for q, (row, iy, _, _) in enumerate(members):
                outs[row][k][iy] = val[q]
        if "limit" in res:  # t = inf: the program's certificate per run
            cert = res["limit"][:, LIMIT_FIELDS.index("certified")].reshape(len(members), S_)
            for q, (row, iy, _, _) in enumerate(members):
                outs[row]["limit_certified"][iy] = cert[q]
    return outs


def template(spec: dict) -> xr.Dataset:
    """Empty sweep Dataset (x, y, seed, steps) that the store fills row by row:
    lazy (dask) data, only its layout is used (a 4096 x 4096 x 8 sweep's
    numpy template took 7.5 GB and 13 s)."""
    (xn, xv), (yn, yv) = spec["x"], spec["y"]
    S, K = spec["n_seeds"], len(spec["times"])
    shape = (len(xv), len(yv), S)
    data = {k: ((xn, yn, "seed", "steps"), da.full(shape + (K,), np.nan)) for k in RESULTS}
    data["point_seed"] = ((xn, yn, "seed"), da.zeros(shape, dtype=np.int64))
    data["status"] = ((xn, yn, "seed", "status_field"), da.zeros(shape + (2,), dtype=np.int64))
    data["limit_certified"] = ((xn, yn, "seed"), da.full(shape, np.nan))
    return xr.Dataset(data, coords={xn: np.asarray(xv), yn: np.asarray(yv),
                                    "seed": np.arange(S), "steps": np.asarray(spec["times"]),
                                    "status_field": ["step", "reason"]})


def open_store(spec: dict, out_dir, overwrite=False) -> SweepStore:
    """The sweep's Zarr store (locked; created, resumed or refused)."""
    return SweepStore(os.path.join(os.fspath(out_dir), "phase.zarr"), template(spec),
                      spec["x"][0], spec, overwrite)


def run_phase(spec: dict, out_dir, overwrite=False, scheduler=None, dask_workers=None,
              progress=None, finish=None) -> xr.Dataset:
    """Compute missing rows (locally or on dask), then assemble the Dataset;
    ``finish(ds)`` (e.g. writing phase.nc and the figures) runs while the
    store's lock is still held, so no second writer interleaves."""
    with open_store(spec, out_dir, overwrite) as store:
        remove_stale_temporaries(out_dir)  # under the lock: no other writer here
        nx = len(spec["x"][1])
        done = set(store.finished())
        check_stored_seeds(spec, store, sorted(done))
        todo = [ix for ix in range(nx) if ix not in done]
        if progress:
            progress(nx - len(todo))
        per = rows_per_batch(spec)
        blocks = [todo[i:i + per] for i in range(0, len(todo), per)]
        with RowWriter(store, progress) as put:
            if todo and (scheduler or dask_workers):
                _run_dask(spec, put, blocks, scheduler, dask_workers)
            else:
                for block in blocks:
                    for ix, out in zip(block, compute_rows(spec, block)):
                        put(ix, out)
        ds = assemble(spec, store.load())
        if finish is not None:
            finish(ds)
        return ds


def check_stored_seeds(spec: dict, store: SweepStore, done) -> None:
    """The rows flagged done hold this sweep's runs: their point seeds are the
    spec's (a flag set by hand over unwritten data reads as seed 0)."""
    if not done:
        return
    got = store.read_rows("point_seed", done)
    for q, ix in enumerate(done):
        want = np.array([_seeds(spec, ix, iy) for iy in range(len(spec["y"][1]))])
        if not np.array_equal(got[q], want):
            raise StoreError(f"{store.path}: row {ix} is flagged done but does not hold "
                             f"this sweep's runs (point_seed differs); use another --out, "
                             f"or add --overwrite to discard the stored sweep")


FLUSH_SECONDS = 2.0  # a finished row reaches the store at most this long after the next


class RowWriter:
    """Finished rows -> the store, buffered: ``put(ix, row)`` reports progress
    at once; the first row is written at once, later ones with one
    ``SweepStore.save_rows`` once FLUSH_SECONDS have passed since the last
    write (a Zarr write costs ~2 ms per variable whatever its size: writing
    the default sweep row by row took ~1 s), and on leaving the block, also
    on an error or an interrupt (finished rows are kept for the resume)."""

    def __init__(self, store, progress=None, flush_seconds: float = FLUSH_SECONDS):
        self.store, self.progress, self.flush_seconds = store, progress, flush_seconds
        self.rows, self.last = {}, -float("inf")

    def __call__(self, ix: int, row: dict) -> None:
        self.rows[ix] = row
        if self.progress:
            self.progress(1)
        if time.monotonic() - self.last >= self.flush_seconds:
            self.flush()

    def flush(self) -> None:
        rows, self.rows = self.rows, {}
        if rows:
            self.store.save_rows(rows)
        self.last = time.monotonic()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.flush()
        return False


def _run_dask(spec, put, blocks, scheduler, dask_workers):
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
        futures = {client.submit(compute_rows, spec, block, False, pure=False): block
                   for block in blocks}
        for fut in as_completed(futures):
            for ix, out in zip(futures[fut], fut.result()):
                put(ix, out)  # the lock holder writes
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def assemble(spec: dict, ds: xr.Dataset) -> xr.Dataset:
    """Stored rows -> Dataset with means, fitted flag, mu* per time, divergences.

    A run that diverged before a checkpoint is NaN there; it counts as chance
    (0.5) in the mean and is counted in ``n_diverged``; mu* is NaN where such
    runs sit at the ||mu|| bracketing the crossing (the crossing is theirs,
    as in ``dyn solve``; attribute ``mu_star_not_reported`` counts these).
    """
    (xn, _), (yn, _) = spec["x"], spec["y"]
    tau = spec["tau"]
    diverged = ds.test_error.isnull()
    # the normalised flow's step budget (status reason 4) is not a divergence
    budget = diverged & (ds.status.isel(status_field=1) == BUDGET_REASON)
    ds["test_error_mean"] = ds.test_error.fillna(0.5).mean("seed")
    ds["loss_mean"] = ds.loss.mean("seed")
    ds["fitted"] = (ds.train_error.fillna(1.0).max("seed") == 0).astype(np.int8)
    ds["n_diverged"] = diverged.sum("seed").astype(np.int64)
    if "mu" in (xn, yn):
        other = yn if xn == "mu" else xn
        mu = np.asarray(ds.mu)
        mean = ds.test_error_mean.transpose(other, "steps", "mu").values
        failed = diverged.any("seed").transpose(other, "steps", "mu").values
        star = np.full(mean.shape[:2], np.nan)
        n_blank = 0
        for a, k in np.ndindex(star.shape):
            if crossing_made_by_failures(mu, mean[a, k], tau, mu[failed[a, k]]) is not None:
                n_blank += 1  # made by runs counted as chance, not by learning
                continue
            star[a, k] = crossing(mu, mean[a, k], tau)
        ds["mu_star"] = ((other, "steps"), star)
        ds["mu_star"].attrs["long_name"] = f"||mu|| where mean test error crosses {tau:g}"
        ds["mu_star"].attrs["comment"] = ("NaN: no crossing, or diverged runs at the ||mu|| "
                                          "bracketing it")
        n_blank_attr = {"mu_star_not_reported": n_blank}
    else:
        n_blank_attr = {}
    ds["test_error"].attrs.update(long_name="clean test error (NaN: diverged)", units="1")
    ds["margin"].attrs.update(long_name="normalised margin min_i y_i f_i / ||theta||^(L+1)",
                              units="1")
    ds["point_seed"].attrs["long_name"] = "seed of the realisation (dyn simulate --seed)"
    ds["status"].attrs["long_name"] = "divergence (step, reason); step -1: finished"
    limit_attr = {}
    if "limit_certified" in ds:
        ds["limit_certified"].attrs.update(
            long_name="t = inf: the run's limit program certified stationary (1), not (0), "
                      "no program or no inf (NaN)", units="1")
        cert = ds["limit_certified"].values
        if np.isfinite(cert).any():
            limit_attr = {"limit_certified_fraction": float(np.nanmean(cert)),
                          "limit_pattern_time": spec["limit_pattern_time"]}
    ds["steps"].attrs.update(long_name="training time in GD steps", units="1")
    p = Params(**spec["params"])
    swept = (AXES[xn].name, AXES[yn].name)
    # --times replace --steps (the steps coordinate holds them): then steps is unused
    unused = () if spec["times"] == [float(p.steps)] else ("steps",)
    ds.attrs = global_attrs(p, title=f"dyn phase: test error over ({xn}, {yn})",
                            swept=swept, unused=unused, level=spec["level"], sampler=spec["sampler"],
                            n_seeds=spec["n_seeds"], threshold=tau, x_axis=xn, y_axis=yn,
                            n_diverged=int((diverged & ~budget).sum()),
                            n_budget=int(budget.sum()), **n_blank_attr, **limit_attr,
                            n_zero_output=zero_output_runs(ds.loss.values,
                                                           ds.train_error.values,
                                                           ds.test_error.values),
                            precision=spec_precision(spec),
                            fingerprint=fingerprint(spec),
                            spec_json=spec_json(spec))
    return ds

