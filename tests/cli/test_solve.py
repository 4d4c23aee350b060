"""Boundary solver, `dyn solve` and `dyn compare` end to end (tiny sizes)."""
import numpy as np
import pytest

from compare.boundaries import find_boundaries_at, find_boundary
from compare.dataset import read_netcdf
from compare.metrics import discrepancy
from compare.verify import run_pair
from dynamics import Params, RunSpec
from dynamics.batch import RESULTS, run_batch, seed_list, stacked_stats
from dynamics.boundary import (crossing, find_boundaries, find_mu_star, fit_exponents,
                               reduced_evaluator)

TINY = ["--n", "8", "--m", "4", "--d", "200", "--steps", "40", "--n-test", "200"]


def test_crossing_on_synthetic_monotone_curve():
    """Known crossing of a smooth decreasing curve, interpolated in log mu."""
    mu = np.geomspace(0.1, 100, 400)
    err = 0.5 / (1.0 + (mu / 3.0) ** 2)  # = 0.25 exactly at mu = 3
    assert crossing(mu, err, 0.25) == pytest.approx(3.0, rel=1e-3)
    assert crossing(mu, err, 0.1) == pytest.approx(6.0, rel=1e-3)  # 0.5/(1+4) = 0.1
    assert np.isnan(crossing(mu, err, 0.6))


def synthetic_evaluator(law, n_seeds, n_times=1, calls=None):
    """Evaluator with a known mean test error law(mu) (same for every seed and time)."""
    def evaluate(mus, upto=None):
        mus = np.asarray(mus, float)
        if calls is not None:
            calls.append(mus.copy())
        err = np.broadcast_to(law(mus)[None, :, None], (n_seeds, mus.size, n_times))
        out = {k: np.zeros((n_seeds, mus.size, n_times)) for k in RESULTS}
        out["test_error"] = err.copy()
        out["status"] = np.tile(np.array([-1, 0]), (n_seeds, mus.size, 1))
        return out
    return evaluate


def test_bisection_finds_known_crossing():
    """find_mu_star on a synthetic evaluator (a known law instead of the kernel)."""
    calls = []
    law = lambda mu: 0.5 / (1.0 + (mu / 7.0) ** 4)  # noqa: E731  (0.25 at mu = 7)
    res = find_mu_star(synthetic_evaluator(law, 2, calls=calls),
                       RunSpec(Params(n=8, m=4, d=200), seeds=(0, 1)), taus=(0.25, 0.1),
                       rel_tol=1e-4)
    assert res.star() == pytest.approx(7.0, rel=1e-3)
    assert res.mu_star[0.1] == pytest.approx(7.0 * 4 ** 0.25, rel=1e-3)
    assert res.n_diverged == 0 and res.fitted
    # every ||mu|| is evaluated once (the curve caches results)
    seen = np.concatenate(calls)
    assert seen.size == np.unique(seen).size


def test_find_boundaries_per_time_on_synthetic_evaluator():
    """K checkpoint times: each time gets its own crossing from the same calls."""
    stars = np.array([2.0, 5.0, 11.0])

    def evaluate(mus, upto=None):
        mus = np.asarray(mus, float)
        err = 0.5 / (1.0 + (mus[None, :] / stars[:, None]) ** 4)   # (K, M)
        out = {k: np.zeros((3, mus.size, 3)) for k in RESULTS}
        out["test_error"] = np.broadcast_to(err.T[None], (3, mus.size, 3)).copy()
        out["status"] = np.tile(np.array([-1, 0]), (3, mus.size, 1))
        return out

    res = find_boundaries(evaluate, RunSpec(Params(n=8, m=4, d=200), seeds=(0, 1, 2),
                                            times=[10, 20, 40]), taus=(0.25,), rel_tol=1e-4)
    assert [b.steps for b in res] == [10, 20, 40]
    for b, s in zip(res, stars):
        assert b.star() == pytest.approx(s, rel=1e-3)


def _mu_star_with_divergences(diverges):
    """find_mu_star on the law 0.5/(1 + (mu/7)^4), seed 1 "diverging" (NaN
    results, status (3, 2)) where ``diverges(mu)`` holds."""
    law = lambda mu: 0.5 / (1.0 + (mu / 7.0) ** 4)  # noqa: E731
    base = synthetic_evaluator(law, 2)

    def evaluate(mus, upto=None):
        out = base(mus)
        bad = diverges(np.asarray(mus))
        for k in ("test_error", "loss", "train_error", "margin"):
            out[k][1, bad] = np.nan
        out["status"][1, bad] = (3, 2)
        return out

    return find_mu_star(evaluate, RunSpec(Params(n=8, m=4, d=200), seeds=(0, 1)),
                        taus=(0.25,), rel_tol=1e-3, guess=30.0)


