"""Beyond the paper: noise models, label noise, momentum, Adam and sign GD."""
import numpy as np
import pytest

from dynamics import ParamError, Params, RunSpec, sample_data, sample_wishart, simulate
from fullsim import simulate_full
from fullsim.layers import forward

NOISES = ["gaussian", "ar1:0.6", "spiked:3,4.0", "rademacher", "student-t:4"]


@pytest.mark.parametrize("noise", NOISES)
@pytest.mark.parametrize("v0", [1e-3, 1.0])
def test_exact_recursion_exact_for_every_noise_model(noise, v0, pair, rel_err):
    p = Params(noise=noise, v0=v0, d=400, seed=5, flip=0.1)
    red, full = pair(p)
    for name in ("gamma", "rho", "v", "loss"):
        assert rel_err(getattr(red, name), getattr(full, name)) <= 1e-10, name
    assert red.test_error == full.test_error


def test_noise_laws_have_the_stated_moments():
    d = 4000
    for noise, lag1, kurt in [("gaussian", 0.0, 3.0), ("ar1:0.6", 0.6, 3.0),
                              ("rademacher", 0.0, 1.0), ("student-t:6", 0.0, 6.0)]:
        xi = sample_data(Params(noise=noise, d=d, n=20, m=1, sigma_p=2.0, seed=1)).xi
        assert np.all(xi[:, 0] == 0.0)  # projected out of mu
        x = xi[:, 1:] / 2.0
        assert abs(x.var() - 1.0) < 0.05, noise
        assert abs(np.mean(x[:, :-1] * x[:, 1:]) - lag1) < 0.03, noise
        assert abs(np.mean(x**4) / x.var() ** 2 - kurt) < 0.6, noise


def test_spiked_noise_has_extra_variance_along_shared_directions():
    real = sample_data(Params(noise="spiked:2,9.0", d=500, n=200, m=1, seed=3))
    U = real.spikes
    np.testing.assert_allclose(U @ U.T, np.eye(2), atol=1e-12)
    assert np.all(U[:, 0] == 0.0)
    along = (real.xi @ U.T).var(axis=0)
    assert np.all(np.abs(along - 10.0) < 3.0)  # 1 + BETA


def test_wishart_refused_for_non_gaussian_noise():
    with pytest.raises(ValueError, match="sampler 'data'"):
        sample_wishart(Params(noise="rademacher"))


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("v0", [1e-3, 0.5])
def test_momentum_recursion_matches_network(seed, v0, pair, rel_err):
    p = Params(optimizer="momentum:0.9", v0=v0, seed=seed, flip=0.1)
    red, full = pair(p)
    for name in ("gamma", "rho", "v", "loss"):
        assert rel_err(getattr(red, name), getattr(full, name)) <= 1e-10, name


def test_momentum_zero_equals_gd(pair):
    p = Params(seed=2, steps=50)
    a, _ = pair(p)
    b, _ = pair(p.replace(optimizer="momentum:0.0"))
    np.testing.assert_array_equal(a.rho, b.rho)


@pytest.mark.parametrize("opt", ["gd", "momentum:0.8"])
def test_out_of_span_norm_zero_for_linear_rules(opt, pair):
    p = Params(optimizer=opt, eta=0.01, d=400, seed=1)
    _, full = pair(p)
    assert full.extra["out_of_span"].max() < 1e-10


@pytest.mark.parametrize("opt", ["adam", "sign"])
def test_per_coordinate_rules_leave_the_span(opt):
    """Adam and sign GD act per coordinate: W - W0 leaves span{mu, xi_i}, which
    is why no reduced level describes them (they run with level full only)."""
    p = Params(optimizer=opt, eta=0.001, d=400, seed=1)
    full = simulate_full(p)
    assert full.extra["out_of_span"][-1] > 0.1
    assert np.all(np.isfinite(full.loss)) and full.loss[-1] < full.loss[0]


@pytest.mark.parametrize("opt", ["adam", "sign", "adam:0.8,0.99,1e-6"])
@pytest.mark.parametrize("level", ["exact", "orthogonal", "fixed-output"])
def test_reduced_levels_refuse_per_coordinate_rules(opt, level):
    p = Params(optimizer=opt, n=8, m=4, d=200, steps=10, n_test=50)
    with pytest.raises(ParamError, match="--level full") as exc:
        simulate(p, level, "wishart")
    assert exc.value.param == "optimizer"


