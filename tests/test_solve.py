"""Boundary solver, `dyn solve` and `dyn compare` end to end (tiny sizes)."""
import numpy as np
import pytest
from click.testing import CliRunner

from compare.dataset import read_netcdf
from compare.metrics import discrepancy
from compare.verify import run_pair
from dynamics import Params
from dynamics.boundary import ErrorCurve, crossing, find_mu_star, fit_exponents
from dynamics.cli import main

TINY = ["--n", "8", "--m", "4", "--d", "200", "--steps", "40", "--n-test", "200"]


def test_crossing_on_synthetic_monotone_curve():
    """Known crossing of a smooth decreasing curve, interpolated in log mu."""
    mu = np.geomspace(0.1, 100, 400)
    err = 0.5 / (1.0 + (mu / 3.0) ** 2)  # = 0.25 exactly at mu = 3
    assert crossing(mu, err, 0.25) == pytest.approx(3.0, rel=1e-3)
    assert crossing(mu, err, 0.1) == pytest.approx(6.0, rel=1e-3)  # 0.5/(1+4) = 0.1
    assert np.isnan(crossing(mu, err, 0.6))


def test_bisection_finds_known_crossing(monkeypatch):
    """find_mu_star on a synthetic curve (kernel replaced by a known law)."""
    def fake_evaluate(self, mus):
        mus = np.atleast_1d(np.asarray(mus, float))
        new = np.unique(mus[~np.isin(mus, self.mu)])
        if new.size:
            errs = 0.5 / (1.0 + (new / 7.0) ** 4)  # 0.25 at mu = 7
            self.mu = np.concatenate([self.mu, new])
            add = np.tile(errs, (self.n_seeds, 1))
            self.test = np.concatenate([self.test, add], axis=1)
            self.loss = np.concatenate([self.loss, 0 * add], axis=1)
            self.train = np.concatenate([self.train, 0 * add], axis=1)
            o = np.argsort(self.mu)
            self.mu, self.test, self.loss, self.train = (self.mu[o], self.test[:, o],
                                                         self.loss[:, o], self.train[:, o])
        return self.test[:, np.searchsorted(self.mu, mus)].mean(axis=0)

    monkeypatch.setattr(ErrorCurve, "evaluate", fake_evaluate)
    res = find_mu_star(Params(n=8, m=4, d=200), n_seeds=2, taus=(0.25, 0.1),
                       stacked={"yhat": np.zeros((2, 8))}, rel_tol=1e-4)
    assert res.star() == pytest.approx(7.0, rel=1e-3)
    assert res.mu_star[0.1] == pytest.approx(7.0 * 4 ** 0.25, rel=1e-3)


def test_real_boundary_is_bracketed_and_monotone():
    p = Params(n=8, m=4, d=200, steps=40, n_test=400, v0=0.5)
    res = find_mu_star(p, n_seeds=4)
    assert np.isfinite(res.star())
    assert res.mu_star[0.4] < res.star() < res.mu_star[0.1]
    lo, hi = res.ci[0.25]
    assert lo <= res.star() <= hi
    mean = res.curve_test.mean(0)
    k = np.searchsorted(res.curve_mu, res.star(), side="right")
    assert mean[k - 1] >= 0.25 > mean[k]


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


def test_dyn_solve_end_to_end(tmp_path):
    out = tmp_path / "out"
    res = CliRunner().invoke(main, ["solve", "--v0", "0.01", "--v0", "1", *TINY,
                                    "--seeds", "3", "--d-grid", "150,200,400",
                                    "--n-grid", "6,8", "--verify-seeds", "2",
                                    "--out", str(out), "--quiet"])
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
    pngs = sorted(p.name for p in out.glob("*.png"))
    assert "mu_star_vs_d_v0=0.01.png" in pngs and "verify_overlay_v0=1.png" in pngs


def test_dyn_compare_end_to_end(tmp_path):
    out = tmp_path / "cmp.nc"
    res = CliRunner().invoke(main, ["compare", "--level", "orthogonal", *TINY,
                                    "--out", str(out), "--plots", str(tmp_path)])
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
def test_bad_solve_compare_options(args, needle):
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 2, res.output
    assert needle in res.output and "Traceback" not in res.output
