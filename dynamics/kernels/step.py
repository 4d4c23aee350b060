"""One step at any depth: the forward pass and the increments dispatched by
depth (``U is None``: depth 1, ``step1``; else ``deep``), the update with
momentum, and the training outputs of recorded states.

The dispatch is on the argument's type: Numba prunes the branch of the
other depth before typing, so each compiled path holds one depth's code.
"""
from __future__ import annotations

from numba import njit

from .deep import _forward_deep, _increments_deep
from .primitives import _apply
from .step1 import _forward_depth1, _increments_depth1


@njit(cache=True)
def _forward(A, gamma, rho, U, v, st, cfg, w):
    """Forward pass of the current state into the work buffers."""
    if U is None:
        _forward_depth1(A, gamma, rho, v, st, cfg, w.a, w.z, w.f, cfg.general)
    else:
        _forward_deep(A, gamma, rho, U, v, st, cfg, w.H, w.f)


@njit(cache=True)
def _increments(gamma, rho, U, v, w, st, mu2, c, eta, eta_v, train_v, act, act_a, general):
    """Increments into w.dgamma, w.drho, w.dU, w.dv after ``_forward`` and
    l'.  The GD step uses (eta, eta_v); the normalised scheme scales both by
    its time step."""
    if U is None:
        _increments_depth1(gamma, rho, v, w.a, w.z, w.lp, st, mu2, c, eta, eta_v, train_v,
                           w.dgamma, w.drho, w.dv, act, act_a, general, w.qn, w.rows,
                           False)
    else:
        _increments_deep(gamma, U, v, w.H, w.delta, w.qd, w.lp, st, mu2, c, eta, eta_v,
                         train_v, w.dgamma, w.drho, w.dU, w.dv)


@njit(cache=True)
def _apply_all(gamma, rho, U, v, w, train_v, beta):
    """theta += u, u = beta u + delta for every trained block; returns 3 if a
    coefficient exceeds THETA_MAX, else 0."""
    bad = _apply(gamma.ravel(), w.dgamma.ravel(), w.mg.ravel(), beta)
    bad |= _apply(rho.ravel(), w.drho.ravel(), w.mr.ravel(), beta)
    if U is not None:
        bad |= _apply(U.ravel(), w.dU.ravel(), w.mU.ravel(), beta)
    if train_v:
        bad |= _apply(v.ravel(), w.dv.ravel(), w.mv.ravel(), beta)
    return 3 if bad else 0


@njit(cache=True)
def _step(mu2, gamma, rho, U, v, st, cfg, w, eta, eta_v, beta, momentum):
    """One step theta += u, u = beta u + delta(eta, eta_v) in place after
    ``_forward`` and l' filled the work buffers; returns 3 if a coefficient
    exceeds THETA_MAX, else 0.  Depth 1 without momentum (``momentum`` None,
    beta = 0: a compile-time choice, the generic branch is pruned) adds the
    increments as they are formed (``_increments_depth1`` inplace: the same
    numbers)."""
    if U is None:
        if momentum is None:
            bad = _increments_depth1(gamma, rho, v, w.a, w.z, w.lp, st, mu2, cfg.c, eta,
                                     eta_v, cfg.train_v, w.dgamma, w.drho, w.dv, cfg.act,
                                     cfg.act_a, cfg.general, w.qn, w.rows, True)
            return 3 if bad else 0
    _increments(gamma, rho, U, v, w, st, mu2, cfg.c, eta, eta_v, cfg.train_v, cfg.act,
                cfg.act_a, cfg.general)
    return _apply_all(gamma, rho, U, v, w, cfg.train_v, beta)


@njit(cache=True, inline="always")
def _gd_step(A, mu2, gamma, rho, U, v, st, cfg, w, momentum):
    """One GD (or heavy-ball) step in place after ``_forward`` and ``_lprime``
    filled the work buffers; returns 3 if a coefficient exceeds THETA_MAX, else 0.
    ``momentum``: None for plain GD (cfg.beta == 0), True with momentum."""
    return _step(mu2, gamma, rho, U, v, st, cfg, w, cfg.eta, cfg.eta_v, cfg.beta, momentum)
