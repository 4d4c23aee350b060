"""Long times: the loss-normalised scheme (the gradient flow's integrator).

Gradient flow of this ReLU model is non-smooth: wrong-class noise
coefficients slide along z_{j,r,i} = 0 (the RHS jumps there), which pins any
error-controlled embedded Runge-Kutta scheme to steps ~ tol / jump (measured:
Dormand-Prince 5(4) at rtol 1e-6 spent 4e5 RHS evaluations to reach t = 0.5).
Long times therefore use the loss-normalised explicit Euler scheme: GD with
a time step of dt_k = min(L_0/L_k, max_dt_frac max(t, 1)) GD steps (Euler in
the reparametrised time ds = L dt, docs/theory.md#training-time-and-flow, capped to a fraction of t), whose
steps grow as the loss decays, so a decade of t costs a bounded number of
steps (~115 at max_dt_frac = 0.02); early steps are smaller than GD's.
"""
from __future__ import annotations

import numpy as np
from numba import njit

from .primitives import _copy_flat, _lprime_stable
from .step import _forward, _step
from .step1 import _forward_depth1, _increments_depth1
from .types import LOSS_UNDERFLOW


@njit(cache=True)
def normalised_dt(L0, loss, t, t_end, frac):
    """Time step (GD steps) of the normalised scheme: min(L0/L, frac max(t, 1),
    t_end - t); a zero loss (every l' underflowed, which the kernels report as
    LOSS_UNDERFLOW before they get here) jumps to t_end."""
    if loss > 0.0:
        return min(L0 / loss, frac * max(t, 1.0), t_end - t)
    return t_end - t


@njit(cache=True)
def normalised_gd(A, mu, gamma, rho, U, v, st, cfg, fc, w, t, t_end, L0, count):
    """Advance in place from GD time t to t_end (in GD steps of cfg.eta) with
    the loss-normalised step: one step moves the time by
    ``normalised_dt`` GD steps (the last one lands on t_end); count[0] counts
    steps.
    Returns (reason, t): reason 0 ok, 1-3 divergence, 4 step budget spent,
    LOSS_UNDERFLOW (7) a step of this scheme made the loss exactly 0 before
    t_end (the state would freeze: no flow gets there before ~1e300 GD steps,
    so the step overshot).  A flow that starts at loss 0 (no normalised step
    yet: GD fitted the data with every l' underflowed) stays where it is and
    jumps to t_end, which is what the flow does (its gradient is below
    1e-300).
    Depth 1 calls ``_forward_depth1`` and the in-place ``_increments_depth1``
    directly (the numbers of ``_forward`` and ``_step``, without their call
    layers: each call that passes the ``KStats`` and ``_Work`` NamedTuples
    costs their reference counting)."""
    a, z, f, lp, qn, rows = w.a, w.z, w.f, w.lp, w.qn, w.rows
    while t < t_end:
        if count[0] >= fc.max_steps:
            return 4, t
        if U is None:
            _forward_depth1(A, gamma, rho, v, st, cfg, a, z, f, cfg.general)
        else:
            _forward(A, gamma, rho, U, v, st, cfg, w)
        reason, loss = _lprime_stable(f, st.y, lp)
        if reason != 0:
            return reason, t
        if loss == 0.0:  # every l' underflowed: by a step of this scheme, or GD's state
            return (LOSS_UNDERFLOW, t) if count[0] > 0 else (0, t_end)
        dt = normalised_dt(L0, loss, t, t_end, fc.max_dt_frac)
        if U is None:
            bad = _increments_depth1(gamma, rho, v, a, z, lp, st, mu * mu, cfg.c, cfg.eta * dt,
                                     cfg.eta_v * dt, cfg.train_v, w.dgamma, w.drho, w.dv,
                                     cfg.act, cfg.act_a, cfg.general, qn, rows, True)
            reason = 3 if bad else 0
        else:
            reason = _step(mu * mu, gamma, rho, U, v, st, cfg, w, cfg.eta * dt,
                           cfg.eta_v * dt, 0.0, None)
        count[0] += 1
        t = t_end if dt >= t_end - t else t + dt
        if reason != 0:
            return reason, t
    return 0, t


@njit(cache=True)
def pattern_leg(A, mu, gamma, rho, U, v, st, cfg, fc, fc_leg, w, t, t_end, L0, count):
    """The flow from t to t_end whose state only seeds the limit program
    (depth 1; ``PatternLeg``): ``normalised_gd`` with fc's steps up to
    fc.gd_max, then with fc_leg's coarser ones; if a coarse step overshoots
    (any failure: the loss underflows to 0, a divergence), the coarse part is
    taken again from its start with fc's steps, so the leg fails only where
    fc's steps fail too.  Returns (reason, t); count[0] counts the steps of
    the path whose state is returned."""
    t_fine = min(max(t, fc.gd_max), t_end)
    reason, t = normalised_gd(A, mu, gamma, rho, U, v, st, cfg, fc, w, t, t_fine, L0, count)
    if reason != 0 or t >= t_end:
        return reason, t
    gamma0, rho0, v0, count0 = np.empty_like(gamma), np.empty_like(rho), np.empty_like(v), count[0]
    _copy_flat(gamma0, gamma)
    _copy_flat(rho0, rho)
    _copy_flat(v0, v)
    reason, t1 = normalised_gd(A, mu, gamma, rho, U, v, st, cfg, fc_leg, w, t, t_end, L0, count)
    if reason == 0:
        return reason, t1
    _copy_flat(gamma, gamma0)
    _copy_flat(rho, rho0)
    _copy_flat(v, v0)
    count[0] = count0
    return normalised_gd(A, mu, gamma, rho, U, v, st, cfg, fc, w, t, t_end, L0, count)
