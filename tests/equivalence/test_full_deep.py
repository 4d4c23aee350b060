"""The weight-space network at depth L (docs/theory.md#depth) and its recording path."""
import numpy as np
import pytest

from dynamics import Params, sample_data
from fullsim import network
from fullsim.layers import forward_deep, gradients, gradients_deep
from fullsim.network import (
    SpanProjector,
    clean_test_error,
    coefficients,
    normalised_margin,
    out_of_span,
    simulate_full,
    simulate_full_flow,
)

SMALL = {"n": 6, "d": 60, "m": 4, "steps": 40, "n_test": 300, "mu_norm": 3.0, "v0": 0.3,
         "eta": 0.05}


def random_state(p, seed=0, spread=0.3):
    """A generic (W, U, V) of depth p.depth (no pre-activation near a kink)."""
    rng = np.random.default_rng(seed)
    real = sample_data(p)
    W = real.W0 + spread * rng.standard_normal(real.W0.shape) / np.sqrt(p.d)
    U = real.stats.U0 + 0.1 * rng.standard_normal(real.stats.U0.shape)
    V = p.v0 + 0.2 * rng.standard_normal((2, p.m, 2))
    return real, W, U, V


def grads(real, W, U, V, c):
    st = real.stats
    return gradients_deep(W, U, V, real.mu, real.xi, st.yhat, st.y, c)


# ---------------------------------------------------------------- gradients
@pytest.mark.parametrize("depth", [2, 3])
def test_deep_gradients_match_finite_differences(depth):
    p = Params(d=30, m=3, n=4, depth=depth, mu_norm=2.0, sigma_0=0.3, v0=0.7, c=0.8, seed=3)
    real, W, U, V = random_state(p)
    _, _, _, gW, gU, gV = grads(real, W, U, V, p.c)
    h = 1e-6
    for name, x, g in (("W", W, gW), ("U", U, gU), ("V", V, gV)):
        fd = np.empty_like(x)
        for idx in np.ndindex(x.shape):
            keep = x[idx]
            x[idx] = keep + h
            lp = grads(real, W, U, V, p.c)[0]
            x[idx] = keep - h
            lm = grads(real, W, U, V, p.c)[0]
            x[idx] = keep
            fd[idx] = (lp - lm) / (2 * h)
        err = np.max(np.abs(fd - g)) / np.max(np.abs(g))
        assert np.max(np.abs(g)) > 1e-4, name  # a non-trivial gradient
        assert err < 1e-6, f"{name}: finite-difference relative error {err:.2e}"


def test_deep_formulas_at_depth_one_are_the_paper_network(rel_err):
    """gradients_deep with no upper layer equals gradients (round-off)."""
    p = Params(d=50, m=3, n=5, mu_norm=2.0, sigma_0=0.3, v0=0.5, seed=1)
    real, W, _, V = random_state(p)
    st, U = real.stats, np.zeros((0, 2, p.m, p.m))
    old = gradients(W, V, real.mu, real.xi, st.yhat, st.y, p.c)
    new = gradients_deep(W, U, V, real.mu, real.xi, st.yhat, st.y, p.c)
    assert abs(old[0] - new[0]) <= 1e-15 and old[1] == new[1]
    for a, b in ((old[2], new[2]), (old[3], new[3]), (old[4], new[5])):
        assert rel_err(b, a) <= 1e-14


# ---------------------------------------------------------------- depth 1: regression
# Stored regression values of simulate_full(REF, keep_weights=True,
# checkpoints=[0, 25, 50]) at depth 1.
REF = Params(n=8, d=200, m=4, steps=50, n_test=200, mu_norm=3.0, v0=0.1, seed=0)
REF_LOSS = [0.6992795499899449, 0.6721794976650071, 0.5793739104784457]  # steps 0, 10, 50
REF_V = [0.10905696731428605, 0.14801169813099452, 0.10651444305885512, 0.11598762274769646]
REF_GAMMA = [0.1094400908230212, 0.10813436756636015, 0.10549824772663666]
REF_RHO = [0.6023260667996636, 0.6668764554390681, -0.27515934603973935]
REF_W = [0.04453092499808275, -0.02712751670353598, -0.02780538014534589]
REF_MARGIN = [-0.1638814070211421, 0.16950060445022935, 0.31565012156184663]


