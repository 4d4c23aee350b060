"""Weight-space gradient descent on the real network (docs/theory.md#network-and-training, #depth).

W (2, m, d), the upper layers U (L-1, 2, m, m) (docs/theory.md#depth; empty at depth 1)
and V (2, m, 2) in float64, full batch, simultaneous update; all sample/neuron
work is BLAS (the loops are over time steps and layers only).  Depth 1 runs
``layers.gradients`` (the paper's network); depth L >= 2 runs
``layers.gradients_deep``.  The data come from ``dynamics.data.sample_data`` (same
realisation as the reduced model at the same seed, U(0) = ``stats.U0``).

W-derived coefficients are recorded on the reduced model's schedule (at any
depth the first layer stays in span{w(0), mu, xi_i}, docs/theory.md#depth):
gamma_{j,r} = j <w - w0, mu>, and rho by solving (W - W0) Xi^T = (rho / N) K
with the noise Gram K.  ``SpanProjector`` precomputes that solve once, so the
coefficients of a batch of recorded states are one matmul and their
out-of-span norms one more (``coefficients`` / ``out_of_span`` are the
per-state reference formulas).
"""
from __future__ import annotations

import functools
import time

import numpy as np
from threadpoolctl import threadpool_limits
from scipy.linalg import cho_factor, cho_solve
from scipy.linalg.blas import dgemm

from dynamics.data import Realisation, check_memory, data_bytes, sample_data
from dynamics.params import LOSS_MAX, THETA_MAX, Params, check_params, check_record_every
from dynamics.kernels import LOSS_UNDERFLOW, normalised_dt
from dynamics.run import FLOW, DivergenceError, Trajectory, check_checkpoints, check_optimizer, \
    check_paper_model, check_record_memory, error_count, record_steps

from .layers import JS, forward, forward_deep, network_gradients

# Recorded states (W - W0) buffered before one batched projection (bytes).
_RECORD_BUFFER_BYTES = 8 * 2**20
# Bound on the activations of one block of test points at depth >= 2 (bytes).
_TEST_BLOCK_BYTES = 32 * 2**20


def network_bytes(params: Params) -> float:
    """Bytes of a full run: data, W and its gradient, U terms (depth >= 2:
    U, its gradient and optimizer state, per-layer activations), buffers and
    the recording buffer of ``SpanProjector``."""
    p = params
    state = 3 * 2 * p.m * p.d + 6 * 2 * p.m * p.n
    upper = (p.depth - 1) * (4 * 2 * p.m * p.m + 4 * 2 * p.m * 2 * p.n)
    record = max(_RECORD_BUFFER_BYTES / 8.0, 2 * p.m * p.d)
    return data_bytes(p) + 8.0 * (state + upper + record)


def initial_upper(real: Realisation, params: Params) -> np.ndarray:
    """U(0) of the run, (L-1, 2, m, m) float64 (a copy; empty at depth 1)."""
    U0 = real.stats.U0
    shape = (params.depth - 1, 2, params.m, params.m)
    if U0.shape != shape:
        if params.depth == 1:
            return np.zeros(shape)
        raise ValueError(f"the realisation has upper layers of shape {U0.shape}, "
                         f"depth {params.depth} needs {shape}")
    return np.array(U0, dtype=np.float64)


# ---------------------------------------------------------------- coefficients
def coefficients(W, real: Realisation, gram_factor):
    """(gamma, rho) with W = W0 + j gamma mu/||mu||^2 + sum_i rho_i xi_i/N_i
    (reference formula, one state; runs use ``SpanProjector``)."""
    D = W - real.W0
    m = W.shape[1]
    gamma = JS[:, None] * (D @ real.mu)
    N = np.diag(real.stats.gram)
    proj = D.reshape(2 * m, -1) @ real.xi.T  # = rhohat K
    rhohat = cho_solve(gram_factor, proj.T).T  # K symmetric
    return gamma, (rhohat * N).reshape(2, m, -1)


