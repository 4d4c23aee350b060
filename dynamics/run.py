"""Runs of the reduced model: ``simulate`` and the ``Trajectory`` it returns.

``Trajectory`` is shared with ``fullsim`` (level "full"), so both models give
the same object, on the same record schedule, for ``compare`` to put side by
side.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from .data import Stats, sample_stats
from .kernels import run_kernel, clean_error_kernel
from .params import LEVELS, SAMPLERS, Params, ParamError, check_choice

# (use_gram, train_v) per reduced level
LEVEL_FLAGS = {"exact": (True, True), "orthogonal": (False, True),
               "fixed-output": (True, False)}


_OPT_CODES = {"gd": 0.0, "momentum": 0.0, "adam": 1.0, "sign": 2.0}


def optimizer_array(params: Params) -> np.ndarray:
    """Kernel encoding [code, a, b, eps] of ``params.optimizer``."""
    kind, args = params.optimizer_spec
    out = np.zeros(4)
    out[0] = _OPT_CODES[kind]
    out[1:1 + len(args)] = args
    return out


def reduced_forward(gamma, rho, v, stats: Stats, params: Params, use_gram=True):
    """s, z (..., 2, m, n) and f (..., n) of SPEC 4 for states with any leading axes.

    s = yhat (A + j gamma), z = B + rho G (G = I if not use_gram),
    f = c sum_j j sum_r [v1 ReLU(s) + v2 ReLU(z)].
    """
    js = np.array([1.0, -1.0])
    a = params.mu_norm * stats.w0_e1 + js[:, None] * gamma
    s = a[..., None] * stats.yhat
    z = stats.B + (rho @ stats.G if use_gram else rho)
    out = v[..., 0:1] * np.maximum(s, 0.0) + v[..., 1:2] * np.maximum(z, 0.0)
    f = params.c * np.einsum("j,...jri->...i", js, out)
    return s, z, f


class DivergenceError(FloatingPointError):
    """Non-finite values during training."""

    def __init__(self, step: int, params: Params, level: str):
        self.step = step
        super().__init__(
            f"{level} run diverged: non-finite network output at step {step} "
            f"(eta={params.eta:g}, eta_v={params.eta_v_eff:g}); try a smaller eta"
        )


def record_steps(steps: int, record_every: int) -> np.ndarray:
    """Recorded steps: 0, k, 2k, ... and always the last step T."""
    if int(record_every) < 1:
        raise ParamError("record_every", record_every, "must be an integer >= 1")
    rec = np.arange(0, steps + 1, record_every)
    if rec[-1] != steps:
        rec = np.append(rec, steps)
    return rec


@dataclass
class Trajectory:
    """Recorded training run (reduced or full), float64 arrays.

    steps (R,); gamma (R,2,m); rho (R,2,m,n); v (R,2,m,2); loss, train_error
    (R,); test_error: clean test error at the last step.
    """

    params: Params
    level: str
    sampler: str
    stats: Stats
    steps: np.ndarray
    gamma: np.ndarray
    rho: np.ndarray
    v: np.ndarray
    loss: np.ndarray
    train_error: np.ndarray
    test_error: float
    wall_time: float = 0.0
    extra: dict = field(default_factory=dict)

    @property
    def test_error_noisy(self) -> float:
        """Test error against flipped labels: flip + (1 - 2 flip) clean error."""
        flip = self.params.flip
        return flip + (1.0 - 2.0 * flip) * self.test_error

    def preactivations(self):
        """s, z (R, 2, m, n) and f (R, n) at every recorded step (SPEC 4).

        z uses this level's own G (the identity for "orthogonal"; the full
        network's coefficients give its true <w, xi_i> up to round-off).
        """
        return reduced_forward(self.gamma, self.rho, self.v, self.stats, self.params,
                               use_gram=self.level != "orthogonal")

    def w_norm_sq(self) -> np.ndarray:
        """||w_{j,r}(t)||^2 from the coefficients, shape (R, 2, m).

        ||w||^2 = (<w0,e1> + j gamma/||mu||)^2 + ||P w0||^2
                  + 2 sum_k rhohat_k B_k + rhohat K rhohat^T,  rhohat = rho/N.
        """
        st, mu = self.stats, self.params.mu_norm
        js = np.array([1.0, -1.0])[None, :, None]
        e1 = st.w0_e1[None] + js * self.gamma / mu
        rhohat = self.rho / st.N
        cross = 2.0 * np.einsum("tjrk,jrk->tjr", rhohat, st.B)
        quad = np.einsum("tjrk,kl,tjrl->tjr", rhohat, st.gram, rhohat)
        return e1**2 + st.w0_perp_sq[None] + cross + quad

    def balance(self) -> np.ndarray:
        """sum_p v_{j,r,p}^2 - ||w_{j,r}||^2 per neuron, shape (R, 2, m)."""
        return np.sum(self.v**2, axis=-1) - self.w_norm_sq()


def simulate(params: Params, level: str = "exact", sampler: str = "wishart",
             record_every: int = 1, stats: Stats | None = None) -> Trajectory:
    """Run the reduced recursion at ``level`` on statistics from ``sampler``.

    Pass ``stats`` to reuse a realisation (e.g. the one of a full run).
    """
    check_choice("level", level, LEVELS)
    check_choice("sampler", sampler, SAMPLERS)
    rec = record_steps(params.steps, record_every)
    t0 = time.perf_counter()
    if stats is None:
        stats = sample_stats(params, sampler)
    p = params
    use_gram, train_v = LEVEL_FLAGS[level]
    A = p.mu_norm * stats.w0_e1
    N = stats.N
    gamma = np.zeros((2, p.m))
    rho = np.zeros((2, p.m, p.n))
    v = np.full((2, p.m, 2), p.v0)
    R = len(rec)
    out = dict(gamma=np.empty((R, 2, p.m)), rho=np.empty((R, 2, p.m, p.n)),
               v=np.empty((R, 2, p.m, 2)), loss=np.empty(R), train_error=np.empty(R))
    status = run_kernel(A, stats.B, stats.G, N, stats.yhat, stats.y,
                        p.mu_norm**2, p.c, p.eta, p.eta_v_eff, p.steps,
                        int(record_every), use_gram, train_v, optimizer_array(p),
                        gamma, rho, v,
                        out["gamma"], out["rho"], out["v"], out["loss"],
                        out["train_error"])
    if status >= 0:
        raise DivergenceError(status, p, level)
    test = clean_error_kernel(A, gamma, rho, v, N, p.c, stats.test_yhat,
                             stats.test_B, stats.test_X)
    return Trajectory(params=p, level=level, sampler=sampler, stats=stats,
                      steps=rec, test_error=float(test),
                      wall_time=time.perf_counter() - t0, **out)