def test_depth1_network_is_plain_gradient_descent_bit_for_bit():
    """Params(depth=1) trains by ``gradients`` and the same updates, bit for bit."""
    p = REF.replace(depth=1)
    assert p == REF
    tr = simulate_full(p, keep_weights=True, checkpoints=[0, 25, 50])
    real = sample_data(p)
    st = real.stats
    W, V = real.W0.copy(), np.full((2, p.m, 2), p.v0)
    losses = []
    for t in range(p.steps + 1):
        L, _, _, gW, gV = gradients(W, V, real.mu, real.xi, st.yhat, st.y, p.c)
        losses.append(L)
        if t < p.steps:
            W -= p.eta * gW
            V -= p.eta_v_eff * gV
    np.testing.assert_array_equal(tr.loss, losses)
    np.testing.assert_array_equal(tr.extra["W"], W)
    np.testing.assert_array_equal(tr.extra["V"], V)
    assert tr.U.shape == (p.steps + 1, 0, 2, p.m, p.m) and tr.extra["U"].shape == (0, 2, p.m, p.m)
    # regression: the stored values (BLAS-independent tolerance)
    np.testing.assert_allclose(tr.loss[[0, 10, 50]], REF_LOSS, rtol=1e-13)
    np.testing.assert_allclose(tr.v[-1].ravel()[:4], REF_V, rtol=1e-13)
    np.testing.assert_allclose(tr.extra["W"].ravel()[:3], REF_W, rtol=1e-13)
    np.testing.assert_allclose(tr.extra["checkpoints"]["margin"], REF_MARGIN, rtol=1e-12)
    np.testing.assert_allclose(tr.gamma[-1].ravel()[:3], REF_GAMMA, rtol=1e-12)
    np.testing.assert_allclose(tr.rho[-1].ravel()[:3], REF_RHO, rtol=1e-12)
    assert tr.test_error == 0.075
    np.testing.assert_array_equal(tr.train_error[[0, 50]], [0.625, 0.0])


# ---------------------------------------------------------------- balance per layer
def balances(W, U, V):
    """||incoming||^2 - ||outgoing||^2 of every hidden neuron: list over
    layers 1..L of (2, m) arrays."""
    L = U.shape[0] + 1
    ins = [np.sum(W**2, -1)] + [np.sum(U[l]**2, -1) for l in range(L - 1)]
    outs = [np.sum(U[l]**2, -2) for l in range(L - 1)] + [np.sum(V**2, -1)]
    return [a - b for a, b in zip(ins, outs)]


@pytest.mark.parametrize("depth", [2, 3])
def test_balance_changes_by_eta_squared_at_every_layer(depth):
    p = Params(**SMALL, depth=depth, seed=2)
    tr = simulate_full(p.replace(steps=10), keep_weights=True)  # a generic trained state
    real = sample_data(p)
    W, U, V = tr.extra["W"], tr.extra["U"], tr.extra["V"]
    _, _, _, gW, gU, gV = grads(real, W, U, V, p.c)
    b0 = balances(W, U, V)
    # the O(eta^2) term: eta^2 (||g_in||^2 - ||g_out||^2) per neuron
    pred = balances(gW, gU, gV)
    changes = {}
    for eta in (0.1, 0.05, 0.025):
        b1 = balances(W - eta * gW, U - eta * gU, V - eta * gV)
        changes[eta] = [x1 - x0 for x0, x1 in zip(b0, b1)]
        scale = max(np.max(np.abs(x)) for x in b0)
        for layer, (db, pr) in enumerate(zip(changes[eta], pred)):
            assert np.max(np.abs(db - eta**2 * pr)) <= 1e-13 * scale, f"layer {layer + 1}"
    for layer in range(depth):
        big = np.abs(changes[0.1][layer]) > 1e-3 * np.max(np.abs(changes[0.1][layer]))
        assert np.max(np.abs(changes[0.1][layer])) > 1e-9  # the change is not trivially 0
        for eta in (0.1, 0.05):
            ratio = changes[eta][layer][big] / changes[eta / 2][layer][big]
            np.testing.assert_allclose(ratio, 4.0, rtol=1e-4)


