"""Divergence advice, the flow budget, resuming tampered stores, recorded
settings and data files, at tiny sizes.

The flow's step budget is not a divergence (own message and advice, own
count in dyn phase); bootstrap resamples whose crossing failed runs make stay
out of the interval; a resumed store is checked (coordinates, rows flagged
done, corrupt chunks) with one-line errors; outputs record the integrator,
the times and dyn compare --tol; activations are recorded exactly; stale
figures of an earlier run are removed; dyn phase writes its outputs under the
store's lock; --data takes n and d from the file and refuses bad files with
one line naming the cause.
"""
import os

import numpy as np
import pytest
import xarray as xr
import zarr

from dynamics import Params
from dynamics.params import ParamError
from dynamics.spec import RunSpec

B = ["--d", "100", "--n", "10", "--m", "5", "--n-test", "100"]
PHASE0 = ["phase", "--x", "v0=0.01..1:2", "--y", "mu=0.5..20:3", "--seeds", "2", *B, "--quiet"]
PHASE = PHASE0 + ["--steps", "20"]


# ---------------------------------------------------------------- item 4: the step budget
def test_flow_budget_is_not_reported_as_divergence(cli, one_line_error):
    line = one_line_error(cli("simulate", *B, "--eta", "2e-6", "--integrator", "flow",
                              "--times", "200,1e30"))
    assert "step budget" in line and "not decaying" in line, line
    assert "diverged" not in line and "unknown" not in line and "smaller --eta" not in line


def test_divergence_error_texts():
    from dynamics.run import DivergenceError
    p = Params(d=100, n=10, m=5, eta=0.5)
    budget = DivergenceError(1000, 4, p, "exact")
    assert budget.budget and "step budget" in str(budget) and "raise --eta" in str(budget)
    div = DivergenceError(12, 2, p, "exact")
    assert not div.budget and "diverged at step 12" in str(div) and "smaller --eta" in str(div)


def _phase_spec(times=(200.0, 1e30)):
    from compare.phase import make_spec, parse_axis
    p = Params(d=100, n=10, m=5, n_test=100, steps=20)
    return make_spec(RunSpec(p, "exact", "wishart", 2, list(times)), parse_axis("v0=0.01..1:2"),
                     parse_axis("mu=0.5..20:3"), tau=0.25)


def _filled(spec, budget_runs=0, diverged_runs=0):
    """A stored sweep as the store returns it: learning along mu, some runs NaN
    at the last time with status reason 4 (budget) or 2 (divergence)."""
    from compare.phase import template
    ds = template(spec).compute()
    err = np.broadcast_to(np.array([0.5, 0.2, 0.0])[None, :, None, None], ds.test_error.shape)
    for name in ("test_error", "loss", "train_error", "margin"):
        ds[name].values[:] = err
    ds["status"].values[:] = [-1, 0]
    runs = [(0, 0, 0), (1, 0, 1), (0, 1, 0), (1, 1, 1)]
    for (ix, iy, s), reason in zip(runs, [4] * budget_runs + [2] * diverged_runs):
        ds["test_error"].values[ix, iy, s, -1] = np.nan
        ds["status"].values[ix, iy, s] = [10 ** 6, reason]
    return ds


def test_phase_counts_budget_apart_from_divergences(cli, monkeypatch, tmp_path):
    from compare import phase
    spec = _phase_spec()
    ds = phase.assemble(spec, _filled(spec, budget_runs=3, diverged_runs=1))
    assert ds.attrs["n_budget"] == 3 and ds.attrs["n_diverged"] == 1

    def fake_run_phase(spec_, out, overwrite, scheduler, workers, progress, finish=None):
        res = phase.assemble(spec_, _filled(spec_, budget_runs=3))
        finish(res)
        return res
    monkeypatch.setattr(phase, "run_phase", fake_run_phase)
    res = cli(*PHASE0, "--times", "200,1e30", "--out", tmp_path / "o")
    assert res.exit_code == 0, res.output
    assert "3 runs spent the step budget" in res.output and "diverged" not in res.output


