"""Weight-space gradient descent on the real network (SPEC section 2).

W (2, m, d) and V (2, m, 2) in float64, full batch, simultaneous update; all
sample/neuron work is BLAS (the loop is over time steps only).  The data come
from ``dynamics.data.sample_data`` (same realisation as the reduced model at
the same seed).  W-derived coefficients are recorded on the reduced model's
schedule: gamma_{j,r} = j <w - w0, mu>, and rho by solving
(W - W0) Xi^T = (rho / N) K with the noise Gram K.
"""
from __future__ import annotations

import time

import numpy as np
from scipy.linalg import cho_factor, cho_solve

from dynamics.data import Realisation, check_memory, data_bytes, sample_data
from dynamics.params import LOSS_MAX, THETA_MAX, Params
from dynamics.kernels import normalised_dt
from dynamics.run import FLOW, DivergenceError, Trajectory, check_checkpoints, \
    check_optimizer, check_record_memory, record_steps

_JS = np.array([1.0, -1.0])


def network_bytes(params: Params) -> float:
    """Bytes of a full run: data, W, W0-copy-free state, gradient, buffers."""
    p = params
    return data_bytes(p) + 8.0 * (3 * 2 * p.m * p.d + 6 * 2 * p.m * p.n)


def forward(W, V, mu, xi, yhat, c):
    """Pre-activations s = <w, yhat mu> (2,m,n), z = <w, xi> (2,m,n), output f (n,)."""
    m, d = W.shape[1], W.shape[2]
    s = (W @ mu)[..., None] * yhat[None, None, :]
    z = (W.reshape(2 * m, d) @ xi.T).reshape(2, m, -1)
    out = V[..., 0:1] * np.maximum(s, 0.0) + V[..., 1:2] * np.maximum(z, 0.0)
    f = c * np.einsum("j,jri->i", _JS, out)
    return s, z, f


def gradients(W, V, mu, xi, yhat, y, c):
    """Loss, training error, output f and the gradients (gW, gV).

    dL/dw_{j,r} = (c/n) j sum_i l'_i y_i [v1 1[s>0] yhat_i mu + v2 1[z>0] xi_i]
    dL/dv_{j,r,p} = (c/n) j sum_i l'_i y_i ReLU(<w_{j,r}, x_i^(p)>)
    """
    n = y.shape[0]
    m, d = W.shape[1], W.shape[2]
    s, z, f = forward(W, V, mu, xi, yhat, c)
    yf = y * f
    loss = float(np.mean(np.logaddexp(0.0, -yf)))
    lp = -np.exp(-np.logaddexp(0.0, yf))  # -1/(1 + exp(yf))
    q = (c / n) * lp * y  # (n,)
    jq = _JS[:, None, None] * q[None, None, :]
    sig = np.einsum("jri,i->jr", jq * (s > 0), yhat)  # sum_i ... yhat_i 1[s>0]
    gW = (V[..., 0] * sig)[..., None] * mu[None, None, :]
    gW += ((jq * (z > 0)) * V[..., 1:2]).reshape(2 * m, n).dot(xi).reshape(2, m, d)
    gV = np.stack([np.sum(jq * np.maximum(s, 0.0), axis=-1),
                   np.sum(jq * np.maximum(z, 0.0), axis=-1)], axis=-1)
    return loss, float(np.mean(yf <= 0.0)), f, gW, gV


def coefficients(W, real: Realisation, gram_factor):
    """(gamma, rho) with W = W0 + j gamma mu/||mu||^2 + sum_i rho_i xi_i/N_i."""
    D = W - real.W0
    m = W.shape[1]
    gamma = _JS[:, None] * (D @ real.mu)
    N = np.diag(real.stats.gram)
    proj = D.reshape(2 * m, -1) @ real.xi.T  # = rhohat K
    rhohat = cho_solve(gram_factor, proj.T).T  # K symmetric
    return gamma, (rhohat * N).reshape(2, m, -1)


def clean_test_error(W, V, real: Realisation, params: Params) -> float:
    """Clean test error on the real fresh test points (regenerated in chunks)."""
    yt = real.stats.test_yhat
    wrong = 0
    for sl, chunk in real.test_vectors(params):
        _, _, f = forward(W, V, real.mu, chunk, yt[sl], params.c)
        wrong += int(np.sum(yt[sl] * f <= 0.0))
    return wrong / params.n_test


