"""`dyn phase`: sweeps are reproducible, resumable and backend-independent."""
import json
import os

import numpy as np
import pytest
from click.testing import CliRunner

from compare.dataset import read_netcdf
from compare.phase import PhaseStore, compute_chunk, make_spec, parse_axis, point_seed, run_phase
from dynamics import Params
from dynamics.cli import main

P = Params(n=8, m=3, d=200, steps=30, n_test=200)
X = ("v0", np.geomspace(1e-2, 1.0, 3))
Y = ("mu", np.geomspace(0.5, 20, 5))


def _spec(**kw):
    p = kw.pop("params", P)
    return make_spec(p, kw.pop("x", X), kw.pop("y", Y), kw.pop("n_seeds", 3),
                     kw.pop("level", "exact"), kw.pop("sampler", "wishart"), 0.25)


def test_parse_axis():
    name, vals = parse_axis("d=500..64000:8")
    assert name == "d" and vals[0] == 500 and vals[-1] == 64000 and vals.dtype.kind == "i"
    for bad in ("q=1..2:3", "v0=2..1:3", "mu=1..2", "v0=-1..2:3", "flip=0.1..0.2:3"):
        with pytest.raises(ValueError):
            parse_axis(bad)


def test_seeds_depend_on_indices_only():
    assert point_seed(0, 1, 2, 3) == point_seed(0, 1, 2, 3)
    assert len({point_seed(0, kx, 0, s) for kx in range(5) for s in range(5)}) == 25
    spec = _spec(x=("d", np.array([200, 300])))
    a, b = compute_chunk(spec, 0), compute_chunk(spec, 1)
    assert not np.array_equal(a["seeds"], b["seeds"])  # d changes the data
    spec = _spec()
    a, b = compute_chunk(spec, 0), compute_chunk(spec, 2)
    np.testing.assert_array_equal(a["seeds"], b["seeds"])  # common along v0 and mu


def test_chunk_matches_single_runs():
    """A sweep cell equals `simulate` at that point and seed."""
    from dynamics import simulate
    spec = _spec()
    chunk = compute_chunk(spec, 1)
    iy, s = 3, 2
    p = P.replace(v0=float(X[1][1]), mu_norm=float(Y[1][iy]), seed=int(chunk["seeds"][iy, s]))
    tr = simulate(p, "exact", "wishart", record_every=p.steps)
    assert chunk["test_error"][iy, s] == tr.test_error
    assert chunk["loss"][iy, s] == tr.loss[-1]


def test_parallel_and_serial_identical():
    spec = _spec()
    a, b = compute_chunk(spec, 0, parallel=True), compute_chunk(spec, 0, parallel=False)
    for k in ("test_error", "loss", "train_error"):
        np.testing.assert_array_equal(a[k], b[k])


def test_resume_after_interrupt(tmp_path, monkeypatch):
    spec = _spec()
    ref = run_phase(spec, tmp_path / "ref")
    import compare.phase as ph
    real = ph.compute_chunk
    calls = []

    def flaky(spec_, ix, parallel=True):
        if ix == 1 and not calls:
            calls.append(ix)
            raise KeyboardInterrupt  # Ctrl-C in the middle of the sweep
        return real(spec_, ix, parallel)

    monkeypatch.setattr(ph, "compute_chunk", flaky)
    with pytest.raises(KeyboardInterrupt):
        run_phase(spec, tmp_path / "run")
    store = PhaseStore(tmp_path / "run", spec)
    assert store.finished() == [0]  # the finished row survived, store consistent
    done = []
    ds = run_phase(spec, tmp_path / "run", progress=done.append)
    assert done[0] == 1  # one row skipped on resume
    for k in ("test_error", "loss", "train_error", "point_seed"):
        np.testing.assert_array_equal(ds[k].values, ref[k].values)


def test_changed_parameters_refused(tmp_path):
    run_phase(_spec(), tmp_path)
    with pytest.raises(ValueError, match="different settings"):
        run_phase(_spec(params=P.replace(eta=0.02)), tmp_path)
    ds = run_phase(_spec(params=P.replace(eta=0.02)), tmp_path, overwrite=True)
    assert json.loads(ds.attrs["spec_json"])["params"]["eta"] == 0.02


def test_dask_local_cluster_equals_local(tmp_path):
    pytest.importorskip("dask.distributed")
    from dask.distributed import Client, LocalCluster
    spec = _spec(n_seeds=2)
    local = run_phase(spec, tmp_path / "local")
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                      dashboard_address=None) as cluster:
        remote = run_phase(spec, tmp_path / "dask", scheduler=cluster.scheduler_address)
    for k in ("test_error", "loss", "train_error", "point_seed"):
        np.testing.assert_array_equal(remote[k].values, local[k].values)


def test_full_level_sweep_small():
    spec = _spec(level="full", sampler="data", n_seeds=1,
                 y=("mu", np.array([1.0, 10.0])), x=("v0", np.array([0.1, 1.0])))
    chunk = compute_chunk(spec, 0)
    exact = compute_chunk({**spec, "level": "exact"}, 0)
    np.testing.assert_allclose(chunk["loss"], exact["loss"], rtol=1e-10)
    np.testing.assert_array_equal(chunk["test_error"], exact["test_error"])


def test_cli_phase_end_to_end(tmp_path):
    out = tmp_path / "ph"
    args = ["phase", "--x", "v0=0.01..1:3", "--y", "mu=0.5..20:6", "--seeds", "2",
            "--n", "8", "--m", "3", "--d", "200", "--steps", "30", "--n-test", "200",
            "--out", str(out), "--quiet"]
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0, res.output
    assert "mu*" in res.output
    ds = read_netcdf(out / "phase.nc")
    assert ds.test_error.shape == (3, 6, 2) and "mu_star" in ds
    assert (out / "phase.png").exists()
    res2 = CliRunner().invoke(main, args[:-3] + ["--eta", "0.02", "--out", str(out)])
    assert res2.exit_code == 1 and "different settings" in res2.output


@pytest.mark.parametrize("args,needle", [
    (["--x", "v0=1..0.1:3"], "--x"), (["--y", "bogus"], "--y"),
    (["--x", "mu=1..2:3", "--y", "mu=1..3:3"], "--y"), (["--seeds", "0"], "--seeds"),
    (["--dask-workers", "0"], "--dask-workers"),
])
def test_cli_phase_bad_options(args, needle, tmp_path):
    res = CliRunner().invoke(main, ["phase", *args, "--out", str(tmp_path)])
    assert res.exit_code == 2 and needle in res.output and "Traceback" not in res.output