@pytest.mark.parametrize("depth", [2, 3])
def test_run_records_upper_layers_and_keeps_w_in_span(depth, rel_err):
    p = Params(**SMALL, depth=depth, seed=1)
    real = sample_data(p)
    tr = simulate_full(p, record_every=7, real=real, keep_weights=True,
                       checkpoints=[0, 20, 40])
    R = tr.steps.size
    assert tr.U.shape == (R, depth - 1, 2, p.m, p.m)
    np.testing.assert_array_equal(tr.U[0], real.stats.U0)
    np.testing.assert_array_equal(tr.U[-1], tr.extra["U"])
    assert np.max(np.abs(tr.U[-1] - tr.U[0])) > 1e-3  # U is trained
    assert tr.loss[-1] < tr.loss[0]
    # the first layer stays in span{w(0), mu, xi_i} (docs/theory.md#depth)
    assert tr.extra["out_of_span"].max() < 1e-12
    js = np.array([1.0, -1.0])[:, None, None]
    W = (real.W0 + js * tr.gamma[-1][..., None] * real.mu / p.mu_norm**2
         + np.einsum("jri,id->jrd", tr.rho[-1] / real.stats.N, real.xi))
    assert rel_err(W - real.W0, tr.extra["W"] - real.W0) <= 1e-12
    # checkpoints: test error with U, the margin min y f / ||theta||^(L+1) with U in theta
    W, U, V = tr.extra["W"], tr.extra["U"], tr.extra["V"]
    st = real.stats
    _, f = forward_deep(W, U, V, real.mu, real.xi, st.yhat, p.c)
    theta2 = np.sum(W**2) + np.sum(U**2) + np.sum(V**2)
    assert tr.extra["checkpoints"]["margin"][-1] == pytest.approx(  # f: degree L+1
        np.min(st.y * f) / theta2 ** ((p.depth + 1) / 2), rel=1e-12)
    assert normalised_margin(f, st.y, W, V, U) != normalised_margin(f, st.y, W, V)
    xt = np.concatenate([x for _, x in real.test_vectors(p)])
    _, ft = forward_deep(W, U, V, real.mu, xt, st.test_yhat, p.c)
    assert tr.test_error == np.mean(st.test_yhat * ft <= 0.0)
    assert tr.extra["checkpoints"]["test_error"][-1] == tr.test_error
    assert clean_test_error(W, U=U, V=V, real=real, params=p) == tr.test_error


@pytest.mark.parametrize("depth", [2, 3])
def test_full_matches_reduced_exact_level(depth, pair, rel_err):
    """The reduced exact recursion at depth L reproduces the network (docs/theory.md#depth)."""
    p = Params(**SMALL, depth=depth, seed=4)
    red, full = pair(p)
    for name in ("gamma", "rho", "U", "v", "loss"):
        assert rel_err(getattr(red, name), getattr(full, name)) <= 1e-10, name
    assert red.test_error == full.test_error


def test_deep_optimizers_and_divergence():
    p = Params(**SMALL, depth=2, seed=5)
    gd = simulate_full(p, keep_weights=True)
    mom0 = simulate_full(p.replace(optimizer="momentum:0"), keep_weights=True)
    for k in ("W", "U", "V"):  # u = 0 u - lr g; x += u is x -= lr g exactly
        np.testing.assert_array_equal(gd.extra[k], mom0.extra[k])
    for opt in ("adam", "sign", "momentum:0.9"):
        tr = simulate_full(p.replace(optimizer=opt, eta=0.01), keep_weights=True)
        assert np.all(np.isfinite(tr.loss)) and tr.loss[-1] < tr.loss[0], opt
        assert np.max(np.abs(tr.U[-1] - tr.U[0])) > 1e-3, opt
    assert tr.extra["out_of_span"].max() < 1e-12  # momentum is a linear rule
    adam = simulate_full(p.replace(optimizer="adam", eta=0.01))
    assert adam.extra["out_of_span"][-1] > 0.01  # adam leaves the span
    # divergence policy covers U
    _, W, U, V = random_state(p)
    assert network.divergence_reason(np.zeros(p.n), 0.1, W, V, U) == 0
    U[0, 1, 2, 3] = 1e300
    assert network.divergence_reason(np.zeros(p.n), 0.1, W, V, U) == 3
    big = simulate_full(p.replace(eta=50.0, steps=60), raise_on_divergence=False)
    step, reason = big.extra["status"]
    assert step >= 1 and reason in (1, 2, 3) and np.isnan(big.test_error)
    assert np.all(np.isnan(big.U[-1]))