def make_optimizer(params: Params):
    """Weight-space update ``step(name, x, g, lr, t)`` (in place, t = 1, 2, ...).

    gd: x -= lr g; momentum (heavy ball): u = beta u - lr g, x += u;
    adam: bias-corrected moments, x -= lr mhat / (sqrt(shat) + eps);
    sign: x -= lr sign(g).  Same formulas as the reduced kernel's ``_apply``.
    """
    kind, args = params.optimizer_spec
    state = {}

    def step(name, x, g, lr, t):
        if kind == "gd":
            x -= lr * g
        elif kind == "momentum":
            u = state.setdefault(name, np.zeros_like(x))
            u *= args[0]
            u -= lr * g
            x += u
        elif kind == "adam":
            b1, b2, eps = args
            m1 = state.setdefault(name + ".m", np.zeros_like(x))
            m2 = state.setdefault(name + ".s", np.zeros_like(x))
            m1 *= b1
            m1 += (1.0 - b1) * g
            m2 *= b2
            m2 += (1.0 - b2) * g * g
            x -= lr * (m1 / (1.0 - b1**t)) / (np.sqrt(m2 / (1.0 - b2**t)) + eps)
        else:  # sign
            x -= lr * np.sign(g)
    return step


def out_of_span(W, real: Realisation, gamma, rho) -> float:
    """||(W - W0) - proj_span{mu, xi}(W - W0)||_F / ||W - W0||_F (0 if W = W0)."""
    D = W - real.W0
    js = _JS[:, None, None]
    inside = (js * gamma[..., None] * real.mu / np.dot(real.mu, real.mu)
              + np.einsum("jri,id->jrd", rho / np.diag(real.stats.gram), real.xi))
    norm = np.linalg.norm(D)
    return float(np.linalg.norm(D - inside) / norm) if norm > 0 else 0.0


def divergence_reason(f, loss, W, V) -> int:
    """Divergence policy of ``dynamics.params`` (same codes as the kernels):
    1 non-finite output, 2 loss > LOSS_MAX, 3 a weight > THETA_MAX, else 0."""
    if not np.all(np.isfinite(f)):
        return 1
    if loss > LOSS_MAX:
        return 2
    if not (np.max(np.abs(W)) <= THETA_MAX and np.max(np.abs(V)) <= THETA_MAX):
        return 3
    return 0


def normalised_margin(f, y, W, V) -> float:
    """min_i y_i f_i / ||theta||^2 with ||theta||^2 = ||W||^2 + ||V||^2 (SPEC 10)."""
    return float(np.min(y * f) / (np.sum(W * W) + np.sum(V * V)))