def test_diverged_runs_count_as_chance():
    """NaN results with a status count as test error 0.5 and are reported."""
    res = _mu_star_with_divergences(lambda mu: mu > 100.0)  # far from mu* = 7
    assert res.star() == pytest.approx(7.0, rel=1e-2)
    assert res.n_diverged > 0
    assert any("diverged" in note for note in res.notes)
    big = res.curve_mu > 100.0
    assert big.any() and np.all(res.curve_test[1, big] == 0.5)


def test_crossing_made_by_diverged_runs_is_not_reported():
    """Runs counted as chance at the ||mu|| bracketing the crossing: mu* is NaN
    with a note (a number there would be an artifact of the divergence)."""
    res = _mu_star_with_divergences(lambda mu: (mu > 3.0) & (mu < 15.0))
    assert np.isnan(res.star()) and np.isnan(res.ci[0.25]).all()
    assert any("mu* not reported" in note for note in res.notes)


@pytest.mark.parametrize("api", ["evaluator", "convenience"])
def test_real_boundary_is_bracketed_and_monotone(api):
    p = Params(n=8, m=4, d=200, steps=40, n_test=400, v0=0.5)
    if api == "evaluator":
        seeds = seed_list(p, 4)
        res = find_mu_star(reduced_evaluator(p, "exact", "wishart", seeds),
                           RunSpec(p, seeds=tuple(seeds)))
    else:
        res = find_boundary(RunSpec(p, "exact", "wishart", 4), taus=(0.25, 0.1, 0.4))
    assert np.isfinite(res.star())
    assert res.mu_star[0.4] < res.star() < res.mu_star[0.1]
    lo, hi = res.ci[0.25]
    assert lo <= res.star() <= hi
    mean = res.curve_test.mean(0)
    k = np.searchsorted(res.curve_mu, res.star(), side="right")
    assert mean[k - 1] >= 0.25 > mean[k]


def test_evaluator_and_convenience_agree():
    """compare.boundaries.find_boundary == find_mu_star on reduced_evaluator."""
    p = Params(n=8, m=4, d=200, steps=30, n_test=200, v0=0.2)
    seeds = seed_list(p, 3)
    a = find_mu_star(reduced_evaluator(p, "exact", "wishart", seeds), RunSpec(p, seeds=3),
                     taus=(0.25,))
    b = find_boundary(RunSpec(p, "exact", "wishart", 3), taus=(0.25,))
    assert a.star() == b.star()
    np.testing.assert_array_equal(a.curve_mu, b.curve_mu)
    at = find_boundaries_at(RunSpec(p, "exact", "wishart", 3, [15, 30]), taus=(0.25,))
    assert at[-1].star() == pytest.approx(b.star(), rel=0.02)  # bisections may differ


def test_run_batch_matches_simulate():
    """One job of the batch kernel == the recorded run at that point."""
    from dynamics import simulate
    p = Params(n=8, m=4, d=200, steps=30, n_test=200)
    seeds = [3, 4]
    stacked = stacked_stats(p, "wishart", seeds)
    res = run_batch(RunSpec(p, times=[10, 30]), stacked, [0, 1, 1], [1.0, 2.0, 5.0],
                    [0.1, 0.1, 0.5])
    assert res["test_error"].shape == (3, 2) and res["status"].shape == (3, 2)
    assert np.all(res["status"][:, 0] == -1)
    q = p.replace(seed=4, mu_norm=5.0, v0=0.5)
    tr = simulate(q, "exact", "wishart", record_every=10)
    np.testing.assert_array_equal(res["loss"][2], tr.loss[[1, 3]])
    np.testing.assert_array_equal(res["train_error"][2], tr.train_error[[1, 3]])
    assert res["test_error"][2, -1] == tr.test_error
    serial = run_batch(RunSpec(p, times=[10, 30]), stacked, [0, 1, 1], [1.0, 2.0, 5.0],
                       [0.1, 0.1, 0.5], parallel=False)
    for k in RESULTS:
        np.testing.assert_array_equal(serial[k], res[k])