# ---------------------------------------------------------------- item 6: bootstrap
class _Curve:
    """A fixed boundary curve: seed 1 diverged at ||mu|| = 16 (chance there)."""

    def __init__(self):
        self.mu = np.array([1.0, 2.0, 4.0, 8.0, 16.0, 32.0])
        test = np.array([[0.5, 0.5, 0.3, 0.0, 0.0, 0.0],
                         [0.5, 0.5, 0.3, 0.0, 0.5, 0.0]])[..., None]
        self.data = {"test_error": test, "loss": test.copy(), "train_error": 0 * test,
                     "margin": 1 + 0 * test}
        self.diverged = [(16.0, 1, 50, 2)]  # (||mu||, seed index, step, reason)

    def evaluate(self, mu, k):
        return None


def test_bootstrap_leaves_out_crossings_made_by_diverged_runs():
    from dynamics.boundary import _boundary_at
    p = Params(d=100, n=10, m=5, steps=200)
    boot = np.array([[0, 0], [0, 1], [1, 0], [1, 1]] * 5)
    res = _boundary_at(_Curve(), 0, 200.0, (0.3,), boot, RunSpec(p, seeds=(0, 1)))
    star = res.mu_star[0.3]
    assert 4.0 <= star <= 8.0  # the seeds' own crossing, not the failure's
    lo, hi = res.ci[0.3]
    assert hi <= 8.0, res.ci  # was ~16-32: the [1, 1] resample's crossing at the failure
    assert any("bootstrap resamples left out" in n for n in res.notes), res.notes


# ---------------------------------------------------------------- item 7: resume checks
@pytest.fixture(scope="module")
def stored(tmp_path_factory):
    """A finished tiny phase store (copied per test)."""
    from click.testing import CliRunner
    from compare.cli import main
    out = tmp_path_factory.mktemp("store") / "o"
    res = CliRunner().invoke(main, [*PHASE, "--out", str(out)])
    assert res.exit_code == 0, res.output
    return out


@pytest.fixture
def store_copy(stored, tmp_path):
    import shutil
    out = tmp_path / "o"
    shutil.copytree(stored, out)
    return out


def _resume(cli, out):
    return cli(*PHASE, "--out", out)


def test_resume_of_an_intact_store_works(cli, store_copy):
    res = _resume(cli, store_copy)
    assert res.exit_code == 0, res.output


def test_resume_refuses_an_edited_coordinate(cli, one_line_error, store_copy):
    arr = zarr.open_group(str(store_copy / "phase.zarr"), mode="r+")["mu"]
    arr[:] = arr[:] * 2
    line = one_line_error(_resume(cli, store_copy))
    assert "coordinate 'mu'" in line and "--overwrite" in line, line


def test_resume_refuses_a_missing_chunk(cli, one_line_error, store_copy):
    import shutil
    shutil.rmtree(store_copy / "phase.zarr" / "test_error" / "c")
    line = one_line_error(_resume(cli, store_copy))
    assert "no data" in line and "'test_error'" in line and "--overwrite" in line, line


def test_resume_refuses_a_corrupt_chunk(cli, one_line_error, store_copy):
    chunk = store_copy / "phase.zarr" / "loss" / "c" / "0" / "0" / "0" / "0"
    assert chunk.is_file()
    chunk.write_bytes(b"\x28\xb5\x2f\xfd garbage" * 10)
    line = one_line_error(_resume(cli, store_copy))
    assert "cannot be read" in line and "'loss'" in line and "--overwrite" in line, line


