"""`dyn phase --precision float32`: the group kernels in single precision.

float32 must move the boundary by less than its seed interval (the 95%
bootstrap interval over seeds, as ``dyn solve`` reports it), be refused where
it does not exist, and stay independent of threads and grouping.
"""
import numpy as np
import pytest

from compare.boundaries import run_jobs
from compare.dataset import read_netcdf
from compare.phase import make_spec
from dynamics import Params
from dynamics.batch import check_precision, run_batch, stacked_stats
from dynamics.boundary import crossing
from dynamics.params import ParamError
from dynamics.spec import RunSpec

S = 8
MUS = np.geomspace(0.5, 50.0, 32)


def _runs(p, precision, checkpoints, seeds=S, mus=MUS, **kw):
    stacked = stacked_stats(p, "wishart", p.seed + np.arange(seeds))
    job_seed, job_mu = np.tile(np.arange(seeds), mus.size), np.repeat(mus, seeds)
    return run_batch(RunSpec(p, times=checkpoints, precision=precision), stacked, job_seed,
                     job_mu, **kw)


def _seed_interval(test, tau, rng):
    """95% bootstrap interval over seeds of the crossing of the mean curve;
    test (S, M)."""
    boots = [crossing(MUS, test[rng.integers(0, test.shape[0], test.shape[0])].mean(0), tau)
             for _ in range(400)]
    boots = np.asarray(boots)[np.isfinite(boots)]
    return np.percentile(boots, [2.5, 97.5])


@pytest.mark.parametrize("v0", [1e-3, 1.0])
def test_float32_boundary_within_seed_interval(v0):
    p = Params(v0=v0)  # the defaults of dyn phase: n = m = 20, d = 1000, T = 200
    r64, r32 = _runs(p, "float64", [200.0]), _runs(p, "float32", [200.0])
    t64 = r64["test_error"][:, 0].reshape(MUS.size, S).T
    t32 = r32["test_error"][:, 0].reshape(MUS.size, S).T
    np.testing.assert_array_equal(r32["status"], r64["status"])
    assert np.abs(t32.mean(0) - t64.mean(0)).max() <= 0.005  # seed-mean curves
    np.testing.assert_allclose(r32["loss"], r64["loss"], rtol=1e-3)
    np.testing.assert_allclose(r32["margin"], r64["margin"], rtol=1e-3, atol=1e-6)
    for tau in (0.25, 0.1):
        star64, star32 = crossing(MUS, t64.mean(0), tau), crossing(MUS, t32.mean(0), tau)
        lo, hi = _seed_interval(t64, tau, np.random.default_rng(0))
        assert lo <= star32 <= hi, (tau, star32, lo, hi)
        assert abs(star32 / star64 - 1) < 0.01, (tau, star32, star64)


def test_float32_late_flow_close_to_float64():
    """A late time (1e30, reached by the flow) in float32 groups against float64;
    t = inf is the float64 limit program and refuses float32."""
    p = Params(v0=1.0)
    mus = np.geomspace(0.5, 50.0, 12)
    r64 = _runs(p, "float64", [200.0, 1e30], seeds=2, mus=mus)
    r32 = _runs(p, "float32", [200.0, 1e30], seeds=2, mus=mus)
    np.testing.assert_array_equal(r32["status"], r64["status"])
    assert np.all(np.isfinite(r32["test_error"]))
    assert np.abs(r32["test_error"] - r64["test_error"]).max() <= 0.005
    np.testing.assert_allclose(r32["margin"], r64["margin"], rtol=1e-3)
    np.testing.assert_array_equal(r32["info"][:, 0], r64["info"][:, 0])  # same stops


def test_float32_independent_of_threads_and_groups():
    p = Params(v0=0.01, n=10, m=6, n_test=200)
    mus = np.geomspace(0.5, 50.0, 12)
    ref = _runs(p, "float32", [50.0, 1e30], seeds=3, mus=mus)
    for kw in ({"parallel": False}, {"group_size": 5}, {"group_size": 1}):
        res = _runs(p, "float32", [50.0, 1e30], seeds=3, mus=mus, **kw)
        for key in ref:
            np.testing.assert_array_equal(res[key], ref[key], err_msg=f"{key} {kw}")


