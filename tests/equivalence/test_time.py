"""Training time: checkpoints, the normalised long-time scheme, the limit (docs/theory.md#training-time-and-flow)."""
import warnings

import numpy as np
import pytest

from dynamics import Params, RunSpec
from dynamics.batch import run_batch, stacked_stats
from dynamics.limit import PATTERN_TIME
from dynamics.data import sample_data
from dynamics.run import simulate, simulate_flow
from fullsim.network import simulate_full_flow

SMALL = Params(n=8, m=4, d=200, v0=0.1, mu_norm=3.0, n_test=200)
KEYS = ("gamma", "rho", "v", "loss")


@pytest.fixture(scope="module")
def flow_reference():
    """The flow at flow time 2 from a tiny step (eta = 1e-5)."""
    p = SMALL.replace(eta=1e-5, steps=200_000)
    return simulate_flow(p, "exact", "wishart", times=[p.steps])


def _rel(a, b):
    return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


def test_gd_and_scheme_approach_the_flow_like_eta(flow_reference):
    """At flow time 2, GD(eta) and the normalised scheme(eta) approach the
    small-step flow with error O(eta): eta / 10 gives >= 5x smaller errors."""
    errs = {}
    for eta in (1e-2, 1e-3):
        q = SMALL.replace(eta=eta, steps=int(round(2 / eta)))
        gd = simulate(q, "exact", "wishart", record_every=q.steps)
        fl = simulate_flow(q, "exact", "wishart", times=[q.steps])
        errs[eta] = [[_rel(getattr(tr, k)[-1], getattr(flow_reference, k)[-1]) for k in KEYS]
                     for tr in (gd, fl)]
    coarse, fine = np.array(errs[1e-2]), np.array(errs[1e-3])
    assert np.all(coarse < 0.05)
    assert np.all(fine < coarse / 5), (coarse, fine)


@pytest.mark.parametrize("v0", [1e-3, 1.0])
def test_flow_reduced_equals_network(v0):
    """Same scheme on the coefficients and on W, V: agreement to <= 1e-8."""
    p = Params(n=10, m=5, d=300, v0=v0, mu_norm=4.0, n_test=200, seed=2)
    real = sample_data(p)
    times = [10, 300, 5000, 2e5]
    red = simulate_flow(p, "exact", "data", times=times, stats=real.stats)
    full = simulate_full_flow(p, times, real=real)
    for k in KEYS:
        a, b = getattr(red, k), getattr(full, k)
        for i in range(len(times)):
            assert _rel(a[i], b[i]) <= 1e-8, (k, times[i])
    assert red.test_error == full.test_error


def test_checkpoints_equal_separate_runs_bit_for_bit():
    p = SMALL.replace(steps=40)
    st = stacked_stats(p, "wishart", [0, 1])
    jobs = (np.array([0, 1, 0, 1]), np.array([1.0, 1.0, 5.0, 5.0]))
    both = run_batch(RunSpec(p, times=[40, 400]), st, *jobs)
    one = run_batch(RunSpec(p, times=[40]), st, *jobs)
    later = run_batch(RunSpec(p.replace(steps=400)), st, *jobs)
    for k in ("test_error", "loss", "train_error", "margin"):
        np.testing.assert_array_equal(both[k][:, 0], one[k][:, 0])
        np.testing.assert_array_equal(both[k][:, 1], later[k][:, 0])


def test_gd_checkpoints_equal_trajectory():
    p = SMALL.replace(steps=60)
    tr = simulate(p, "exact", "wishart", record_every=60)
    st = stacked_stats(p, "wishart", [p.seed])
    res = run_batch(RunSpec(p, times=[60]), st, [0], [p.mu_norm])
    assert res["loss"][0, 0] == tr.loss[-1]
    assert res["test_error"][0, 0] == tr.test_error


def test_balance_drift_shrinks_with_the_step():
    """Balancedness (docs/theory.md#identities) is conserved by the flow; the first-order scheme
    drifts by O(step): a 10x smaller eta gives a smaller drift at equal time."""
    drift = []
    for eta in (1e-2, 1e-3):
        q = SMALL.replace(eta=eta)
        tr = simulate_flow(q, "exact", "wishart", times=[0, 20 / eta])
        b = tr.balance()
        drift.append(np.max(np.abs(b[1] - b[0])) / np.max(np.abs(b[0])))
    assert drift[1] < drift[0] / 3, drift


def test_margin_increases_late_and_limit_is_flagged():
    p = SMALL.replace(v0=1.0)
    times = [1e3, 1e5, 1e8, 1e12, 1e20, np.inf]
    tr = simulate_flow(p, "exact", "wishart", times=times)
    _, _, f = tr.preactivations()
    theta = np.sum(tr.v ** 2, (1, 2, 3)) + tr.w_norm_sq().sum((1, 2))
    margin = np.min(tr.stats.y * f, 1) / theta
    assert np.all(margin > 0)
    assert np.all(np.diff(margin[:-1]) > 0)  # increases toward its limit
    info, lim = tr.extra["flow"], tr.extra["limit"]
    assert lim["certified"] in (0.0, 1.0) and lim["margin_ratio"] <= 1 + 1e-6
    assert lim["t_pattern"] == info["t_final"] == PATTERN_TIME and info["n_steps"] < 20_000


def test_limit_finite_without_warnings_at_large_scale():
    p = Params(v0=10.0, mu_norm=50.0, n=8, m=4, d=200, n_test=200)
    st = stacked_stats(p, "wishart", [0, 1])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        res = run_batch(RunSpec(p, times=[200, np.inf]), st, [0, 1], [50.0, 50.0])
    assert np.all(res["status"][:, 0] == -1)
    for k in ("test_error", "loss", "train_error", "margin"):
        assert np.all(np.isfinite(res[k])), k


def test_flow_reaches_a_million_steps_cheaply():
    p = SMALL.replace(v0=1.0)
    tr = simulate_flow(p, "exact", "wishart", times=[1e6])
    assert tr.extra["flow"]["n_steps"] <= 20_000


def test_cli_simulate_flow_writes_times(tmp_path):
    from click.testing import CliRunner

    from compare.cli import main
    from compare.dataset import read_netcdf

    out = tmp_path / "f.nc"
    args = ["simulate", "--n", "8", "--m", "4", "--d", "200", "--n-test", "200",
            "--integrator", "flow", "--times", "40,4000,inf", "--out", str(out)]
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0, res.output
    assert "n_steps" in res.output
    steps = read_netcdf(out).step.values
    assert steps[0] == 40 and steps[1] == 4000 and np.isinf(steps[2])
    res = CliRunner().invoke(main, ["simulate", "--times", "40"])
    assert res.exit_code == 2 and "--integrator flow" in res.output