def out_of_span(W, real: Realisation, gamma, rho) -> float:
    """||(W - W0) - proj_span{mu, xi}(W - W0)||_F / ||W - W0||_F (0 if W = W0)
    (reference formula, one state; runs use ``SpanProjector``)."""
    D = W - real.W0
    js = JS[:, None, None]
    inside = (js * gamma[..., None] * real.mu / np.dot(real.mu, real.mu)
              + np.einsum("jri,id->jrd", rho / np.diag(real.stats.gram), real.xi))
    norm = np.linalg.norm(D)
    return float(np.linalg.norm(D - inside) / norm) if norm > 0 else 0.0


class SpanProjector:
    """The formulas of ``coefficients`` and ``out_of_span`` with the Gram solve
    done once: for D = W - W0 (rows d_{j,r}),

      D P = [<d, mu> | (d Xi^T) K^{-1} diag(N)] = [j gamma | rho],
      P = [mu | Xi^T K^{-1} diag(N)]  (d, n+1),
      inside = (D P) B,  B = [mu/||mu||^2 ; xi_i/N_i]  (n+1, d),

    so a batch of b recorded states costs two (2 m b, d, n+1) matmuls (the
    second one writes the residual in place).  Equal to the reference formulas
    to round-off (tests/equivalence/test_full_deep.py).
    """

    def __init__(self, real: Realisation, gram_factor=None):
        st = real.stats
        factor = cho_factor(st.gram) if gram_factor is None else gram_factor
        N = np.diag(st.gram)
        self.W0 = real.W0
        self.P = np.empty((real.mu.shape[0], real.xi.shape[0] + 1))
        self.P[:, 0] = real.mu
        self.P[:, 1:] = cho_solve(factor, real.xi).T * N  # Xi^T K^{-1} diag(N)
        self.B = np.vstack([real.mu / np.dot(real.mu, real.mu), real.xi / N[:, None]])
        self.BT = np.asfortranarray(self.B.T)

    def coefficients(self, D):
        """gamma (..., 2, m), rho (..., 2, m, n) of D = W - W0 (..., 2, m, d)."""
        C = D @ self.P
        return JS[:, None] * C[..., 0], C[..., 1:]

    def batch(self, D, span: bool = True):
        """(gamma (b,2,m), rho (b,2,m,n), out-of-span norm (b,)) of the states
        D (b, 2, m, d) (C-contiguous); D is overwritten by the residual
        D - (D P) B if ``span`` (one BLAS call, no temporary)."""
        b, d = D.shape[0], D.shape[-1]
        flat = D.reshape(-1, d)
        C = flat @ self.P
        gamma = JS[:, None] * C[:, 0].reshape(b, 2, -1)
        rho = C[:, 1:].reshape(b, 2, D.shape[2], -1)
        if not span:
            return gamma, rho, None
        norm2 = _row_norms_sq(flat.reshape(b, -1))
        # (flat - C B)^T = flat^T - B^T C^T, in place in flat (all Fortran views)
        res = dgemm(-1.0, self.BT, C.T, beta=1.0, c=flat.T, overwrite_c=True).T
        res2 = _row_norms_sq(res.reshape(b, -1))
        ratio = np.zeros(b)
        pos = norm2 > 0
        ratio[pos] = np.sqrt(res2[pos]) / np.sqrt(norm2[pos])
        return gamma, rho, ratio


def _row_norms_sq(X):
    """Squared Euclidean norm of each row of X (b, x), by BLAS dot products."""
    return np.matmul(X[:, None, :], X[:, :, None]).reshape(-1)


