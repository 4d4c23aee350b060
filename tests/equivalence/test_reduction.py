"""The exact recursion reproduces the weight-space network (docs/theory.md#exact-recursion, 7)."""
import numpy as np
import pytest

from dynamics import Params, sample_data, simulate
from fullsim import gradients, simulate_full

TOL = 1e-10


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("flip", [0.0, 0.1])
@pytest.mark.parametrize("v0", [1e-3, 1e-1, 1.0])
def test_exact_matches_full_network(v0, flip, seed, pair, rel_err):
    p = Params(v0=v0, flip=flip, seed=seed, steps=200)
    red, full = pair(p)
    for name in ("gamma", "rho", "v", "loss"):
        err = rel_err(getattr(red, name), getattr(full, name))
        assert err <= TOL, f"{name}: relative error {err:.2e}"
    np.testing.assert_array_equal(red.train_error, full.train_error)
    # same real test vectors: identical predictions up to round-off at ties
    assert abs(red.test_error - full.test_error) <= 2.0 / p.n_test


def test_flip_actually_flips_labels():
    real = sample_data(Params(flip=0.3, n=200, d=400, m=2, seed=5))
    frac = np.mean(real.stats.y != real.stats.yhat)
    assert 0.15 < frac < 0.45


@pytest.mark.parametrize("seed", [0, 3])
def test_fixed_output_matches_frozen_network(seed, pair, rel_err):
    p = Params(v0=0.5, seed=seed, steps=100, mu_norm=2.0)
    red, full = pair(p, level="fixed-output")
    assert np.all(red.v == p.v0)
    assert np.all(full.v == p.v0)  # run_pair froze the network's output layer
    for name in ("gamma", "rho", "loss"):
        assert rel_err(getattr(red, name), getattr(full, name)) <= TOL


@pytest.mark.parametrize("v0", [1e-3, 1.0])
def test_reconstruction_of_W(v0, rel_err):
    """W = W0 + j gamma mu/||mu||^2 + sum_i rho_i xi_i/||xi_i||^2 (round-off)."""
    p = Params(v0=v0, seed=7, steps=150)
    real = sample_data(p)
    red = simulate(p, "exact", "data", stats=real.stats)
    full = simulate_full(p, real=real, keep_weights=True)
    js = np.array([1.0, -1.0])[:, None, None]
    W = (real.W0 + js * red.gamma[-1][..., None] * real.mu / p.mu_norm**2
         + np.einsum("jri,id->jrd", red.rho[-1] / real.stats.N, real.xi))
    assert rel_err(W, full.extra["W"]) <= 1e-12
    assert rel_err(W - real.W0, full.extra["W"] - real.W0) <= 1e-10
    assert rel_err(red.v[-1], full.extra["V"]) <= TOL


def test_balancedness_per_step_full_network():
    """b(t+1) - b(t) = eta^2 (sum_p g_v^2 - ||g_w||^2), b = sum_p v^2 - ||w||^2."""
    p = Params(v0=0.05, seed=2, steps=30, d=300)
    real = sample_data(p)
    W, V = real.W0.copy(), np.full((2, p.m, 2), p.v0)
    st = real.stats
    for _ in range(p.steps):
        _, _, _, gW, gV = gradients(W, V, real.mu, real.xi, st.yhat, st.y, p.c)
        b0 = np.sum(V**2, -1) - np.sum(W**2, -1)
        W, V = W - p.eta * gW, V - p.eta * gV
        b1 = np.sum(V**2, -1) - np.sum(W**2, -1)
        predicted = p.eta**2 * (np.sum(gV**2, -1) - np.sum(gW**2, -1))
        assert np.max(np.abs((b1 - b0) - predicted)) <= 1e-14 * np.max(np.abs(b0))


@pytest.mark.parametrize("v0", [1e-3, 0.3])
def test_balancedness_per_step_reduced(v0):
    """Same identity from the reduced coefficients (d-free sampler)."""
    p = Params(v0=v0, seed=4, steps=100)
    tr = simulate(p, "exact", "wishart")
    st = tr.stats
    b = tr.balance()
    dv = np.diff(tr.v, axis=0)
    dgam = np.diff(tr.gamma, axis=0)
    drh = np.diff(tr.rho, axis=0) / st.N
    dw2 = dgam**2 / p.mu_norm**2 + np.einsum("tjrk,kl,tjrl->tjr", drh, st.gram, drh)
    predicted = np.sum(dv**2, -1) - dw2  # = eta^2 (g_v^2 - g_w^2)
    scale = np.max(np.abs(b))
    assert np.max(np.abs(np.diff(b, axis=0) - predicted)) <= 1e-13 * scale
    # and the identity is not trivially zero: balance really moves
    assert np.max(np.abs(b[-1] - b[0])) > 1e-8 * scale


def test_reparametrisation_of_c(rel_err):
    """(c, v0, eta_v) trains exactly like (1, c v0, c^2 eta_v): same f, v' = c v."""
    p = Params(c=0.05, v0=0.4, eta_v=0.02, seed=1, steps=120)
    q = p.replace(c=1.0, v0=p.c * p.v0, eta_v=p.c**2 * p.eta_v)
    a, b = simulate(p, "exact"), simulate(q, "exact")
    assert rel_err(a.gamma, b.gamma) <= 1e-12
    assert rel_err(a.rho, b.rho) <= 1e-12
    assert rel_err(p.c * a.v, b.v) <= 1e-12
    assert rel_err(a.loss, b.loss) <= 1e-12
    assert a.test_error == b.test_error