def test_reduced_boundary_solver_refuses_per_coordinate_rules():
    from compare.boundaries import find_boundary
    from dynamics.batch import run_batch, stacked_stats
    from dynamics.boundary import reduced_evaluator
    p = Params(optimizer="sign", n=8, m=4, d=200, steps=10, n_test=50)
    with pytest.raises(ParamError, match="--level full"):
        reduced_evaluator(p, "exact", "wishart", [0, 1])
    with pytest.raises(ParamError, match="--level full"):
        run_batch(RunSpec(p), stacked_stats(p, "wishart", [0]), [0], [1.0])
    with pytest.raises(ParamError, match="--level full"):
        find_boundary(RunSpec(p, "orthogonal", "wishart", 2))


@pytest.mark.parametrize("opt", ["adam", "sign"])
@pytest.mark.parametrize("level", ["exact", "orthogonal", "fixed-output"])
def test_cli_reduced_level_refuses_adam_and_sign(opt, level, cli, tiny_args, one_line_error):
    res = cli("simulate", *tiny_args, "--optimizer", opt, "--level", level)
    line = one_line_error(res, code=2)
    assert "--optimizer" in line and "--level full" in line


@pytest.mark.parametrize("command", [["solve", "--d-grid", "none", "--n-grid", "none",
                                      "--no-verify", "--seeds", "2", "--quiet"],
                                     ["phase", "--x", "v0=0.01..1:2", "--y", "mu=1..10:2",
                                      "--seeds", "1", "--quiet"]])
def test_cli_solve_and_phase_refuse_adam_at_reduced_level(command, cli, tiny_args,
                                                          one_line_error, tmp_path):
    res = cli(*command, *tiny_args, "--optimizer", "adam", "--out", tmp_path / "o")
    line = one_line_error(res, code=2)
    assert "--optimizer" in line and "--level full" in line


@pytest.mark.parametrize("opt", ["adam", "sign"])
def test_cli_full_level_runs_adam_and_sign(opt, cli, tiny_args, tmp_path):
    out = tmp_path / "run.nc"
    res = cli("simulate", *tiny_args, "--optimizer", opt, "--level", "full",
              "--sampler", "data", "--eta", "0.001", "--out", out)
    assert res.exit_code == 0, res.output
    assert "test error" in res.output and "out-of-span" in res.output
    from compare.dataset import read_netcdf
    ds = read_netcdf(out)
    assert ds.attrs["level"] == "full" and ds.attrs["optimizer"].startswith(opt)
    assert float(ds.out_of_span[-1]) > 0.01


def test_noisy_label_test_error_identity():
    """Error against flipped test labels = flip + (1 - 2 flip) * clean error."""
    flip = 0.2
    p = Params(flip=flip, d=400, seed=3, n_test=20000, mu_norm=4.0, v0=0.5)
    real = sample_data(p)
    red = simulate(p, "exact", "data", record_every=p.steps, stats=real.stats)
    full = simulate_full(p, record_every=p.steps, real=real, keep_weights=True)
    yt = real.stats.test_yhat
    fvals = np.concatenate([forward(full.extra["W"], full.extra["V"], real.mu, chunk,
                                    yt[sl], p.c)[2] for sl, chunk in real.test_vectors(p)])
    flips = np.random.default_rng(0).random(p.n_test) < flip
    noisy = np.where(flips, -yt, yt)
    measured = np.mean(noisy * fvals <= 0)
    assert 0.05 < full.test_error < 0.45
    se = np.sqrt(measured * (1 - measured) / p.n_test)
    assert abs(measured - full.test_error_noisy) < 4 * se
    assert red.test_error_noisy == full.test_error_noisy


@pytest.mark.parametrize("args,needle", [
    (["--noise", "ar1:1.5"], "--noise"), (["--noise", "spiked:2"], "--noise"),
    (["--noise", "student-t:1"], "--noise"), (["--optimizer", "adam:1,2"], "--optimizer"),
    (["--optimizer", "momentum:1.2"], "--optimizer"), (["--optimizer", "rmsprop"], "--optimizer"),
    (["--noise", "rademacher"], "--sampler"),
])
def test_bad_noise_and_optimizer_strings(args, needle, cli, one_line_error):
    res = cli("simulate", *args)
    assert res.exit_code == 2 and needle in res.output and "Traceback" not in res.output
    assert needle in one_line_error(res, code=2)