class _Recorder:
    """gamma, rho (and the out-of-span norm) of W at recorded indices, stored
    as W - W0 in a bounded buffer and projected in batches (``SpanProjector``)."""

    def __init__(self, real: Realisation, R: int, span: bool, gram_factor=None):
        self.proj = SpanProjector(real, gram_factor)
        two, m, d = real.W0.shape
        n = real.xi.shape[0]
        cap = int(max(1, min(R, _RECORD_BUFFER_BYTES // (8 * two * m * d))))
        self.buf = np.empty((cap, two, m, d))
        self.pending: list[int] = []
        self.span = span
        self.gamma = np.full((R, two, m), np.nan)
        self.rho = np.full((R, two, m, n), np.nan)
        self.out_of_span = np.full(R, np.nan) if span else None

    def add(self, k: int, W):
        np.subtract(W, self.proj.W0, out=self.buf[len(self.pending)])
        self.pending.append(k)
        if len(self.pending) == self.buf.shape[0]:
            self.flush()

    def flush(self):
        b = len(self.pending)
        if b == 0:
            return
        idx = np.asarray(self.pending)
        gamma, rho, ratio = self.proj.batch(self.buf[:b], self.span)
        self.gamma[idx], self.rho[idx] = gamma, rho
        if self.span:
            self.out_of_span[idx] = ratio
        self.pending.clear()


# ---------------------------------------------------------------- test error, policy
def clean_test_error(W, V, real: Realisation, params: Params, U=None) -> float:
    """Clean test error on the real fresh test points (regenerated in chunks);
    ``U`` (L-1, 2, m, m): the upper layers (None or empty: depth 1)."""
    yt = real.stats.test_yhat
    deep = U is not None and U.shape[0] > 0
    block = max(1, _TEST_BLOCK_BYTES // (8 * 2 * 2 * 2 * W.shape[1]))
    wrong = 0
    for sl, chunk in real.test_vectors(params):
        if not deep:
            _, _, f = forward(W, V, real.mu, chunk, yt[sl], params.c)
            wrong += error_count(yt[sl] * f)
            continue
        ys = yt[sl]
        for a in range(0, ys.size, block):
            _, f = forward_deep(W, U, V, real.mu, chunk[a:a + block], ys[a:a + block],
                                params.c, keep=False)
            wrong += error_count(ys[a:a + block] * f)
    return wrong / params.n_test


def make_optimizer(params: Params):
    """Weight-space update ``step(name, x, g, lr, t)`` (in place, t = 1, 2, ...).

    gd: x -= lr g; momentum (heavy ball): u = beta u - lr g, x += u;
    adam: bias-corrected moments, x -= lr mhat / (sqrt(shat) + eps);
    sign: x -= lr sign(g).  Same formulas as the reduced kernel's ``_apply``.
    One state per name ("W", "U", "V"), so every layer has its own moments.
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


def divergence_reason(f, loss, W, V, U=None) -> int:
    """Divergence policy of ``dynamics.params`` (same codes as the kernels):
    1 non-finite output, 2 loss > LOSS_MAX, 3 a weight (W, U or V) > THETA_MAX,
    else 0."""
    if not np.all(np.isfinite(f)):
        return 1
    if loss > LOSS_MAX:
        return 2
    if not (np.max(np.abs(W)) <= THETA_MAX and np.max(np.abs(V)) <= THETA_MAX):
        return 3
    if U is not None and U.size and not np.max(np.abs(U)) <= THETA_MAX:
        return 3
    return 0


def normalised_margin(f, y, W, V, U=None, train_v=True) -> float:
    """min_i y_i f_i / ||theta||^h, ||theta||^2 = ||W||^2 + ||U||^2 (+ ||V||^2
    when v is trained), h = L + [v trained]: f is homogeneous of degree h in
    the trained parameters (L = 1, v trained: / ||theta||^2, docs/theory.md#training-time-and-flow; the
    same normalisation as the reduced kernels)."""
    sq = np.sum(W * W) + (np.sum(V * V) if train_v else 0.0)
    depth = 1
    if U is not None and U.size:
        sq += np.sum(U * U)
        depth += U.shape[0]
    h = depth + (1 if train_v else 0)
    if h == 2:
        return float(np.min(y * f) / sq)
    return float(np.min(y * f) / sq ** (0.5 * h))


# ---------------------------------------------------------------- runs
# Below this many flops per (2m x d) @ (d x n) product one BLAS thread is
# fastest: thread start-up and, on shared cores, oversubscription cost more
# than the product (measured at load 5 on 2 cores, n = m = 20: one run at
# d = 1e3 took 5.5 s with the default OpenBLAS threads and 0.24 s with one; at
# d = 1e5, 117 s against 4.6 s on an idle machine).
SINGLE_THREAD_FLOPS = 2e8


def blas_threads(fn):
    """Run a network simulation with one BLAS thread when its products are small."""
    @functools.wraps(fn)
    def wrapper(params, *args, **kwargs):
        check_params(params)  # a ParamError naming params, not an AttributeError here
        if 4.0 * params.m * params.d * params.n < SINGLE_THREAD_FLOPS:
            with threadpool_limits(1, user_api="blas"):
                return fn(params, *args, **kwargs)
        return fn(params, *args, **kwargs)
    return wrapper


@blas_threads
def simulate_full(params: Params, *, record_every: int = 1,
                  real: Realisation | None = None, keep_weights: bool = False,
                  train_v: bool | None = None, checkpoints=None,
                  raise_on_divergence: bool = True) -> Trajectory:
    """Full-batch gradient descent on the weight-space network (W, U, V).

    The paper's model only (ReLU, signal along e_1, projected noise; the model
    family runs in ``fullsim.patches``).  Depth 1 is the paper's network,
    trained by ``gradients``; at depth >= 2 the upper layers U are trained too
    (docs/theory.md#depth).

    Parameters
    ----------
    params : Params
        The configuration (``params.steps`` GD steps of size ``params.eta``).
    record_every : int, optional
        Record the state every this many steps (and at the last step).
    real : Realisation, optional
        The data vectors (``dynamics.data.sample_data``); drawn from
        ``params.seed`` when omitted.  Pass the same realisation to a reduced
        run to compare the two on the same data.
    keep_weights : bool, optional
        Store the final W, V and U in ``traj.extra``.
    train_v : bool, optional
        False freezes V at v0 (the fixed-output model); None: ``params.train_v``.
    checkpoints : sequence of int, optional
        Ascending steps at which ``traj.extra["checkpoints"]`` gets the test
        error, loss, train error and normalised margin (NaN after a divergence).
    raise_on_divergence : bool, optional
        False: a divergence stops the run and is reported in
        ``traj.extra["status"]`` = (step, reason) instead of raising.

    Returns
    -------
    Trajectory
        Level "full": the coefficients (gamma, rho) of W - W(0) on
        span{mu, xi_i}, v, loss, train_error at the recorded steps, the clean
        test error on real test vectors, and ``traj.U`` (R, L-1, 2, m, m).

    Raises
    ------
    DivergenceError
        Under the divergence policy (docs/guide/divergence.md), unless
        ``raise_on_divergence`` is False.
    """
    p = check_params(params)
    record_every = check_record_every(record_every, p.steps)
    check_optimizer(p, "full")
    check_paper_model(p, "full")
    train_v = p.train_v if train_v is None else train_v
    check_memory(network_bytes(p), f"the full network at d={p.d}, m={p.m}, n={p.n}"
                 + (f", depth={p.depth}" if p.depth > 1 else ""))
    check_record_memory(p, record_every)
    rec = record_steps(p.steps, record_every)
    cps = np.asarray([] if checkpoints is None else checkpoints, dtype=np.int64)
    t0 = time.perf_counter()
    if real is None:
        real = sample_data(p)
    st = real.stats
    W = real.W0.copy()
    U = initial_upper(real, p)
    V = np.full((2, p.m, 2), p.v0)
    R = len(rec)
    recorder = _Recorder(real, R, span=True)
    Urec = np.full((R,) + U.shape, np.nan)
    v = np.full((R, 2, p.m, 2), np.nan)
    loss = np.full(R, np.nan)
    err = np.full(R, np.nan)
    cp_out = {k: np.full(cps.size, np.nan) for k in ("test_error", "loss", "train_error", "margin")}
    status = (-1, 0)
    update = make_optimizer(p)
    k = c = 0
    for t in range(p.steps + 1):
        L, e, f, gW, gU, gV = network_gradients(W, U, V, real.mu, real.xi, st.yhat, st.y, p.c)
        reason = divergence_reason(f, L, W, V, U)
        if reason:
            if raise_on_divergence:
                raise DivergenceError(t, reason, p, "full")
            status = (t, reason)
            break
        if k < R and t == rec[k]:
            recorder.add(k, W)
            Urec[k], v[k], loss[k], err[k] = U, V, L, e
            k += 1
        if c < cps.size and t == cps[c]:
            cp_out["test_error"][c] = clean_test_error(W, V, real, p, U)
            cp_out["loss"][c], cp_out["train_error"][c] = L, e
            cp_out["margin"][c] = normalised_margin(f, st.y, W, V, U, train_v)
            c += 1
        if t == p.steps:
            break
        update("W", W, gW, p.eta, t + 1)
        if gU is not None:
            update("U", U, gU, p.eta, t + 1)
        if train_v:
            update("V", V, gV, p.eta_v_eff, t + 1)
    recorder.flush()
    test = clean_test_error(W, V, real, p, U) if status[0] < 0 else np.nan
    traj = Trajectory(params=p, level="full", sampler="data", stats=st,
                      steps=rec, gamma=recorder.gamma, rho=recorder.rho, v=v, loss=loss,
                      train_error=err, test_error=test,
                      wall_time=time.perf_counter() - t0, U=Urec)
    traj.extra.update(out_of_span=recorder.out_of_span, status=np.array(status),
                      checkpoints=cp_out)
    if keep_weights:
        traj.extra.update(W=W, V=V, U=U)
    return traj


@blas_threads
def simulate_full_flow(params: Params, times, real: Realisation | None = None,
                       train_v: bool | None = None) -> Trajectory:
    """The weight-space network under the normalised gradient-flow scheme of the
    reduced model (``dynamics.kernels.normalised_dt``: W -= eta dt gW,
    U -= eta dt gU, V -= eta_v dt gV, dt the same step rule), recorded at
    ``times`` (GD steps, finite, ascending).  Checks the reduction in flow
    (``simulate_flow``)."""
    p = params
    check_optimizer(p, "full")
    check_paper_model(p, "full")
    train_v = p.train_v if train_v is None else train_v
    check_memory(network_bytes(p), f"the full network at d={p.d}, m={p.m}, n={p.n}"
                 + (f", depth={p.depth}" if p.depth > 1 else ""))
    times = check_checkpoints(times, p.steps, integers=False, allow_inf=False)
    t0 = time.perf_counter()
    real = sample_data(p) if real is None else real
    st = real.stats
    W, U, V = real.W0.copy(), initial_upper(real, p), np.full((2, p.m, 2), p.v0)
    R = len(times)
    recorder = _Recorder(real, R, span=False)
    Urec = np.full((R,) + U.shape, np.nan)
    v, loss, err = np.empty((R, 2, p.m, 2)), np.empty(R), np.empty(R)
    t, L0, k, n_steps = 0.0, None, 0, 0
    while True:
        L, e, f, gW, gU, gV = network_gradients(W, U, V, real.mu, real.xi, st.yhat, st.y, p.c)
        reason = divergence_reason(f, L, W, V, U)
        if reason:
            raise DivergenceError(int(t), reason, p, "full")
        L0 = L if L0 is None else L0
        if L == 0.0 and n_steps > 0 and t < times[-1]:  # a step made every l' underflow
            raise DivergenceError(int(t), LOSS_UNDERFLOW, p, "full")
        if t >= times[k]:
            recorder.add(k, W)
            Urec[k], v[k], loss[k], err[k] = U, V, L, e
            k += 1
            if k == R:
                break
        dt = normalised_dt(L0, L, t, times[k], FLOW.max_dt_frac)
        W -= (p.eta * dt) * gW
        if gU is not None:
            U -= (p.eta * dt) * gU
        if train_v:
            V -= (p.eta_v_eff * dt) * gV
        t = times[k] if dt >= times[k] - t else t + dt
        n_steps += 1
    recorder.flush()
    traj = Trajectory(params=p, level="full", sampler="data", stats=st, steps=times,
                      gamma=recorder.gamma, rho=recorder.rho, v=v, loss=loss,
                      train_error=err, test_error=clean_test_error(W, V, real, p, U),
                      wall_time=time.perf_counter() - t0, U=Urec)
    traj.extra["flow"] = dict(n_steps=n_steps)
    return traj
