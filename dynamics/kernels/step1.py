"""The depth-1 step as docs/theory.md#exact-recursion writes it (the reference
every faster copy reproduces bit for bit; ARCHITECTURE.md "Second copies").

At step t, right-hand sides at t:

  s_{j,r,i} = yhat_i a_{j,r},  a_{j,r} = A_{j,r} + j gamma_{j,r},  A = ||mu|| <w0, e_1>
  z_{j,r,i} = B_{j,r,i} + sum_k rho_{j,r,k} G_{k,i}     (G = I: "orthogonal")
  f_i       = c sum_j j sum_r [v_{j,r,1} sigma(s) + v_{j,r,2} sigma(z)]
  l'_i      = -1 / (1 + exp(y_i f_i)),  q_i = l'_i y_i
  gamma    += -(eta c/n) ||mu||^2 v_{j,r,1} sum_i q_i yhat_i sigma'(s)
  rho_i    += -(eta c/n) N_i j q_i v_{j,r,2} sigma'(z)
  v_{j,r,1}+= -(eta_v c/n) j sum_i q_i sigma(s)      (not if v frozen)
  v_{j,r,2}+= -(eta_v c/n) j sum_i q_i sigma(z)

sigma = ReLU for the paper's model (docs/theory.md#general-reduction for the
others).  Heavy-ball momentum (beta) acts on these increments: u = beta u +
delta, theta += u; exact, since momentum in weight space is linear in the
gradients.
"""
from __future__ import annotations

from numba import njit

from ..params import THETA_MAX
from .primitives import _dsig, _noise_block, _sig, _sig_from


@njit(cache=True)
def _accumulate_outputs(f, js, c, Aj, gammaj, vj, yhat, z, act, act_a, general):
    """f_i += j c [v1_r sigma(yhat_i a_r) + v2_r sigma(z_{r,i})] for the filters
    r = 0, 1, ... of one class j in turn, a_r = A_r + j gamma_r (one call per
    class, not per filter: the call's array arguments cost more than a
    filter's loop over a test block; ReLU: the constant act = 0, a
    branch-free loop that vectorises)."""
    if general is None:
        _accumulate_outputs_body(f, js, c, Aj, gammaj, vj, yhat, z, 0, 0.0)
    else:
        _accumulate_outputs_body(f, js, c, Aj, gammaj, vj, yhat, z, act, act_a)


@njit(cache=True, inline="always")
def _accumulate_outputs_body(f, js, c, Aj, gammaj, vj, yhat, z, act, act_a):
    """``_accumulate_outputs`` for activation (act, act_a)."""
    js_c = js * c
    for r in range(z.shape[0]):
        ar = Aj[r] + js * gammaj[r]
        v1, v2, zr = vj[r, 0], vj[r, 1], z[r]
        for i in range(f.shape[0]):
            f[i] += js_c * (v1 * _sig(yhat[i] * ar, act, act_a) + v2 * _sig(zr[i], act, act_a))


@njit(cache=True)
def _forward_depth1(A, gamma, rho, v, st, cfg, a, z, f, general):
    """Depth 1: fill a (2, m) with a_{j,r} = A_{j,r} + j gamma_{j,r} (the signal
    pre-activation is s_{j,r,i} = yhat_i a_{j,r}), z (2, m, n) and f (n) for
    the current state (docs/theory.md#exact-recursion).
    ReLU calls the body with the constant act = 0, so it compiles to the
    branch-free ReLU loop (the activation test folds away)."""
    if general is None:
        _forward_depth1_body(A, gamma, rho, v, st, cfg, a, z, f, 0, 0.0)
    else:
        _forward_depth1_body(A, gamma, rho, v, st, cfg, a, z, f, cfg.act, cfg.act_a)


@njit(cache=True, inline="always")
def _forward_depth1_body(A, gamma, rho, v, st, cfg, a, z, f, act, act_a):
    """``_forward_depth1`` for activation (act, act_a) (``_sig``); the outputs are
    the test outputs' accumulation (``_accumulate_outputs_body``)."""
    m = gamma.shape[1]
    yhat, B, G, c, use_gram = st.yhat, st.B, st.G, cfg.c, cfg.use_gram
    f[:] = 0.0
    for j in range(2):
        js = 1.0 - 2.0 * j
        _noise_block(z[j], B[j], rho[j], G, use_gram)
        for r in range(m):
            a[j, r] = A[j, r] + js * gamma[j, r]
        _accumulate_outputs_body(f, js, c, A[j], gamma[j], v[j], yhat, z[j], act, act_a)