def test_resume_refuses_rows_flagged_done_without_their_runs(cli, one_line_error, store_copy):
    seeds = zarr.open_group(str(store_copy / "phase.zarr"), mode="r+")["point_seed"]
    seeds[1] = 0  # what a flag set by hand over an unwritten row reads as
    line = one_line_error(_resume(cli, store_copy))
    assert "row 1" in line and "point_seed" in line and "--overwrite" in line, line
    res = cli(*PHASE, "--out", store_copy, "--overwrite")
    assert res.exit_code == 0, res.output


def test_store_flag_set_by_hand_on_an_empty_store(tmp_path):
    from compare.store import StoreError, SweepStore
    tpl = xr.Dataset({"a": (("x", "y"), np.zeros((3, 2)))}, coords={"x": [1, 2, 3]})
    path = tmp_path / "s.zarr"
    SweepStore(path, tpl, "x", {"k": 1}).close()
    zarr.open_group(str(path), mode="r+")["_row_done"][:] = 1
    with pytest.raises(StoreError, match="no data.*--overwrite"):
        SweepStore(path, tpl, "x", {"k": 1})


# ---------------------------------------------------------------- item 13: what was run
def test_outputs_record_integrator_times_and_tol(cli, tmp_path):
    from compare.dataset import read_netcdf
    flow = tmp_path / "flow.nc"
    res = cli("simulate", *B, "--integrator", "flow", "--times", "5,20", "--out", flow)
    assert res.exit_code == 0, res.output
    a = read_netcdf(flow).attrs
    assert a["integrator"] == "flow" and a["times"] == "5,20"
    assert "steps" not in a and "steps" in a["unused_parameters"].split()
    gd = tmp_path / "gd.nc"
    assert cli("simulate", *B, "--steps", "20", "--out", gd).exit_code == 0
    a = read_netcdf(gd).attrs
    assert a["integrator"] == "gd" and a["steps"] == 20 and "times" not in a
    cmp = tmp_path / "cmp.nc"
    res = cli("compare", *B, "--steps", "20", "--tol", "0.001", "--out", cmp)
    assert res.exit_code == 0, res.output
    a = read_netcdf(cmp).attrs
    assert a["tol"] == 0.001 and a["integrator"] == "gd"


def test_solve_records_integrator_and_times(cli, tmp_path):
    from compare.dataset import read_netcdf
    out = tmp_path / "s"
    res = cli("solve", *B, "--steps", "20", "--seeds", "2", "--v0", "0.01", "--times", "10,20",
              "--d-grid", "none", "--n-grid", "none", "--no-verify", "--quiet", "--out", out)
    assert res.exit_code == 0, res.output
    a = read_netcdf(out / "solve.nc").attrs
    assert a["integrator"] == "gd" and a["times"] == "10,20"
    # item 14: a second run into the folder removes the first run's figures
    (out / "error_curve_v0=1.png").write_bytes(b"old")
    res = cli("solve", *B, "--steps", "20", "--seeds", "2", "--v0", "0.01", "--d-grid", "none",
              "--n-grid", "none", "--no-verify", "--quiet", "--out", out)
    assert res.exit_code == 0, res.output
    assert not (out / "error_curve_v0=1.png").exists() and "error_curve_v0=1.png" in res.output
    assert not (out / "mu_star_vs_time.png").exists()  # that run had --times
    assert (out / "error_curve_v0=0.01.png").exists()


# ---------------------------------------------------------------- item 14
def test_activation_recorded_exactly():
    assert Params(activation="relu^2.5000001").activation == "relu^2.5000001"
    assert Params(activation="relu^2.5").activation == "relu^2.5"
    assert Params(activation="relu^3").activation == "relu^3"
    p = Params(activation="relu^2.5000001")
    assert p.activation_spec[1][0] == 2.5000001


def test_phase_writes_its_outputs_under_the_lock(monkeypatch, cli, tmp_path):
    import fcntl

    from compare import dataset
    out = tmp_path / "o"
    seen = []
    real = dataset.write_netcdf

    def write(ds, path):
        with open(str(out / "phase.zarr") + ".lock") as fh:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                seen.append("free")
            except BlockingIOError:
                seen.append("held")
        return real(ds, path)
    monkeypatch.setattr(dataset, "write_netcdf", write)
    res = cli(*PHASE, "--out", out)
    assert res.exit_code == 0, res.output
    assert seen == ["held"]


