"""`dyn phase`: sweeps are reproducible, resumable and backend-independent."""
import json

import numpy as np
import pytest

from compare.dataset import read_netcdf
from compare.phase import assemble, compute_chunk, make_spec, open_store, parse_axis, point_seed, \
    run_phase
from compare.store import StoreBusy, StoreError
from dynamics import Params
from dynamics.boundary import _last_crossing
from dynamics.spec import RunSpec

P = Params(n=8, m=3, d=200, steps=30, n_test=200)
X = ("v0", np.geomspace(1e-2, 1.0, 3))
Y = ("mu", np.geomspace(0.5, 20, 5))


def _spec(**kw):
    p = kw.pop("params", P)
    run = RunSpec(p, kw.pop("level", "exact"), kw.pop("sampler", "wishart"),
                  kw.pop("n_seeds", 3), kw.pop("times", None))
    return make_spec(run, kw.pop("x", X), kw.pop("y", Y), tau=0.25)


def test_parse_axis():
    name, vals = parse_axis("d=500..64000:8")
    assert name == "d" and vals[0] == 500 and vals[-1] == 64000 and vals.dtype.kind == "i"
    name, vals = parse_axis("mu=0.5..50:5")
    assert name == "mu" and vals.size == 5
    np.testing.assert_allclose(vals, np.geomspace(0.5, 50, 5))
    for bad in ("q=1..2:3", "v0=2..1:3", "mu=1..2", "v0=-1..2:3", "flip=0.1..0.2:3",
                "mu=1..1e7:3", "v0=1..2:1", "", "eta=1..inf:3"):
        with pytest.raises(ValueError):
            parse_axis(bad)


def test_seeds_depend_on_indices_only():
    assert point_seed(0, 1, 2, 3) == point_seed(0, 1, 2, 3)
    assert len({point_seed(0, kx, 0, s) for kx in range(5) for s in range(5)}) == 25
    spec = _spec(x=("d", np.array([200, 300])))
    a, b = compute_chunk(spec, 0), compute_chunk(spec, 1)
    assert not np.array_equal(a["point_seed"], b["point_seed"])  # d changes the data
    spec = _spec()
    a, b = compute_chunk(spec, 0), compute_chunk(spec, 2)
    np.testing.assert_array_equal(a["point_seed"], b["point_seed"])  # common along v0 and mu
    assert np.all(a["point_seed"] == a["point_seed"][:1])


def test_chunk_matches_single_runs():
    """A sweep cell equals `simulate` at that point and seed."""
    from dynamics import simulate
    spec = _spec()
    chunk = compute_chunk(spec, 1)
    iy, s = 3, 2
    p = P.replace(v0=float(X[1][1]), mu_norm=float(Y[1][iy]),
                  seed=int(chunk["point_seed"][iy, s]))
    tr = simulate(p, "exact", "wishart", record_every=p.steps)
    assert chunk["test_error"][iy, s, 0] == tr.test_error
    assert chunk["loss"][iy, s, 0] == tr.loss[-1]
    assert chunk["train_error"][iy, s, 0] == tr.train_error[-1]
    assert np.all(chunk["status"][..., 0] == -1)


def test_chunk_with_several_times_matches_recorded_run():
    from dynamics import simulate
    spec = _spec(times=[10, 20, 30])
    chunk = compute_chunk(spec, 2)
    assert chunk["loss"].shape == (len(Y[1]), 3, 3)
    iy, s = 1, 0
    p = P.replace(v0=float(X[1][2]), mu_norm=float(Y[1][iy]),
                  seed=int(chunk["point_seed"][iy, s]))
    tr = simulate(p, "exact", "wishart", record_every=10)
    np.testing.assert_array_equal(chunk["loss"][iy, s], tr.loss[1:])
    np.testing.assert_array_equal(chunk["train_error"][iy, s], tr.train_error[1:])
    assert chunk["test_error"][iy, s, -1] == tr.test_error


def test_parallel_and_serial_identical():
    spec = _spec()
    a, b = compute_chunk(spec, 0, parallel=True), compute_chunk(spec, 0, parallel=False)
    for k in ("test_error", "loss", "train_error", "margin", "status", "point_seed"):
        np.testing.assert_array_equal(a[k], b[k])


def test_resume_after_interrupt(tmp_path, monkeypatch):
    spec = _spec()
    ref = run_phase(spec, tmp_path / "ref")
    import compare.phase as ph
    real = ph.compute_rows
    calls = []

    def flaky(spec_, ixs, parallel=True):
        if 1 in ixs and not calls:
            calls.append(1)
            raise KeyboardInterrupt  # Ctrl-C in the middle of the sweep
        return real(spec_, ixs, parallel)

    monkeypatch.setattr(ph, "compute_rows", flaky)
    with pytest.raises(KeyboardInterrupt):
        run_phase(spec, tmp_path / "run")
    with open_store(spec, tmp_path / "run") as store:
        assert store.finished() == [0]  # the finished row survived, store consistent
    done = []
    ds = run_phase(spec, tmp_path / "run", progress=done.append)
    assert done[0] == 1  # one row skipped on resume
    for k in ("test_error", "loss", "train_error", "point_seed", "margin", "status"):
        np.testing.assert_array_equal(ds[k].values, ref[k].values)


