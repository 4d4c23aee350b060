"""The general exact reduction (docs/theory.md#general-reduction): any activation, any patches, any data.

Patches x_{i,p} in R^D (i = 1..n, p = 1..P), filters w_{j,r}, output weights
v_{j,r,p}:  F_j(x) = c sum_r sum_p v_{j,r,p} sigma(<w_{j,r}, x^(p)>),
f = F_{+1} - F_{-1}, logistic loss, full-batch GD.  Every increment of w_{j,r}
is a combination of the patches, so w_{j,r}(t) = w_{j,r}(0) + Q alpha_{j,r}(t)
with Q (D, K) an orthonormal basis of span{x_{i,p}} (pivoted QR, rank
revealing: collinear signal patches give K = n + 1 for the paper's data).  The
state is alpha (2, m, K) and v (2, m, P); the inputs R = X Q (n, P, K) and
B = <w(0), x_{i,p}> (2, m, n, P):

    pre_{j,r,i,p} = B_{j,r,i,p} + R_{i,p} . alpha_{j,r}
    alpha_{j,r} -= eta (c/n) j sum_{i,p} l'_i y_i v_{j,r,p} sigma'(pre) R_{i,p}
    v_{j,r,p}   -= eta_v (c/n) j sum_i l'_i y_i sigma(pre)          (if v is trained)

O(m n P K) per step, independent of D (or d).  Test points enter through
R_test = X_test Q and B_test = <w(0), x_test>.  Activations: relu,
relu^q (sigma = max(x, 0)^q), leaky:alpha (sigma = x or alpha x); sigma'(0) is
0 for relu and relu^q and alpha for leaky (``dynamics.activation``).

Data (``PatchData``): the paper's family drawn from ``Params`` (signal e_1 or a
random direction, projected or isotropic noise; sampler 'data' with real
vectors, sampler 'wishart' in the d-free coordinates of docs/theory.md#d-free-sampler extended by the
component of each noise vector along the signal, docs/theory.md#general-reduction), or arrays from a
file (``datafile.load_npz``: bring your own data).  Signal patches are stored at unit
||mu|| and scaled per run, so a sweep over ||mu|| shares one factorisation.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, NamedTuple

import numpy as np

from .activation import activation_code
from .data import _test_labels, _test_noise_chunks, bartlett_factor, check_memory, \
    check_sampler, check_test_memory, draw_labels, noise_vectors, seed_streams, \
    spike_directions
from .batch import RESULTS
from .boundary import job_evaluator
from .general_kernels import _test_error, batch_kernel, record_kernel
from .kernels import Jobs
from .params import SAMPLERS, Params, ParamError, check_choice, \
    check_params, check_record_every, record_count
from .run import DivergenceError, check_checkpoints, record_steps

GENERAL_VARIABLES = ("pre", "v", "loss")  # compared with the family's network
RANK_RTOL = 1e-10  # a patch direction whose relative residual is below this is dependent


def homogeneity(params: Params) -> float:
    """Degree h of f in theta: q (relu^q) or 1 in W, plus 1 when v is trained;
    the normalised margin is min_i y_i f_i / ||theta||^h."""
    kind, args = params.activation_spec
    return (args[0] if kind == "relu^" else 1.0) + (1.0 if params.train_v else 0.0)


# ---------------------------------------------------------------- data
@dataclass(frozen=True)
class PatchData:
    """Training patches and initial weights of one realisation (float64).

    x (n, P, D): patches, the patches listed in ``signal_patches`` at unit
    ||mu|| (``patches(mu)`` scales them); y, yhat (n,): observed and clean
    labels (+-1); w0 (2, m, D); v0 (2, m, P) or None (= params.v0 everywhere);
    y_test (nt,) clean test labels and ``test_chunks()`` yielding (slice,
    x_test chunk (rows, P, D)) of the same scaling (nt = 0: no test set);
    source: 'model' or the file name; unused: names of the parameters that do
    not act on these data (recorded as such in outputs, refused if set).
    """

    x: np.ndarray
    y: np.ndarray
    yhat: np.ndarray
    w0: np.ndarray
    y_test: np.ndarray
    test_chunks: Callable
    signal_patches: tuple = ()
    v0: np.ndarray | None = None
    source: str = "model"
    unused: tuple = ()  # parameters the data make meaningless (a file: mu_norm, ...)

    @property
    def shape(self) -> tuple:
        """(n, P, D, m)."""
        return self.x.shape + (self.w0.shape[1],)

    def scale(self, mu: float) -> np.ndarray:
        """(P,) factor of each patch: ||mu|| for signal patches, else 1."""
        s = np.ones(self.x.shape[1])
        s[list(self.signal_patches)] = mu
        return s

    def patches(self, mu: float) -> np.ndarray:
        """x at signal strength ||mu|| (n, P, D)."""
        return self.x * self.scale(mu)[None, :, None]

    def initial_v(self, params: Params) -> np.ndarray:
        m, P = self.w0.shape[1], self.x.shape[1]
        return np.full((2, m, P), params.v0) if self.v0 is None else self.v0.copy()


def _stack_patches(yhat, u, xi):
    """(n, 2, D) patches [yhat_i u, xi_i]."""
    return np.stack([yhat[:, None] * u[None, :], xi], axis=1)


def check_family_sampler(params: Params, sampler: str):
    """Refuse (ParamError) what ``model_data`` cannot draw with this sampler."""
    check_choice("sampler", sampler, SAMPLERS)
    check_general(params)
    check_sampler(params, sampler)
    if sampler == "wishart" and params.signal != "e1":
        raise ParamError("signal", params.signal, "the d-free sampler is rotation "
                         "invariant (a random signal has the law of e1); use --sampler "
                         "data for a drawn random direction")


def model_data(params: Params, sampler: str = "data") -> PatchData:
    """The paper's family (docs/theory.md#data, #general-reduction) at unit ||mu||: patch 1 = yhat u,
    patch 2 = xi.  Sampler 'data': real vectors in R^d, the same labels, W0,
    noise and test set as ``dynamics.data.sample_data`` at the same seed (so
    the general level equals level exact on the paper's model); a random
    signal direction u comes from the seventh child of the seed's SeedSequence.
    Sampler 'wishart': d-free coordinates (D = 1 + 2m + n) in the basis
    {e_1, Bartlett factor of the complement} (the statistics of
    ``sample_wishart``), with isotropic noise's component along e_1 drawn
    from the seventh child."""
    p = params
    check_family_sampler(p, sampler)
    check_test_memory(p)
    s_lab, s_init, s_noise, s_test = seed_streams(p.seed)
    extra = np.random.default_rng(np.random.SeedSequence(p.seed).spawn(7)[6])
    yhat, y = draw_labels(p, s_lab)
    if sampler == "wishart":
        K0 = 2 * p.m + p.n
        w0_e1 = p.sigma_0 * np.random.default_rng(s_init).standard_normal((2, p.m))
        L = bartlett_factor(p.d - 1, K0, np.random.default_rng(s_noise))
        iso = p.noise_model == "isotropic"
        along = p.sigma_p * extra.standard_normal(p.n) if iso else np.zeros(p.n)
        w0 = np.concatenate([w0_e1.reshape(-1, 1), p.sigma_0 * L[: 2 * p.m]], axis=1)
        xi = np.concatenate([along[:, None], p.sigma_p * L[2 * p.m:]], axis=1)
        u = np.zeros(1 + K0)
        u[0] = 1.0
        rng = np.random.default_rng(s_test)
        y_test = rng.integers(0, 2, size=p.n_test).astype(np.float64) * 2.0 - 1.0
        eps = p.sigma_p * rng.standard_normal((p.n_test, K0))
        t_along = p.sigma_p * extra.standard_normal(p.n_test) if iso else np.zeros(p.n_test)
        xt = _stack_patches(y_test, u, np.concatenate([t_along[:, None], eps], axis=1))
        return PatchData(x=_stack_patches(yhat, u, xi), y=y, yhat=yhat,
                         w0=w0.reshape(2, p.m, 1 + K0), y_test=y_test,
                         test_chunks=lambda: iter([(slice(0, p.n_test), xt)]),
                         signal_patches=(0,))
    check_memory(8.0 * (2 * p.m + 3 * p.n + 2) * p.d + 2 * 64 * 2**20,
                 f"sampler 'data' at d={p.d}")
    W0 = p.sigma_0 * np.random.default_rng(s_init).standard_normal((2, p.m, p.d))
    spikes = spike_directions(p)
    if p.signal == "random":
        u = extra.standard_normal(p.d)
        u /= np.linalg.norm(u)
        direction = u
    else:
        u, direction = np.zeros(p.d), None
        u[0] = 1.0
    xi = noise_vectors(p, np.random.default_rng(s_noise), p.n, spikes, direction)
    y_test = _test_labels(p, s_test)

    def test_chunks():
        for sl, chunk in _test_noise_chunks(p, s_test, spikes, direction):
            yield sl, _stack_patches(y_test[sl], u, chunk)
    return PatchData(x=_stack_patches(yhat, u, xi), y=y, yhat=yhat, w0=W0, y_test=y_test,
                     test_chunks=test_chunks, signal_patches=(0,))


# ---------------------------------------------------------------- basis
class GStats(NamedTuple):
    """Inputs of the general kernels at unit ||mu|| (float64, C-contiguous).

    R (n, P, K) = X Q; B (2, m, n, P) = <w0, x>; Rt (nt, P, K), Bt (2, m, nt, P)
    the same for the test points; y (n,), yt (nt,) labels; w0q (2, m, K) =
    Q^T w0; w0sq (2, m) = ||w0||^2."""

    R: np.ndarray
    B: np.ndarray
    Rt: np.ndarray
    Bt: np.ndarray
    y: np.ndarray
    yt: np.ndarray
    w0q: np.ndarray
    w0sq: np.ndarray


def patch_basis(x: np.ndarray, rtol: float = RANK_RTOL) -> np.ndarray:
    """Orthonormal basis Q (D, K) of span{x_{i,p}}: Householder QR with column
    pivoting of the normalised patches; K = #{|R_kk| > rtol |R_00|}."""
    from scipy.linalg import qr
    X = x.reshape(-1, x.shape[-1])
    norms = np.linalg.norm(X, axis=1)
    keep = norms > 0
    if not keep.any():
        raise ValueError("every training patch is zero")
    Q, Rf, _ = qr((X[keep] / norms[keep, None]).T, mode="economic", pivoting=True)
    diag = np.abs(np.diag(Rf))
    return np.ascontiguousarray(Q[:, : int(np.sum(diag > rtol * diag[0]))])


def general_stats(data: PatchData, K: int | None = None) -> tuple[GStats, np.ndarray]:
    """(GStats, Q) of ``data`` (docs/theory.md#general-reduction); ``K`` pads alpha with zero columns."""
    Q = patch_basis(data.x)
    n, P, D, m = data.shape
    Kp = Q.shape[1] if K is None else K
    pad = np.zeros((D, Kp - Q.shape[1]))
    Qp = np.concatenate([Q, pad], axis=1) if Kp > Q.shape[1] else Q
    w0f = data.w0.reshape(2 * m, D)
    nt = len(data.y_test)
    Rt, Bt = np.empty((nt, P, Kp)), np.empty((2 * m, nt, P))
    for sl, xt in data.test_chunks():
        rows = xt.shape[0]
        Rt[sl] = (xt.reshape(rows * P, D) @ Qp).reshape(rows, P, Kp)
        Bt[:, sl] = (w0f @ xt.reshape(rows * P, D).T).reshape(2 * m, rows, P)
    st = GStats(R=(data.x.reshape(n * P, D) @ Qp).reshape(n, P, Kp),
                B=(w0f @ data.x.reshape(n * P, D).T).reshape(2, m, n, P),
                Rt=Rt, Bt=Bt.reshape(2, m, nt, P), y=data.y, yt=data.y_test,
                w0q=(w0f @ Qp).reshape(2, m, Kp),
                w0sq=np.einsum("kd,kd->k", w0f, w0f).reshape(2, m))
    return GStats(*(np.ascontiguousarray(a, dtype=np.float64) for a in st)), Q


def scaled(st: GStats, scale: np.ndarray) -> GStats:
    """The inputs at per-patch scale (||mu|| on signal patches): same products
    as the batch kernel's ``_scale`` (bit-identical)."""
    return st._replace(R=st.R * scale[None, :, None], B=st.B * scale,
                       Rt=st.Rt * scale[None, :, None], Bt=st.Bt * scale)


# ---------------------------------------------------------------- runs
@dataclass
class GeneralTrajectory:
    """A recorded run of the general model (reduced level 'general' or the
    weight-space network 'full' on the same PatchData).

    steps (R,); pre (R, 2, m, n, P) first-layer pre-activations <w_{j,r}, x_{i,p}>;
    v (R, 2, m, P); loss, train_error (R,); test_error (final, clean labels;
    NaN without a test set); alpha (R, 2, m, K) basis coefficients (reduced)."""

    params: Params
    level: str
    sampler: str
    source: str
    steps: np.ndarray
    pre: np.ndarray
    v: np.ndarray
    loss: np.ndarray
    train_error: np.ndarray
    test_error: float
    y: np.ndarray
    wall_time: float = 0.0
    alpha: np.ndarray | None = None
    extra: dict = field(default_factory=dict)
    unused: tuple = ()  # parameters without effect on these data (PatchData.unused)

    # the trajectory protocol (see run.Trajectory)
    layout = "patches"            # pre-activations per patch, v per patch
    label_names = ("y",)

    def compared_variables(self) -> tuple:
        """Variables compared with the family's network: pre, v, loss."""
        return GENERAL_VARIABLES

    def patch_preactivations(self):
        """(patch 1, patches 2..P) pre-activations per step."""
        return self.pre[..., 0], self.pre[..., 1:]


def check_general(params: Params):
    """What the general level does not cover, as ParamError naming the field."""
    p = check_params(params)
    if p.depth != 1:
        raise ParamError("depth", p.depth, "the model family (level general and its "
                         "network, docs/theory.md#general-reduction) is the two-layer network (--depth 1)")
    if p.optimizer != "gd":
        raise ParamError("optimizer", p.optimizer, "the model family (level general and "
                         "its network, docs/theory.md#general-reduction) runs plain GD")


def check_record_general(params: Params, n: int, P: int, m: int, record_every: int):
    """Refuse a recording of the model family whose arrays would not fit, before
    anything is allocated (pre, v, alpha, loss per recorded state)."""
    R = record_count(params.steps, record_every)
    check_memory(8.0 * R * 2 * m * (n * P + P + n + 1),
                 f"recording {R} states (--steps {params.steps}, --record-every "
                 f"{record_every})", hint="raise --record-every or lower --steps")


def kernel_settings(params: Params) -> tuple:
    """(code, a, c, eta, eta_v, train_v) for the kernels."""
    code, a = activation_code(params)
    return (code, a, float(params.c), float(params.eta), float(params.eta_v_eff),
            bool(params.train_v))


def simulate_general(params: Params, data: PatchData | None = None, sampler: str = "data",
                     record_every: int = 1) -> GeneralTrajectory:
    """Run the general level (docs/theory.md#general-reduction) on ``data`` (default: ``model_data``
    of ``params`` and ``sampler``); raises ``run.DivergenceError``."""
    check_general(params)
    p = params
    record_every = check_record_every(record_every, p.steps)
    t0 = time.perf_counter()
    if data is None:  # the recording's memory first: model_data and record_steps allocate
        check_record_general(p, p.n, 2, p.m, record_every)
        data = model_data(p, sampler)
    n, P, D, m = data.shape
    check_record_general(p, n, P, m, record_every)
    rec = record_steps(p.steps, record_every)
    st1, Q = general_stats(data)
    st = scaled(st1, data.scale(p.mu_norm))
    K = Q.shape[1]
    alpha, v = np.zeros((2, m, K)), data.initial_v(p)
    R_ = len(rec)
    out = dict(alpha=np.full((R_, 2, m, K), np.nan), v=np.full((R_, 2, m, P), np.nan),
               pre=np.full((R_, 2, m, n, P), np.nan), loss=np.full(R_, np.nan),
               train_error=np.full(R_, np.nan))
    status = np.empty(2, dtype=np.int64)
    record_kernel(st.R, st.B, st.y, *kernel_settings(p), int(p.steps), int(record_every),
                  alpha, v, out["alpha"], out["v"], out["pre"], out["loss"],
                  out["train_error"], status)
    if status[0] >= 0:
        raise DivergenceError(status[0], status[1], p, "general")
    code, a = activation_code(p)
    test = _test_error(st.Rt, st.Bt, st.yt, alpha, v, code, a, float(p.c))
    traj = GeneralTrajectory(params=p, level="general",
                             sampler=sampler if data.source == "model" else "file",
                             source=data.source, steps=rec, test_error=float(test),
                             y=data.y, wall_time=time.perf_counter() - t0,
                             unused=data.unused, **out)
    traj.extra.update(rank=K, basis=Q)
    return traj


def stacked_general(params: Params, sampler: str, seeds) -> tuple:
    """GStats of every seed, stacked on a seed axis (alpha padded to the largest
    rank), and the signal-patch mask."""
    datas = [model_data(params.replace(seed=int(s)), sampler) for s in seeds]
    ranks = [patch_basis(dt.x).shape[1] for dt in datas]
    sts = [general_stats(dt, K=max(ranks))[0] for dt in datas]
    stacked = GStats(*(np.ascontiguousarray(np.stack(a)) for a in zip(*sts)))
    mask = np.zeros(datas[0].x.shape[1], dtype=np.bool_)
    mask[list(datas[0].signal_patches)] = True
    return stacked, mask


def run_general_batch(params: Params, stacked: tuple, job_seed, job_mu, job_v0=None,
                      checkpoints=None, parallel: bool = True) -> dict:
    """Per-job results (Q, K) of ``batch.RESULTS`` at the checkpoint steps and
    ``status`` (Q, 2), the contract of ``batch.run_batch`` (``parallel``:
    threads, ``kernels.threads.run_chunks``, else one thread; same results bit for bit)."""
    check_general(params)
    cp = check_checkpoints(checkpoints, params.steps, allow_inf=False)
    st, mask = stacked
    Q = len(job_mu)
    job_v0 = np.full(Q, params.v0) if job_v0 is None else np.asarray(job_v0, np.float64)
    out = np.empty((Q, cp.size, 4))
    status = np.empty((Q, 2), dtype=np.int64)
    jobs = Jobs(np.asarray(job_seed, np.int64), np.asarray(job_mu, np.float64), job_v0)
    batch_kernel(st, mask, jobs, kernel_settings(params) + (float(homogeneity(params)),),
                 cp.astype(np.int64), out, status, parallel=parallel)
    res = {k: np.ascontiguousarray(out[:, :, i]) for i, k in enumerate(RESULTS)}
    res["status"] = status
    return res


def general_evaluator(params: Params, sampler: str, seeds, checkpoints=None):
    """Evaluator (``dynamics.boundary`` contract) of the general level."""
    check_general(params)
    cp = check_checkpoints(checkpoints, params.steps, allow_inf=False)
    stacked = stacked_general(params, sampler, seeds)
    return job_evaluator(
        lambda job_seed, job_mu, cps: run_general_batch(params, stacked, job_seed, job_mu,
                                                        checkpoints=cps),
        len(seeds), cp)
