"""Beyond the paper: noise models, label noise, momentum, Adam and sign GD."""
import numpy as np
import pytest
from click.testing import CliRunner

from conftest import reduced_and_full, rel_err
from dynamics import Params, sample_data, sample_wishart
from dynamics.cli import main
from fullsim.network import forward

NOISES = ["gaussian", "ar1:0.6", "spiked:3,4.0", "rademacher", "student-t:4"]


@pytest.mark.parametrize("noise", NOISES)
@pytest.mark.parametrize("v0", [1e-3, 1.0])
def test_exact_recursion_exact_for_every_noise_model(noise, v0):
    p = Params(noise=noise, v0=v0, d=400, seed=5, flip=0.1)
    _, red, full = reduced_and_full(p)
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
def test_momentum_recursion_matches_network(seed, v0):
    p = Params(optimizer="momentum:0.9", v0=v0, seed=seed, flip=0.1)
    _, red, full = reduced_and_full(p)
    for name in ("gamma", "rho", "v", "loss"):
        assert rel_err(getattr(red, name), getattr(full, name)) <= 1e-10, name


def test_momentum_zero_equals_gd():
    p = Params(seed=2, steps=50)
    _, a, _ = reduced_and_full(p)
    _, b, _ = reduced_and_full(p.replace(optimizer="momentum:0.0"))
    np.testing.assert_array_equal(a.rho, b.rho)


@pytest.mark.parametrize("opt,positive", [("gd", False), ("momentum:0.8", False),
                                          ("adam", True), ("sign", True)])
def test_out_of_span_norm(opt, positive):
    p = Params(optimizer=opt, eta=0.01 if not positive else 0.001, d=400, seed=1)
    _, red, full = reduced_and_full(p)
    span = full.extra["out_of_span"]
    if positive:
        assert span[-1] > 0.1  # per-coordinate rules leave span{mu, xi_i}
        assert rel_err(red.loss, full.loss) > 1e-3  # and the reduction drifts
    else:
        assert span.max() < 1e-10


def test_noisy_label_test_error_identity():
    """Error against flipped test labels = flip + (1 - 2 flip) * clean error."""
    flip = 0.2
    p = Params(flip=flip, d=400, seed=3, n_test=20000, mu_norm=4.0, v0=0.5)
    real, red, full = reduced_and_full(p, record_every=p.steps, keep_weights=True)
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
def test_bad_noise_and_optimizer_strings(args, needle):
    res = CliRunner().invoke(main, ["simulate", *args])
    assert res.exit_code == 2 and needle in res.output and "Traceback" not in res.output