def test_longer_run_has_same_beginning():
    p = Params(seed=3, steps=60)
    a = simulate(p, "exact")
    b = simulate(p.replace(steps=61), "exact")
    np.testing.assert_array_equal(a.rho, b.rho[:-1])
    np.testing.assert_array_equal(a.v, b.v[:-1])
    np.testing.assert_array_equal(a.loss, b.loss[:-1])


def test_record_every_subsamples_the_same_trajectory():
    p = Params(seed=3, steps=50)
    a = simulate(p, "exact", record_every=1)
    b = simulate(p, "exact", record_every=7)
    np.testing.assert_array_equal(b.steps, [0, 7, 14, 21, 28, 35, 42, 49, 50])
    np.testing.assert_array_equal(a.rho[b.steps], b.rho)
    assert a.test_error == b.test_error


@pytest.mark.parametrize("level", ["exact", "orthogonal", "fixed-output"])
def test_advance_continues_the_same_run(level):
    """advance(state, k) twice == one recorded run of 2k steps, bit for bit."""
    p = Params(seed=5, steps=40, v0=0.2)
    st = sample_data(p).stats
    ref = simulate(p, level, "data", stats=st)
    gamma, rho, v = np.zeros((2, p.m)), np.zeros((2, p.m, p.n)), np.full((2, p.m, 2), p.v0)
    from dynamics.run import advance
    advance(p, level, st, gamma, rho, v, 25)
    np.testing.assert_array_equal(rho, ref.rho[25])
    advance(p, level, st, gamma, rho, v, 15)
    np.testing.assert_array_equal(gamma, ref.gamma[-1])
    np.testing.assert_array_equal(rho, ref.rho[-1])
    np.testing.assert_array_equal(v, ref.v[-1])


def test_divergence_error_names_step_and_hint():
    from dynamics.run import DivergenceError
    with pytest.raises(DivergenceError) as exc:
        simulate(Params(eta=100.0, n=8, m=4, d=200, steps=30, n_test=200))
    assert exc.value.step >= 1 and f"step {exc.value.step}" in str(exc.value)
    assert "--eta" in str(exc.value)
    full = simulate_full(Params(eta=100.0, n=8, m=4, d=200, steps=30, n_test=200),
                         raise_on_divergence=False)
    step, reason = full.extra["status"]
    assert step >= 1 and reason in (1, 2, 3)
    assert np.isnan(full.test_error)


@pytest.mark.parametrize("level,activation,n,m,v0,flip,seed", [
    ("exact", "relu", 20, 20, 1.0, 0.0, 0),
    ("exact", "relu", 7, 3, 1e-3, 0.2, 1),
    ("exact", "relu", 13, 5, 0.3, 0.1, 2),
    ("orthogonal", "relu", 9, 4, 0.5, 0.0, 3),
    ("fixed-output", "relu", 11, 6, 0.7, 0.0, 4),
    ("exact", "leaky:0.1", 10, 3, 0.5, 0.1, 5),
    ("exact", "relu^3", 8, 5, 1.0, 0.0, 6),
])
def test_gd_loop_equals_generic_step_bit_for_bit(level, activation, n, m, v0, flip, seed):
    """The filter-transposed depth-1 GD loop of the sweeps (kernels.loop1)
    forms the numbers of _forward + _gd_step (the recording path of simulate)
    bit for bit: state, outputs and time, for every level, activation, label
    flips and sizes that are not multiples of the vector width."""
    from dynamics.kernels import loop1, primitives, step, types
    from dynamics.batch import stacked_stats
    from dynamics.run import kernel_config
    p = Params(n=n, m=m, v0=v0, flip=flip, seed=seed, activation=activation, mu_norm=3.0)
    cfg = kernel_config(p, level)
    st = types._job_stats(stacked_stats(p, "wishart", [seed]), 0)
    A = p.mu_norm * st.w0_e1
    steps = 60

    def state():
        return np.zeros((2, m)), np.zeros((2, m, n)), np.zeros((0,)), np.full((2, m, 2), v0)

    g1, r1, _, v1 = state()
    w1 = types._work(m, n, 1)
    reason1, t1 = loop1._gd_loop_depth1(A, p.mu_norm ** 2, g1, r1, v1, st, cfg, w1, 0.0,
                                        float(steps), cfg.general)
    g2, r2, U2, v2 = state()
    U2 = None  # depth 1: the kernels take no upper layers
    w2 = types._work(m, n, 1)
    for _ in range(steps):
        step._forward(A, g2, r2, U2, v2, st, cfg, w2)
        assert primitives._lprime(w2.f, st.y, w2.lp) == 0
        assert step._gd_step(A, p.mu_norm ** 2, g2, r2, U2, v2, st, cfg, w2, None) == 0
    step._forward(A, g2, r2, U2, v2, st, cfg, w2)
    primitives._lprime(w2.f, st.y, w2.lp)
    assert (reason1, t1) == (0, float(steps))
    assert np.abs(r1).max() > 0.0 and np.abs(g1).max() > 0.0  # the state moved
    for a, b in ((g1, g2), (r1, r2), (v1, v2), (w1.f, w2.f), (w1.lp, w2.lp), (w1.z, w2.z),
                 (w1.a, w2.a)):
        np.testing.assert_array_equal(a, b)