@njit(cache=True)
def _increments_depth1(gamma, rho, v, a, z, lp, st, mu2, c, eta, eta_v, train_v, dgamma, drho, dv,
                 act, act_a, general, qn, rows, inplace):
    """Depth 1: increments of (gamma, rho, v) at t from a, z, l' (docs/theory.md#exact-recursion, with
    1[. > 0] -> sigma'(.) and ReLU -> sigma for other activations, docs/theory.md#general-reduction).
    ReLU runs the body with the constant act = 0 (branches fold away).
    qn (3, n) and rows (3, m) are work buffers.  inplace: add each increment
    to the state as it is formed (plain GD: theta += delta, the numbers of
    ``_apply`` with beta = 0; exact, since the increments of filter (j, r)
    read only a, z, l' and v_{j,r}, which is updated last) instead of
    writing dgamma, drho, dv; returns True when a coefficient is then not
    <= THETA_MAX (always False when not inplace)."""
    if general is None:
        return _increments_depth1_body(gamma, rho, v, a, z, lp, st, mu2, c, eta, eta_v, train_v,
                                 dgamma, drho, dv, 0, 0.0, qn, rows, inplace)
    return _increments_depth1_body(gamma, rho, v, a, z, lp, st, mu2, c, eta, eta_v, train_v, dgamma,
                             drho, dv, act, act_a, qn, rows, inplace)


@njit(cache=True, inline="always")
def _increments_depth1_body(gamma, rho, v, a, z, lp, st, mu2, c, eta, eta_v, train_v, dgamma, drho,
                      dv, act, act_a, qn, rows, inplace):
    """``_increments_depth1`` for activation (act, act_a).  Per element the same
    operations in the same order as the formulas above (q_i = l'_i y_i,
    sums over i ascending), arranged for SIMD: the per-sample factors q_i,
    q_i yhat_i and (eta c/n) N_i j q_i once per step; the signal sums for all
    filters at once (filters innermost: independent sums side by side); the
    noise sums four filters at a time."""
    m = gamma.shape[1]
    n = st.yhat.shape[0]
    cw = eta * c / n
    cv = eta_v * c / n
    q, qy, P = qn[0], qn[1], qn[2]
    sg, sv1, sv2 = rows[0], rows[1], rows[2]
    yhat, y, N = st.yhat, st.y, st.N
    bad = False
    for i in range(n):
        q[i] = lp[i] * y[i]
        qy[i] = q[i] * yhat[i]
    for j in range(2):
        js = 1.0 - 2.0 * j
        for i in range(n):
            P[i] = cw * N[i] * js * q[i]
        aj = a[j]  # a_r = A_{j,r} + j gamma_{j,r}
        for r in range(m):
            sg[r] = 0.0
            sv1[r] = 0.0
        for i in range(n):  # signal: s_{j,r,i} = yhat_i a_r
            yh, qi, qyi = yhat[i], q[i], qy[i]
            for r in range(m):
                si = yh * aj[r]
                ms = _dsig(si, act, act_a)
                sg[r] += qyi * ms
                sv1[r] += qi * _sig_from(si, ms, act, act_a)
        for r in range(m):  # noise increments
            v2 = v[j, r, 1]
            zr = z[j, r]
            if inplace:
                rr = rho[j, r]
                for i in range(n):
                    x = rr[i] + (-(P[i] * v2) * _dsig(zr[i], act, act_a))
                    rr[i] = x
                    bad |= not abs(x) <= THETA_MAX
            else:
                dr = drho[j, r]
                for i in range(n):
                    dr[i] = -(P[i] * v2) * _dsig(zr[i], act, act_a)
        r = 0 if train_v else m  # the noise sums feed only the v increments
        while r + 4 <= m:  # noise sums, four filters side by side
            z0, z1, z2, z3 = z[j, r], z[j, r + 1], z[j, r + 2], z[j, r + 3]
            t0 = 0.0
            t1 = 0.0
            t2 = 0.0
            t3 = 0.0
            for i in range(n):
                qi = q[i]
                x0, x1, x2, x3 = z0[i], z1[i], z2[i], z3[i]
                t0 += qi * _sig_from(x0, _dsig(x0, act, act_a), act, act_a)
                t1 += qi * _sig_from(x1, _dsig(x1, act, act_a), act, act_a)
                t2 += qi * _sig_from(x2, _dsig(x2, act, act_a), act, act_a)
                t3 += qi * _sig_from(x3, _dsig(x3, act, act_a), act, act_a)
            sv2[r], sv2[r + 1], sv2[r + 2], sv2[r + 3] = t0, t1, t2, t3
            r += 4
        while r < m:
            t0 = 0.0
            zr = z[j, r]
            for i in range(n):
                t0 += q[i] * _sig_from(zr[i], _dsig(zr[i], act, act_a), act, act_a)
            sv2[r] = t0
            r += 1
        for r in range(m):
            dg = -(cw * mu2 * v[j, r, 0] * sg[r])
            dv1 = -(cv * js * sv1[r]) if train_v else 0.0
            dv2 = -(cv * js * sv2[r]) if train_v else 0.0
            if inplace:
                x = gamma[j, r] + dg
                gamma[j, r] = x
                bad |= not abs(x) <= THETA_MAX
                if train_v:
                    x1 = v[j, r, 0] + dv1
                    x2 = v[j, r, 1] + dv2
                    v[j, r, 0] = x1
                    v[j, r, 1] = x2
                    bad |= not (abs(x1) <= THETA_MAX and abs(x2) <= THETA_MAX)
            else:
                dgamma[j, r] = dg
                dv[j, r, 0] = dv1
                dv[j, r, 1] = dv2
    return bad