def test_changed_parameters_refused(tmp_path):
    run_phase(_spec(), tmp_path)
    with pytest.raises(StoreError, match="different sweep") as exc:
        run_phase(_spec(params=P.replace(eta=0.02)), tmp_path)
    msg = str(exc.value)
    assert "params.eta: 0.01 -> 0.02" in msg and "--overwrite" in msg
    with pytest.raises(StoreError, match="n_seeds: 3 -> 2"):
        run_phase(_spec(n_seeds=2), tmp_path)
    ds = run_phase(_spec(params=P.replace(eta=0.02)), tmp_path, overwrite=True)
    assert json.loads(ds.attrs["spec_json"])["params"]["eta"] == 0.02


def test_concurrent_use_refused(tmp_path):
    spec = _spec()
    with open_store(spec, tmp_path):
        with pytest.raises(StoreBusy, match="in use"):
            run_phase(spec, tmp_path)
    ds = run_phase(spec, tmp_path)  # the lock was released
    assert int(ds.test_error.notnull().sum()) == ds.test_error.size


def test_assembled_dataset_layout(tmp_path):
    spec = _spec(times=[15, 30])
    ds = run_phase(spec, tmp_path)
    assert ds.test_error.dims == ("v0", "mu", "seed", "steps")
    assert ds.test_error.shape == (3, 5, 3, 2)
    assert ds.status.dims == ("v0", "mu", "seed", "status_field")
    for name in ("margin", "n_diverged", "test_error_mean", "fitted", "mu_star"):
        assert name in ds, name
    assert ds.mu_star.dims == ("v0", "steps")
    assert int(ds.attrs["n_diverged"]) == int(ds.n_diverged.sum()) == 0
    # swept parameters: no flat attribute, listed instead; the rest is flat
    assert "v0" not in ds.attrs and "mu_norm" not in ds.attrs
    assert set(ds.attrs["swept_parameters"].split()) == {"v0", "mu_norm"}
    assert ds.attrs["eta"] == P.eta and ds.attrs["d"] == P.d


def test_dask_local_cluster_equals_local(tmp_path):
    pytest.importorskip("dask.distributed")
    from dask.distributed import LocalCluster
    spec = _spec(n_seeds=2)
    local = run_phase(spec, tmp_path / "local")
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                      dashboard_address=None) as cluster:
        remote = run_phase(spec, tmp_path / "dask", scheduler=cluster.scheduler_address)
    for k in ("test_error", "loss", "train_error", "point_seed", "margin", "status"):
        np.testing.assert_array_equal(remote[k].values, local[k].values)


def test_full_level_sweep_small():
    spec = _spec(level="full", sampler="data", n_seeds=1,
                 y=("mu", np.array([1.0, 10.0])), x=("v0", np.array([0.1, 1.0])))
    chunk = compute_chunk(spec, 0)
    exact = compute_chunk({**spec, "level": "exact"}, 0)
    np.testing.assert_allclose(chunk["loss"], exact["loss"], rtol=1e-10)
    np.testing.assert_array_equal(chunk["test_error"], exact["test_error"])


def test_cli_phase_end_to_end(tmp_path, cli):
    out = tmp_path / "ph"
    args = ["phase", "--x", "v0=0.01..1:3", "--y", "mu=0.5..20:6", "--seeds", "2",
            "--n", "8", "--m", "3", "--d", "200", "--steps", "30", "--n-test", "200",
            "--out", str(out), "--quiet"]
    res = cli(*args)
    assert res.exit_code == 0, res.output
    assert "mu*" in res.output
    ds = read_netcdf(out / "phase.nc")
    assert ds.test_error.shape == (3, 6, 2, 1) and "mu_star" in ds
    assert (out / "phase.png").exists() and (out / "phase.zarr").is_dir()
    res2 = cli(*args[:-3], "--eta", "0.02", "--out", out)
    assert res2.exit_code == 1 and "different sweep" in res2.output
    assert "params.eta" in res2.output and "--overwrite" in res2.output
    res3 = cli(*args[:-3], "--eta", "0.02", "--out", out, "--overwrite", "--quiet")
    assert res3.exit_code == 0, res3.output
    assert read_netcdf(out / "phase.nc").attrs["eta"] == 0.02