def simulate_full(params: Params, record_every: int = 1,
                  real: Realisation | None = None, keep_weights: bool = False,
                  train_v: bool = True, checkpoints=None,
                  raise_on_divergence: bool = True) -> Trajectory:
    """Full-batch GD on (W, V); returns a ``Trajectory`` of level "full".

    ``keep_weights`` stores the final W and V in ``traj.extra``.
    ``train_v=False`` freezes V (the fixed-output model).  ``checkpoints``
    (ascending steps): ``traj.extra["checkpoints"]`` gets the test error,
    loss, train error and normalised margin at each (NaN after a divergence).
    With ``raise_on_divergence=False`` a divergence stops the run and is
    reported in ``traj.extra["status"]`` = (step, reason) instead of raising.
    """
    p = params
    check_optimizer(p, "full")
    check_memory(network_bytes(p), f"the full network at d={p.d}, m={p.m}, n={p.n}")
    check_record_memory(p, record_every)
    rec = record_steps(p.steps, record_every)
    cps = np.asarray([] if checkpoints is None else checkpoints, dtype=np.int64)
    t0 = time.perf_counter()
    if real is None:
        real = sample_data(p)
    st = real.stats
    factor = cho_factor(st.gram)
    W = real.W0.copy()
    V = np.full((2, p.m, 2), p.v0)
    R = len(rec)
    gamma = np.full((R, 2, p.m), np.nan)
    rho = np.full((R, 2, p.m, p.n), np.nan)
    v = np.full((R, 2, p.m, 2), np.nan)
    loss = np.full(R, np.nan)
    err = np.full(R, np.nan)
    span_err = np.full(R, np.nan)
    cp_out = {k: np.full(cps.size, np.nan) for k in ("test_error", "loss", "train_error", "margin")}
    status = (-1, 0)
    update = make_optimizer(p)
    k = c = 0
    for t in range(p.steps + 1):
        L, e, f, gW, gV = gradients(W, V, real.mu, real.xi, st.yhat, st.y, p.c)
        reason = divergence_reason(f, L, W, V)
        if reason:
            if raise_on_divergence:
                raise DivergenceError(t, reason, p, "full")
            status = (t, reason)
            break
        if k < R and t == rec[k]:
            gamma[k], rho[k] = coefficients(W, real, factor)
            span_err[k] = out_of_span(W, real, gamma[k], rho[k])
            v[k], loss[k], err[k] = V, L, e
            k += 1
        if c < cps.size and t == cps[c]:
            cp_out["test_error"][c] = clean_test_error(W, V, real, p)
            cp_out["loss"][c], cp_out["train_error"][c] = L, e
            cp_out["margin"][c] = normalised_margin(f, st.y, W, V)
            c += 1
        if t == p.steps:
            break
        update("W", W, gW, p.eta, t + 1)
        if train_v:
            update("V", V, gV, p.eta_v_eff, t + 1)
    test = clean_test_error(W, V, real, p) if status[0] < 0 else np.nan
    traj = Trajectory(params=p, level="full", sampler="data", stats=st,
                      steps=rec, gamma=gamma, rho=rho, v=v, loss=loss,
                      train_error=err, test_error=test,
                      wall_time=time.perf_counter() - t0)
    traj.extra.update(out_of_span=span_err, status=np.array(status), checkpoints=cp_out)
    if keep_weights:
        traj.extra.update(W=W, V=V)
    return traj


def simulate_full_flow(params: Params, times, real: Realisation | None = None,
                       train_v: bool = True) -> Trajectory:
    """The weight-space network under the normalised gradient-flow scheme of the
    reduced model (``dynamics.kernels.normalised_dt``: W -= eta dt gW,
    V -= eta_v dt gV, dt the same step rule), recorded at ``times`` (GD steps,
    finite, ascending).  Checks the reduction in flow (``simulate_flow``)."""
    p = params
    check_optimizer(p, "full")
    check_memory(network_bytes(p), f"the full network at d={p.d}, m={p.m}, n={p.n}")
    times = check_checkpoints(times, p.steps, integers=False, allow_inf=False)
    t0 = time.perf_counter()
    real = sample_data(p) if real is None else real
    st = real.stats
    factor = cho_factor(st.gram)
    W, V = real.W0.copy(), np.full((2, p.m, 2), p.v0)
    R = len(times)
    gamma, rho = np.empty((R, 2, p.m)), np.empty((R, 2, p.m, p.n))
    v, loss, err = np.empty((R, 2, p.m, 2)), np.empty(R), np.empty(R)
    t, L0, k, n_steps = 0.0, None, 0, 0
    while True:
        L, e, f, gW, gV = gradients(W, V, real.mu, real.xi, st.yhat, st.y, p.c)
        reason = divergence_reason(f, L, W, V)
        if reason:
            raise DivergenceError(int(t), reason, p, "full")
        L0 = L if L0 is None else L0
        if t >= times[k]:
            gamma[k], rho[k] = coefficients(W, real, factor)
            v[k], loss[k], err[k] = V, L, e
            k += 1
            if k == R:
                break
        dt = normalised_dt(L0, L, t, times[k], FLOW.max_dt_frac)
        W -= (p.eta * dt) * gW
        if train_v:
            V -= (p.eta_v_eff * dt) * gV
        t = times[k] if dt >= times[k] - t else t + dt
        n_steps += 1
    traj = Trajectory(params=p, level="full", sampler="data", stats=st, steps=times,
                      gamma=gamma, rho=rho, v=v, loss=loss, train_error=err,
                      test_error=clean_test_error(W, V, real, p),
                      wall_time=time.perf_counter() - t0)
    traj.extra["flow"] = dict(n_steps=n_steps)
    return traj