def test_float32_rows_batched_like_single_rows(tmp_path):
    """dyn phase computes float32 rows in pairs (groups of GROUP_MAX_F32):
    every row equals the row computed alone, and the sweep equals one run row
    by row."""
    from compare.phase import compute_chunk, compute_rows, rows_per_batch, run_phase

    p = Params(n=8, m=3, d=200, steps=30, n_test=200)
    spec = make_spec(RunSpec(p, "exact", "wishart", 3, [30.0, 1e30], precision="float32"),
                     ("v0", np.geomspace(0.01, 1.0, 3)), ("mu", np.geomspace(0.5, 20, 20)),
                     tau=0.25)
    assert rows_per_batch(spec) == 2
    pair = compute_rows(spec, [0, 2])
    for ix, out in zip([0, 2], pair):
        alone = compute_chunk(spec, ix)
        for key in alone:
            np.testing.assert_array_equal(out[key], alone[key], err_msg=f"row {ix} {key}")
    ds = run_phase(spec, tmp_path)  # rows 0, 1 together, then row 2
    np.testing.assert_array_equal(ds.test_error.values[2], pair[1]["test_error"])


def test_float32_refused_outside_the_group_kernels():
    check_precision(Params(), "exact", "float32")
    for params, level in ((Params(depth=2), "exact"), (Params(), "full"),
                          (Params(), "general"), (Params(activation="leaky:0.1"), "exact")):
        with pytest.raises(ParamError) as exc:
            check_precision(params, level, "float32")
        assert exc.value.param == "precision"
    with pytest.raises(ParamError):
        check_precision(Params(), "exact", "float16")
    with pytest.raises(ParamError):
        run_jobs(RunSpec(Params(n=8, m=3), "full", "data", [0], [5.0], precision="float32"),
                 [0], [1.0], [1.0])
    with pytest.raises(ParamError):
        make_spec(RunSpec(Params(), "exact", "wishart", 2, precision="float32"),
                  ("depth", np.array([1, 2])), ("mu", MUS), tau=0.25)


def test_cli_phase_float32(tmp_path, cli):
    args = ("phase", "--n", "8", "--m", "3", "--d", "200", "--steps", "30", "--n-test", "200",
            "--x", "v0=0.01..1:2", "--y", "mu=0.5..20:4", "--seeds", "2", "--quiet")
    res = cli(*args, "--precision", "float32", "--out", tmp_path)
    assert res.exit_code == 0, res.output
    assert "precision=float32" in res.output
    ds = read_netcdf(tmp_path / "phase.nc")
    assert ds.attrs["precision"] == "float32"
    assert np.all(np.isfinite(ds.test_error))
    again = cli(*args, "--out", tmp_path)  # a float64 run does not resume a float32 store
    assert again.exit_code == 1 and "different sweep" in again.output
    bad = cli(*args, "--precision", "float32", "--level", "full", "--out", tmp_path / "x")
    assert bad.exit_code == 2 and "--precision" in bad.output and "Traceback" not in bad.output
    spec = make_spec(RunSpec(Params(), "exact", "wishart", 2), ("v0", np.array([0.1, 1.0])),
                     ("mu", MUS), tau=0.25)
    assert "precision" not in spec  # float64 sweeps keep their fingerprints


def test_float32_underflowed_outputs_are_ties_and_noted():
    """Outputs that underflow to exactly 0 in float32 (v0 sigma0 ~ 1e-60) are
    ties: training and test error 1/2 (not 1), loss log 2, and the boundary
    notes say the outputs underflowed."""
    from dynamics.boundary import zero_output_runs
    p = Params(n=6, m=4, n_test=50, steps=5, v0=1e-30, sigma_0=1e-30)
    res = _runs(p, "float32", [5], seeds=2, mus=np.array([1.0, 3.0]))
    assert np.all(res["test_error"] == 0.5) and np.all(res["train_error"] == 0.5)
    np.testing.assert_allclose(res["loss"], np.log(2.0), rtol=1e-6)
    assert zero_output_runs(res["loss"], res["train_error"], res["test_error"]) == 4
    wide = _runs(p.replace(v0=1.0, sigma_0=0.01), "float32", [5], seeds=2,
                 mus=np.array([1.0, 3.0]))
    assert zero_output_runs(wide["loss"], wide["train_error"], wide["test_error"]) == 0


def test_error_count_counts_ties_half():
    from dynamics.run import error_count
    assert error_count(np.array([-1.0, 0.0, 2.0, -0.0, 3e-300])) == 2.0
    assert error_count(np.zeros(0)) == 0.0


def test_cli_phase_warns_when_outputs_underflow(tmp_path, cli):
    """dyn phase counts runs whose outputs are all 0 (float32 underflow) in
    phase.nc and warns."""
    res = cli("phase", "--n", "6", "--m", "4", "--n-test", "40", "--steps", "5",
              "--precision", "float32", "--v0", "1e-30", "--sigma0", "1e-30",
              "--x", "sigmap=0.5..2:2", "--y", "mu=1..3:2", "--seeds", "2", "--out", tmp_path)
    assert res.exit_code == 0, res.output
    ds = read_netcdf(str(tmp_path / "phase.nc"))
    assert ds.attrs["n_zero_output"] == 8
    assert "every output exactly 0" in res.output