def test_deep_flow_records_upper_layers():
    p = Params(**SMALL, depth=2, seed=6)
    tr = simulate_full_flow(p, [0.0, 5.0, 40.0])
    assert tr.U.shape == (3, 1, 2, p.m, p.m)
    np.testing.assert_array_equal(tr.U[0], sample_data(p).stats.U0)
    assert tr.loss[-1] < tr.loss[0] and np.max(np.abs(tr.U[-1] - tr.U[0])) > 1e-4


def test_network_bytes_counts_upper_layers():
    p = Params(d=500, m=30, n=10)
    assert network.network_bytes(p.replace(depth=3)) > network.network_bytes(p)


# ---------------------------------------------------------------- recording path
@pytest.mark.parametrize("opt", ["gd", "adam"])
def test_recording_equals_the_reference_formulas(opt, rel_err):
    """SpanProjector (precomputed pseudo-inverse, batched) == coefficients() and
    out_of_span() (Cholesky solve and d-dimensional residual per state)."""
    p = Params(d=300, m=5, n=10, steps=30, n_test=100, v0=0.2, optimizer=opt,
               eta=0.01 if opt == "adam" else 0.05, seed=8)
    real = sample_data(p)
    from scipy.linalg import cho_factor
    factor = cho_factor(real.stats.gram)
    states = []
    for k in range(1, 6):
        tr = simulate_full(p.replace(steps=6 * k), real=real, keep_weights=True)
        states.append(tr.extra["W"])
    proj = SpanProjector(real)
    for W in states:
        g_old, r_old = coefficients(W, real, factor)
        g_new, r_new = proj.coefficients(W - real.W0)
        assert rel_err(g_new, g_old) <= 1e-12 and rel_err(r_new, r_old) <= 1e-12
    D = np.stack([W - real.W0 for W in states])
    g_b, r_b, span = proj.batch(D.copy())
    for b, W in enumerate(states):
        g_old, r_old = coefficients(W, real, factor)
        assert rel_err(g_b[b], g_old) <= 1e-12 and rel_err(r_b[b], r_old) <= 1e-12
        ref = out_of_span(W, real, g_old, r_old)
        if opt == "gd":
            assert ref < 1e-13 and span[b] < 1e-13  # both round-off
        else:
            assert ref > 1e-3 and abs(span[b] - ref) <= 1e-12 * ref
    # a run records the same numbers, across buffer boundaries
    tr = simulate_full(p, real=real)
    for k in (0, 7, 30):
        W = (real.W0 if k == 0 else
             simulate_full(p.replace(steps=k), real=real, keep_weights=True).extra["W"])
        g_old, r_old = coefficients(W, real, factor)
        assert np.max(np.abs(tr.gamma[k] - g_old)) <= 1e-12 * max(np.max(np.abs(g_old)), 1e-300)
        assert np.max(np.abs(tr.rho[k] - r_old)) <= 1e-12 * max(np.max(np.abs(r_old)), 1e-300)


def test_recording_buffer_size_does_not_change_results(monkeypatch):
    p = Params(**SMALL, depth=2, seed=9, optimizer="adam")
    real = sample_data(p)
    one = simulate_full(p, real=real)
    monkeypatch.setattr(network, "_RECORD_BUFFER_BYTES", 3 * 8 * 2 * p.m * p.d)
    small = simulate_full(p, real=real)
    for name in ("gamma", "rho"):
        np.testing.assert_allclose(getattr(small, name), getattr(one, name), rtol=1e-13,
                                   atol=1e-16)
    np.testing.assert_allclose(small.extra["out_of_span"], one.extra["out_of_span"],
                               rtol=1e-12)
    assert np.all(np.isfinite(small.extra["out_of_span"]))