def test_cli_phase_end_to_end_without_mu_axis(tmp_path, cli):
    """Same, over (v0, eta): no mu* curve; resume, refusal and --overwrite."""
    out = tmp_path / "ph"
    args = ["phase", "--x", "v0=0.01..1:3", "--y", "eta=0.005..0.02:2", "--seeds", "2",
            "--n", "8", "--m", "3", "--d", "200", "--steps", "30", "--n-test", "200",
            "--mu", "3", "--quiet"]
    res = cli(*args, "--out", out)
    assert res.exit_code == 0, res.output
    assert "mu*" not in res.output and "not fitted" in res.output
    ds = read_netcdf(out / "phase.nc")
    assert ds.test_error.dims == ("v0", "eta", "seed", "steps")
    assert ds.test_error.shape == (3, 2, 2, 1) and "mu_star" not in ds
    assert ds.attrs["mu_norm"] == 3.0 and "eta" not in ds.attrs
    assert (out / "phase.png").exists() and (out / "phase.zarr").is_dir()
    again = cli(*args, "--out", out)  # every row stored: resumes, same numbers
    assert again.exit_code == 0, again.output
    np.testing.assert_array_equal(read_netcdf(out / "phase.nc").test_error, ds.test_error)
    res2 = cli(*args, "--steps", "20", "--out", out)
    assert res2.exit_code == 1 and "different sweep" in res2.output
    assert "params.steps: 30 -> 20" in res2.output and "--overwrite" in res2.output
    res3 = cli(*args, "--steps", "20", "--out", out, "--overwrite")
    assert res3.exit_code == 0, res3.output
    assert read_netcdf(out / "phase.nc").attrs["steps"] == 20


@pytest.mark.parametrize("args,needle", [
    (["--x", "v0=1..0.1:3"], "--x"), (["--y", "bogus"], "--y"),
    (["--x", "mu=1..2:3", "--y", "mu=1..3:3"], "--y"), (["--seeds", "0"], "--seeds"),
    (["--dask-workers", "0"], "--dask-workers"),
    (["--v0", "7", "--x", "v0=0.01..1:3"], "--v0"), (["--mu", "3"], "--mu"),
    (["--x", "d=100..1e13:3"], "--x"), (["--x", "seed=1..3:3"], "--x"),
])
def test_cli_phase_bad_options(args, needle, tmp_path, cli):
    res = cli("phase", *args, "--out", tmp_path)
    assert res.exit_code == 2 and needle in res.output and "Traceback" not in res.output


def test_mu_star_not_reported_where_diverged_runs_make_the_crossing(tmp_path):
    """A run counted as chance (diverged) at the ||mu|| bracketing a crossing
    blanks that mu* (NaN, counted in the attributes), as in dyn solve; other
    columns keep theirs."""
    spec = _spec(x=("v0", np.array([0.1, 1.0])), y=("mu", np.geomspace(0.5, 200, 12)))
    ds = run_phase(spec, tmp_path)
    assert ds.attrs["mu_star_not_reported"] == 0
    star = ds.mu_star.values
    a = int(np.flatnonzero(np.isfinite(star[:, 0]))[0])
    mean = ds.test_error_mean.isel(v0=a, steps=0).values
    kc = _last_crossing(mean, 0.25)
    raw = ds[["test_error", "loss", "train_error", "margin", "status", "point_seed"]].copy(
        deep=True)
    for name in ("test_error", "loss", "train_error", "margin"):
        raw[name][a, kc + 1, 0, 0] = np.nan  # seed 0 "diverged" at the upper bracket point
    again = assemble(spec, raw)
    assert np.isnan(again.mu_star.values[a, 0])
    assert again.attrs["mu_star_not_reported"] == 1 and again.attrs["n_diverged"] == 1
    keep = np.ones(star.shape, bool)
    keep[a, 0] = False
    np.testing.assert_array_equal(again.mu_star.values[keep], star[keep])


def test_large_sweep_store_is_created_without_materialising_the_grid(tmp_path):
    """A 4096 x 4096 x 8 sweep: the template is lazy (its numpy version took
    7.5 GB) and the store holds only metadata until rows arrive."""
    from compare.phase import template
    spec = make_spec(RunSpec(Params(), "exact", "wishart", 8), parse_axis("v0=1e-3..10:4096"),
                     parse_axis("mu=0.5..50:4096"), tau=0.25)
    tpl = template(spec)
    assert tpl["test_error"].shape == (4096, 4096, 8, 1)
    assert all(tpl[k].chunks is not None for k in tpl.data_vars)  # dask, never computed
    with open_store(spec, tmp_path) as store:
        assert store.finished() == []
    size = sum(f.stat().st_size for f in (tmp_path / "phase.zarr").rglob("*") if f.is_file())
    assert size < 5 * 2 ** 20