def test_full_evaluator_matches_reduced_evaluator():
    """The network as an evaluator: same layout, same numbers as level exact."""
    from fullsim import full_evaluator
    p = Params(n=8, m=4, d=200, steps=20, n_test=200, v0=0.3)
    seeds = [0, 1]
    mus = np.array([1.0, 4.0])
    full = full_evaluator(p, seeds, checkpoints=[10, 20])(mus)
    red = reduced_evaluator(p, "exact", "data", seeds, checkpoints=[10, 20])(mus)
    assert full["test_error"].shape == (2, 2, 2) and full["status"].shape == (2, 2, 2)
    np.testing.assert_allclose(full["loss"], red["loss"], rtol=1e-10)
    np.testing.assert_array_equal(full["train_error"], red["train_error"])
    np.testing.assert_allclose(full["test_error"], red["test_error"], atol=2.0 / p.n_test)
    np.testing.assert_allclose(full["margin"], red["margin"], rtol=1e-8)


def test_fit_exponents_recovers_power_law():
    d = np.array([500, 1000, 2000, 4000, 1000, 1000, 1000])
    n = np.array([20, 20, 20, 20, 10, 40, 80])
    mu = 2.0 * d**0.3 * n**-0.2 * np.exp(1e-3 * np.sin(np.arange(7)))
    f = fit_exponents(d, n, mu)
    assert f["a"] == pytest.approx(0.3, abs=5e-3) and f["b"] == pytest.approx(-0.2, abs=5e-3)
    assert f["a_ci"][0] < 0.3 < f["a_ci"][1]


def test_metrics_zero_for_exact_nonzero_for_orthogonal():
    p = Params(d=150, steps=100, mu_norm=3.0, v0=0.1, seed=2)
    ex = discrepancy(*run_pair(p, "exact"))
    og = discrepancy(*run_pair(p, "orthogonal"))
    assert float(ex.max_rel_err.max()) < 1e-10
    assert float(ex.activation_agreement.min()) == 1.0
    assert float(og.max_rel_err.sel(variable="rho")) > 1e-2
    assert float(og.max_rel_err.sel(variable="loss")) > 1e-4


def test_dyn_solve_end_to_end(tmp_path, cli):
    out = tmp_path / "out"
    res = cli("solve", "--v0", "0.01", "--v0", "1", *TINY, "--seeds", "3",
              "--d-grid", "150,200,400", "--n-grid", "6,8", "--verify-seeds", "2",
              "--out", out, "--quiet")
    assert res.exit_code == 0, res.output
    assert "||mu||*" in res.output and "exponents" in res.output
    assert "verification" in res.output
    ds = read_netcdf(out / "solve.nc")
    assert ds.sizes["v0"] == 2 and ds.sizes["d_grid"] == 3 and ds.sizes["n_grid"] == 2
    assert np.all(np.isfinite(ds.mu_star.sel(tau=0.25)))
    # exact level vs full network on the same data: identical test errors
    np.testing.assert_allclose(ds.test_error_reduced, ds.test_error_full, atol=0.011)
    assert float(ds.max_rel_err.max()) < 1e-10
    assert ds.attrs["level"] == "exact" and Params.from_attrs(ds.attrs).n == 8
    # v0 and ||mu|| vary along dimensions: no flat attribute, listed as swept
    assert "mu_norm" not in ds.attrs and "v0" not in ds.attrs
    assert set(ds.attrs["swept_parameters"].split()) == {"mu_norm", "v0"}
    pngs = sorted(p.name for p in out.glob("*.png"))
    assert "mu_star_vs_d_v0=0.01.png" in pngs and "verify_overlay_v0=1.png" in pngs


def test_dyn_compare_end_to_end(tmp_path, cli):
    out = tmp_path / "cmp.nc"
    res = cli("compare", "--level", "orthogonal", *TINY, "--out", out, "--plots", tmp_path)
    assert res.exit_code == 0, res.output
    assert "max rel err" in res.output and "activation agreement" in res.output
    ds = read_netcdf(out)
    assert list(ds.model.values) == ["reduced", "full"]
    assert "balance" in ds and "max_rel_err" in ds
    assert (tmp_path / "overlay_orthogonal.png").exists()


@pytest.mark.parametrize("args,needle", [
    (["solve", "--seeds", "0"], "--seeds"),
    (["solve", "--threshold", "0.7"], "--threshold"),
    (["solve", "--v0", "-1"], "--v0"),
    (["solve", "--d-grid", "10,abc"], "--d-grid"),
    (["solve", "--verify-seeds", "0"], "--verify-seeds"),
    (["compare", "--tol", "0"], "--tol"),
    (["compare", "--level", "full"], "--level"),
])
def test_bad_solve_compare_options(args, needle, cli):
    res = cli(*args)
    assert res.exit_code == 2, res.output
    assert needle in res.output and "Traceback" not in res.output
