"""`dyn simulate`, parameter validation and netCDF round trip."""
import os

import numpy as np
import pytest

from compare.dataset import read_netcdf, trajectory_dataset, write_netcdf
from dynamics import ParamError, Params, simulate

BAD = [  # (option, value, API field, API value)
    ("--n", "1", "n", 1),
    ("--d", "1", "d", 1),
    ("--m", "0", "m", 0),
    ("--sigma0", "0", "sigma_0", 0.0),
    ("--sigmap", "-1", "sigma_p", -1.0),
    ("--mu", "0", "mu_norm", 0.0),
    ("--v0", "-0.1", "v0", -0.1),
    ("--eta", "0", "eta", 0.0),
    ("--eta-v", "-1", "eta_v", -1.0),
    ("--steps", "0", "steps", 0),
    ("--c", "0", "c", 0.0),
    ("--flip", "0.5", "flip", 0.5),
    ("--seed", "-3", "seed", -3),
    ("--n-test", "0", "n_test", 0),
    ("--eta", "nan", "eta", float("nan")),
    ("--mu", "1e155", "mu_norm", 1e155),
    ("--sigma0", "1001", "sigma_0", 1001.0),
    ("--v0", "2e6", "v0", 2e6),
    ("--c", "1e7", "c", 1e7),
    ("--n-test", "100000000", "n_test", 10**8),
    ("--steps", "1000000001", "steps", 10**9 + 1),
    ("--n", "2.5", "n", 2.5),
    ("--eta", "inf", "eta", float("inf")),
]


@pytest.mark.parametrize("flag,value,field,api_value", BAD)
def test_bad_parameter_one_line_error(flag, value, field, api_value, cli):
    res = cli("simulate", flag, value)
    assert res.exit_code == 2
    assert "Traceback" not in res.output
    err_lines = [ln for ln in res.output.splitlines() if ln.startswith("Error:")]
    assert len(err_lines) == 1 and flag in err_lines[0], res.output
    with pytest.raises(ValueError, match=field) as exc:
        Params(**{field: api_value})
    assert isinstance(exc.value, ParamError) and exc.value.param == field


@pytest.mark.parametrize("args,needle", [
    (["--level", "bogus"], "--level"),
    (["--sampler", "bogus"], "--sampler"),
    (["--record-every", "0"], "--record-every"),
    (["--d", "50"], "--d"),  # wishart needs d - 1 >= 2m + n
    (["--sampler", "data", "--d", "10"], "--n"),  # data needs n <= d - 1
])
def test_bad_options_one_line_error(args, needle, cli):
    res = cli("simulate", *args)
    assert res.exit_code != 0 and "Traceback" not in res.output
    assert needle in res.output


def test_divergence_reports_step_and_hint(cli, one_line_error):
    res = cli("simulate", "--eta", "1e4", "--v0", "10")
    assert res.exit_code == 1
    line = one_line_error(res, code=1)
    assert "diverged at step" in line and "smaller --eta" in line


def test_api_rejects_bad_level():
    with pytest.raises(ValueError, match="level"):
        simulate(Params(), level="nope")


@pytest.mark.parametrize("level", ["exact", "orthogonal", "fixed-output", "full"])
def test_simulate_writes_dataset(tmp_path, level, cli):
    out = tmp_path / f"{level}.nc"
    args = ["simulate", "--level", level, "--steps", "40", "--d", "300",
            "--record-every", "10", "--out", str(out)]
    if level == "full":
        args += ["--sampler", "data"]
    res = cli(*args)
    assert res.exit_code == 0, res.output
    assert "test error" in res.output and "wall time" in res.output
    ds = read_netcdf(out)
    assert ds.attrs["level"] == level
    assert list(ds.step.values) == [0, 10, 20, 30, 40]
    assert set(ds.dims) == {"step", "j", "r", "i", "p", "hidden_layer", "block"}
    for name in ("gamma", "rho", "v", "loss", "train_error", "test_error", "balance"):
        assert name in ds
    assert Params.from_attrs(ds.attrs) == Params(steps=40, d=300)


def test_same_seed_same_data_for_every_level():
    p = Params(steps=5, d=300, seed=9)
    from fullsim import simulate_full
    runs = [simulate(p, lvl, "data") for lvl in ("exact", "orthogonal", "fixed-output")]
    runs.append(simulate_full(p))
    for tr in runs[1:]:
        np.testing.assert_array_equal(tr.stats.B, runs[0].stats.B)
        np.testing.assert_array_equal(tr.stats.y, runs[0].stats.y)


def test_netcdf_round_trip_lossless(tmp_path):
    p = Params(steps=20, d=300, eta_v=0.02, flip=0.1, seed=4)
    ds = trajectory_dataset(simulate(p, "exact", record_every=3))
    path = write_netcdf(ds, tmp_path / "x.nc")
    back = read_netcdf(path)
    for name in ds.data_vars:
        np.testing.assert_array_equal(back[name].values, ds[name].values)
    assert Params.from_attrs(back.attrs) == p
    assert not [f for f in os.listdir(tmp_path) if "tmp" in f]  # atomic write: no temp file


def test_memory_guard_refuses_oversized_full_run(cli):
    from fullsim import simulate_full
    with pytest.raises(MemoryError, match="GiB"):
        simulate_full(Params(d=10**11))
    res = cli("simulate", "--level", "full", "--sampler", "data", "--d", "100000000000")
    assert res.exit_code == 1 and "GiB" in res.output and "Traceback" not in res.output