# ---------------------------------------------------------------- item 15: --data
@pytest.fixture
def npz(tmp_path):
    rng = np.random.default_rng(0)

    def make(**over):
        arrs = dict(x=rng.standard_normal((12, 2, 30)), y=np.tile([1.0, -1.0], 6))
        arrs.update(over)
        arrs = {k: v for k, v in arrs.items() if v is not None}
        path = tmp_path / f"f{len(os.listdir(tmp_path))}.npz"
        np.savez(path, **arrs)
        return path
    return make


GEN = ["simulate", "--level", "general", "--m", "3", "--steps", "5"]


def test_data_sizes_come_from_the_file(cli, one_line_error, npz):
    f = npz()
    res = cli(*GEN, "--data", f)
    assert res.exit_code == 0, res.output
    assert cli(*GEN, "--data", f, "--n", "12", "--d", "30").exit_code == 0
    line = one_line_error(cli(*GEN, "--data", f, "--d", "31"))
    assert "--d" in line and "d = 30" in line, line


@pytest.mark.parametrize("over, words", [
    (dict(x=np.zeros((12, 2, 30), dtype=complex)), ("x", "complex")),
    (dict(y=np.ones(12)), ("y", "one class")),
    (dict(y=np.tile([True, False], 6)), ("y", "bool")),
    (dict(v0=np.float64(-1.0)), ("v0", "> 0")),
    (dict(v0=np.float64(0.0)), ("v0", "> 0")),
    (dict(y_test=np.ones(4)), ("y_test", "x_test")),
    (dict(x_tset=np.zeros((4, 2, 30)), y_test=None), ("'x_tset'",)),
    (dict(Y=np.ones(12)), ("'Y'",)),
])
def test_bad_data_files_are_one_line(over, words, cli, one_line_error, npz):
    line = one_line_error(cli(*GEN, "--data", npz(**over)))
    for w in words:
        assert w in line, line


def test_load_npz_refuses_v0_not_positive(npz):
    from dynamics.datafile import load_npz
    with pytest.raises(ValueError, match="v0 must be > 0"):
        load_npz(npz(v0=np.full((2, 3, 2), -0.5)), Params(d=30, n=12, m=3))
    with pytest.raises(ParamError):
        Params(d=30, n=12, m=3, v0=0.0)


def test_data_path_and_member_problems_are_named(cli, one_line_error, npz, tmp_path):
    import io
    import zipfile
    from numpy.lib import format as npf
    fifo = tmp_path / "fifo.npz"
    os.mkfifo(fifo)
    assert "not a regular file" in one_line_error(cli(*GEN, "--data", fifo))
    loop = tmp_path / "loop.npz"
    os.symlink(loop, loop)
    assert "symlink loop" in one_line_error(cli(*GEN, "--data", loop))
    assert "does not exist" in one_line_error(cli(*GEN, "--data", tmp_path / "none.npz"))
    line = one_line_error(cli(*GEN, "--data", npz(v0=np.array("big"))))
    assert "v0" in line and "real numbers" in line, line
    good = np.load(npz())
    trunc = tmp_path / "trunc.npz"
    with zipfile.ZipFile(trunc, "w") as zf:  # x's header promises more than it holds
        buf = io.BytesIO()
        npf.write_array(buf, good["x"])
        zf.writestr("x.npy", buf.getvalue()[:-100])
        buf = io.BytesIO()
        npf.write_array(buf, good["y"])
        zf.writestr("y.npy", buf.getvalue())
    line = one_line_error(cli(*GEN, "--data", trunc))
    assert "'x'" in line and "truncated or corrupt" in line, line
