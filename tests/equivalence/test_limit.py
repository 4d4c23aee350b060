"""The limit t -> infinity as the max-margin program of the activation pattern
(dynamics/limit.py; docs/guide/time-and-limit.md)."""
import numpy as np
import pytest
from scipy.optimize import minimize
from threadpoolctl import threadpool_limits

import dynamics.limit as lm
import dynamics.limit_run as lr
from dynamics import Params
from dynamics.data import sample_data, sample_stats
from dynamics.kernels import theta_norm_sq
from dynamics.params import ParamError
from dynamics.run import kernel_config, kernel_stats, simulate_flow

SMALL = dict(d=100, n=10, m=5, n_test=400, v0=1e-3, mu_norm=4.0)


def flow_state(p, times, sampler="wishart", seed=0):
    """Flow trajectory and kernel statistics of one run."""
    p = p.replace(seed=seed)
    tr = simulate_flow(p, "exact", sampler, times=times)
    return tr, kernel_stats(tr.stats)


def flow_margin(kst, cfg, mu, gamma, rho, v):
    f, _ = lr.outputs(kst, cfg, mu, gamma, rho, v)
    return float(np.min(kst.y * f)) / theta_norm_sq(mu * kst.w0_e1, mu, gamma, rho, kst.U0, v,
                                                      kst, True)


def nonconvex_opt(prob, pat, starts=12, seed=0):
    """Brute force: min ||theta||^2 / 2 over the original parameters
    (a, v_1, w_perp, v_2) of every filter, restricted to the pattern, by
    SLSQP from random starts (no u-substitution, no cone)."""
    n, m = prob.n, pat.sa.shape[1]
    U = 2 * m
    js = np.repeat([1.0, -1.0], m)
    sa, s1, s2 = pat.sa.ravel(), pat.s1.ravel(), pat.s2.ravel()
    act = pat.act.reshape(U, n)
    L = prob.L

    def unpack(x):
        return x[:U], x[U:2 * U], x[2 * U:2 * U + U * n].reshape(U, n), x[2 * U + U * n:]

    def margins(x):
        a, v1, W, v2 = unpack(x)
        z = W @ L.T  # (U, n) <w_perp, xi_i>
        sig = v1[:, None] * np.maximum(prob.yhat[None, :] * prob.mu * a[:, None], 0.0)
        noi = v2[:, None] * np.where(act, z, 0.0)
        return prob.y * prob.c * (js @ (sig + noi)) - 1.0

    def margins_jac(x):  # d margins_i / d (a, v1, W, v2)
        a, v1, W, v2 = unpack(x)
        z = W @ L.T
        pre = prob.yhat[None, :] * prob.mu * a[:, None]          # (U, n)
        w = (prob.y * prob.c)[:, None] * js[None, :]             # (n, U)
        d_a = w * (v1[:, None] * prob.mu * prob.yhat[None, :] * (pre > 0)).T
        d_v1 = w * np.maximum(pre, 0.0).T
        d_W = (w * (v2[:, None] * act).T)[:, :, None] * L[:, None, :]   # (n, U, n)
        d_v2 = w * np.where(act, z, 0.0).T
        return np.hstack([d_a, d_v1, d_W.reshape(n, U * n), d_v2])

    def pattern(x):
        a, v1, W, v2 = unpack(x)
        z = W @ L.T
        return np.concatenate([sa * a, s1 * v1, s2 * v2, ((2.0 * act - 1.0) * z).ravel()])

    sgn = (2.0 * act - 1.0)
    jac_pattern = np.zeros((3 * U + U * n, 3 * U + U * n))   # pattern() is linear in x
    jac_pattern[:U, :U] = np.diag(sa)
    jac_pattern[U:2 * U, U:2 * U] = np.diag(s1)
    jac_pattern[2 * U:3 * U, 2 * U + U * n:] = np.diag(s2)
    for u in range(U):   # rows (u, i): sgn_ui <W_u, L_i>
        jac_pattern[3 * U + u * n:3 * U + (u + 1) * n, 2 * U + u * n:2 * U + (u + 1) * n] = \
            sgn[u][:, None] * L

    rng = np.random.default_rng(seed)
    best = np.inf
    with threadpool_limits(1):  # tiny products: BLAS threads only spin on a busy machine
        for _ in range(starts):
            x0 = rng.normal(size=3 * U + U * n)
            res = minimize(lambda x: 0.5 * x @ x, x0, jac=lambda x: x, method="SLSQP",
                           constraints=[{"type": "ineq", "fun": margins, "jac": margins_jac},
                                        {"type": "ineq", "fun": pattern,
                                         "jac": lambda x: jac_pattern}],
                           options=dict(maxiter=500, ftol=1e-12))
            if res.success and margins(res.x).min() > -1e-7 and pattern(res.x).min() > -1e-7:
                best = min(best, res.fun)
    return best


def tiny_problem(seed):
    p = Params(d=50, n=4, m=2, n_test=50, mu_norm=1.5, seed=seed)
    kst = kernel_stats(sample_stats(p, "wishart"))
    return p, kst, lm.make_problem(kst, p, p.mu_norm)


@pytest.mark.parametrize("seed", [0, 1])
def test_program_equals_brute_force_on_enumerated_patterns(seed):
    """OPT of the cone program == the nonconvex max-margin problem on the
    same pattern (original parameters, random restarts), several patterns."""
    p, kst, prob = tiny_problem(seed)
    rng = np.random.default_rng(100 + seed)
    checked = 0
    for _ in range(12):
        sa = rng.choice([-1.0, 1.0], size=(2, 2))
        pat = lm.Pattern(sa, rng.choice([-1.0, 1.0], size=(2, 2)),
                         rng.choice([-1.0, 1.0], size=(2, 2)), rng.random((2, 2, 4)) < 0.5)
        opt = lm.solve_pattern(prob, pat)
        if not opt.ok or not np.isfinite(opt.opt):
            continue
        brute = nonconvex_opt(prob, pat)
        assert opt.opt == pytest.approx(brute, rel=1e-5)
        checked += 1
    assert checked >= 3


def test_opt_bounds_flow_margin_at_every_checkpoint():
    """The flow's normalised margin at t never exceeds 1/(2 OPT_t) of its own
    pattern (the program is the best network with that pattern)."""
    p = Params(**SMALL)
    times = [1e3, 1e5, 1e10, 1e20]
    tr, kst = flow_state(p, times)
    cfg = kernel_config(p, "exact")
    prob = lm.make_problem(kst, p, p.mu_norm)
    ratios = []
    for k in range(len(times)):
        g, r, v = tr.gamma[k], tr.rho[k], tr.v[k]
        marg = flow_margin(kst, cfg, p.mu_norm, g, r, v)
        assert marg > 0
        opt = lm.solve_pattern(prob, lm.flow_pattern(kst, p.mu_norm, g, r, v))
        ratios.append(marg * 2 * opt.opt)
    assert max(ratios) <= 1 + 1e-6
    assert ratios[-1] > ratios[0]  # the flow approaches its pattern's optimum


@pytest.mark.parametrize("mu,v0", [(4.0, 1e-3), (2.0, 1.0)])
def test_repair_walk_decreases_and_ends_stationary(mu, v0):
    """Every accepted move lowers OPT; the certified end has no improving move."""
    p = Params(**{**SMALL, "mu_norm": mu, "v0": v0})
    tr, kst = flow_state(p, [1e3])
    prob = lm.make_problem(kst, p, mu)
    pat = lm.flow_pattern(kst, mu, tr.gamma[-1], tr.rho[-1], tr.v[-1])
    seen = []
    orig = lm.solve_pattern

    def spy(pr, pt, *hint):
        o = orig(pr, pt, *hint)
        seen.append(o.opt)
        return o
    lm.solve_pattern = spy
    try:
        lim = lm.repair(prob, pat)
    finally:
        lm.solve_pattern = orig
    assert lim.certified, lim.reason
    assert lim.optimum.opt <= lim.opt_pattern
    # the accepted solves form a strictly decreasing sequence ending at OPT
    accepted = [seen[0]]
    for o in seen[1:]:
        if o < accepted[-1] * (1 - lm.DECREASE):
            accepted.append(o)
    assert len(accepted) == lim.moves + 1
    assert accepted[-1] == pytest.approx(lim.optimum.opt, rel=1e-12)
    assert all(b < a for a, b in zip(accepted, accepted[1:]))
    left = lm.improving_moves(prob, lim.pattern, lim.optimum)
    for mv in left:  # any candidate left must not lower OPT when tried
        assert lm.solve_pattern(prob, lm.apply_move(lim.pattern, mv)).opt >= \
            lim.optimum.opt * (1 - 1e-7)
    assert min(lim.optimum.lam) >= -1e-7 * max(lim.optimum.lam)


def test_limit_is_a_kkt_point_of_the_network():
    """The repaired optimum, mapped back to a network, is a KKT point of
    min ||theta||^2/2 s.t. y_i f_i >= 1 (stationary for the normalised flow):
    theta = sum_i lambda_i y_i grad f_i, checked per unit on the network's
    own parameters (a, v_1, w_perp, v_2), for every unit off the kinks."""
    p = Params(**SMALL)
    tr, kst = flow_state(p, [200, 1e10])
    cfg = kernel_config(p, "exact")
    mu, c = p.mu_norm, p.c
    marg = flow_margin(kst, cfg, mu, tr.gamma[-1], tr.rho[-1], tr.v[-1])
    _, _, state, lim = lr.evaluate_limit(
        kst, cfg, p, mu, lr.FlowEnd(tr.gamma[-1], tr.rho[-1], tr.v[-1], marg, 1e10))
    assert lim.certified
    prob = lm.make_problem(kst, p, mu)
    lam, y, yhat = lim.optimum.lam, prob.y, prob.yhat
    gamma, rho, v = state
    js = np.array([1.0, -1.0])
    b = rho / kst.N  # w_perp = sum_k b_k xi_k
    omega = b @ prob.L  # coordinates in the orthonormal basis
    z = omega @ prob.L.T  # <w_perp, xi_i>
    checked = 0
    for j in range(2):
        for r in range(p.m):
            a = js[j] * gamma[j, r] / mu
            on = yhat * a > 0
            ga = np.sum(lam * y * c * js[j] * v[j, r, 0] * yhat * mu * on)
            gv1 = np.sum(lam * y * c * js[j] * np.maximum(yhat * mu * a, 0.0))
            assert ga == pytest.approx(a, abs=1e-6 * (1 + abs(a)))
            assert gv1 == pytest.approx(v[j, r, 0], abs=1e-6 * (1 + abs(v[j, r, 0])))
            size = np.linalg.norm(omega[j, r])
            if size == 0.0:
                continue
            kink = np.abs(z[j, r]) <= 1e-6 * size
            act = (z[j, r] > 0) & ~kink
            coef = lam * y * c * js[j] * v[j, r, 1]  # gradient weight of sample i
            resid = omega[j, r] - (coef * act) @ prob.L
            # on a kink the ReLU's subgradient is t in [0, 1]: resid = sum t_i coef_i xi_i
            t = np.zeros(0)
            if kink.any():
                basis = (coef[kink][:, None] * prob.L[kink])
                t, *_ = np.linalg.lstsq(basis.T, resid, rcond=None)
                resid = resid - basis.T @ t
            assert np.linalg.norm(resid) <= 1e-5 * (1 + size)
            assert np.all(t >= -1e-4) and np.all(t <= 1 + 1e-4)
            gv2 = np.sum(lam * y * c * js[j] * np.maximum(z[j, r], 0.0))
            assert gv2 == pytest.approx(v[j, r, 1], abs=1e-6 * (1 + abs(v[j, r, 1])))
            checked += 1
    assert checked >= 1


def test_flow_from_the_scaled_limit_keeps_its_direction():
    """A KKT point is stationary for the normalised flow: started from the
    repaired optimum (w(0) dropped) scaled by 3 (margins 9: no underflow), the
    flow to t = 1e6 grows the outputs 1.4x and keeps their direction to
    1 - cos < 1e-3; from a 10% perturbation of it (which starts 3x further
    away), the flow comes back (halves its distance to the limit)."""
    from dynamics.kernels import State, flow_kernel, records
    from dynamics.run import FLOW

    p = Params(**SMALL)
    tr, kst = flow_state(p, [200, 1e10])
    cfg = kernel_config(p, "exact")
    mu = p.mu_norm
    marg = flow_margin(kst, cfg, mu, tr.gamma[-1], tr.rho[-1], tr.v[-1])
    _, _, state, lim = lr.evaluate_limit(
        kst, cfg, p, mu, lr.FlowEnd(tr.gamma[-1], tr.rho[-1], tr.v[-1], marg, 1e10))
    assert lim.certified
    st0 = kst._replace(w0_e1=np.zeros_like(kst.w0_e1), B=np.zeros_like(kst.B),
                       test_B=np.zeros_like(kst.test_B))
    f_lim = np.concatenate(lr.outputs(st0, cfg, mu, *state))

    def distance(f):
        return 1.0 - f @ f_lim / (np.linalg.norm(f) * np.linalg.norm(f_lim))

    def flow_from(gamma, rho, v):
        """(output growth, 1 - cos to the limit's outputs at t = 0 and t = 1e6)."""
        state = State(gamma.copy(), rho.copy(), kst.U0.copy(), v.copy())
        out = records(1, state)
        flow_kernel(st0, cfg, FLOW, mu, state, np.array([1e6]), out)
        assert out.status[0] == -1 and out.info[2] > 100  # ran normalised steps, no failure
        f0 = np.concatenate(lr.outputs(st0, cfg, mu, gamma, rho, v))
        f1 = np.concatenate(lr.outputs(st0, cfg, mu, out.gamma[0], out.rho[0], out.v[0]))
        return np.linalg.norm(f1) / np.linalg.norm(f0), distance(f0), distance(f1)

    grow, start, end = flow_from(*(3.0 * x for x in state))
    assert grow > 1.3 and start < 1e-12 and end < 1e-3
    rng = np.random.default_rng(0)
    _, start_p, end_p = flow_from(*(3.0 * x * (1.0 + 0.1 * rng.normal(size=x.shape))
                                    for x in state))
    assert start_p > 3.0 * end and end_p < 0.5 * start_p


def test_program_workers_give_the_serial_results():
    """The programs of a batch in forked workers (limit_run.map_programs)
    equal the same programs run in this process, bit for bit."""
    from dynamics.limit_run import POOL_MIN, map_programs

    p = Params(**SMALL)
    items = []
    for seed in range(POOL_MIN):
        tr, kst = flow_state(p.replace(mu_norm=2.0 + 0.2 * seed), [200, 1e6], seed=seed % 3)
        mu = 2.0 + 0.2 * seed
        items.append((lm.make_problem(kst, p, mu),
                      lm.flow_pattern(kst, mu, tr.gamma[-1], tr.rho[-1], tr.v[-1])))
    serial = map_programs(items, 1)
    pooled = map_programs(items, 2)
    for (a, za), (b, zb) in zip(serial, pooled):
        assert a.optimum.opt == b.optimum.opt and a.moves == b.moves
        assert np.array_equal(a.optimum.lam, b.optimum.lam)
        assert np.array_equal(za, zb, equal_nan=True)


def test_reduced_program_equals_weight_space_program():
    """The program built from the Gram (reduced) and from the real vectors of
    the network (orthonormal basis by QR, pattern from the rebuilt W) agree."""
    p = Params(**SMALL)
    real = sample_data(p)
    tr = simulate_flow(p, "exact", "data", times=[200, 1e8], stats=real.stats)
    kst = kernel_stats(real.stats)
    g, r, v = tr.gamma[-1], tr.rho[-1], tr.v[-1]
    prob = lm.make_problem(kst, p, p.mu_norm)
    opt = lm.solve_pattern(prob, lm.flow_pattern(kst, p.mu_norm, g, r, v))
    # weight space: W = W0 + j gamma mu/||mu||^2 + sum_k rho_k xi_k / N_k
    js = np.array([1.0, -1.0])[:, None, None]
    mu_vec = real.mu * p.mu_norm / np.linalg.norm(real.mu)
    N = np.sum(real.xi ** 2, axis=1)
    W = real.W0 + js * g[..., None] * mu_vec / p.mu_norm ** 2 + np.einsum(
        "jrk,kd->jrd", r / N, real.xi)
    e1 = mu_vec / p.mu_norm
    a = W @ e1
    z = W @ real.xi.T
    pat_ws = lm.Pattern(np.where(a < 0, -1.0, 1.0), np.where(v[..., 0] < 0, -1.0, 1.0),
                        np.where(v[..., 1] < 0, -1.0, 1.0), z > 0)
    Qm, R = np.linalg.qr(real.xi.T)
    prob_ws = lm.Problem(R.T, kst.y, kst.yhat, p.mu_norm, p.c, 0.0)
    opt_ws = lm.solve_pattern(prob_ws, pat_ws)
    assert opt_ws.opt == pytest.approx(opt.opt, rel=1e-8)


def test_samplers_agree_in_law_on_the_limit_test_error():
    """wishart and data draws give the same law of the limit test error."""
    p = Params(**{**SMALL, "mu_norm": 3.0})
    errs = {}
    for sampler in ("wishart", "data"):
        vals = []
        for seed in range(10):
            tr = simulate_flow(p.replace(seed=seed), "exact", sampler, times=[200, 1e8, np.inf])
            vals.append(tr.test_error)
        errs[sampler] = np.array(vals)
    a, b = errs["wishart"], errs["data"]
    se = np.sqrt(a.var(ddof=1) / a.size + b.var(ddof=1) / b.size)
    assert abs(a.mean() - b.mean()) < 3 * se + 0.02


def test_tie_error_counts_half():
    err, ties = lm.tie_error(np.array([1.0, -1.0, 0.0, 0.0]), np.array([1.0, 1.0, 1.0, -1.0]))
    assert ties == 0.5 and err == pytest.approx(0.25 + 0.25)


@pytest.mark.parametrize("kw,level", [({"depth": 2}, "exact"), ({"activation": "relu^2"}, "exact"),
                                      ({}, "orthogonal"), ({"train_v": False}, "exact")])
def test_inf_refused_where_no_program_exists(kw, level):
    p = Params(**{**SMALL, **kw})
    with pytest.raises(ParamError, match="finite late time"):
        lm.check_limit(p, level)


def test_cli_inf_refused_with_one_line(tmp_path):
    from click.testing import CliRunner

    from compare.cli import main

    res = CliRunner().invoke(main, ["simulate", "--d", "100", "--n", "10", "--m", "5",
                                    "--n-test", "100", "--depth", "2", "--integrator", "flow",
                                    "--times", "200,inf"])
    assert res.exit_code != 0
    assert "finite late time" in res.output and "Traceback" not in res.output


def _late_items(count, times=(200, 1e6)):
    """(problem, flow pattern) of ``count`` SMALL runs over seeds, ||mu|| and v0."""
    items = []
    for k in range(count):
        mu, v0 = 2.0 + 0.5 * (k % 5), (1e-3, 1.0)[k % 2]
        p = Params(**{**SMALL, "mu_norm": mu, "v0": v0})
        tr, kst = flow_state(p, list(times), seed=k)
        items.append((lm.make_problem(kst, p, mu),
                      lm.flow_pattern(kst, mu, tr.gamma[-1], tr.rho[-1], tr.v[-1])))
    return items


def _default_size_item():
    """(problem, pattern at t = 1e30) of a default-size run (n = m = 20,
    d = 1000) whose repair walk takes 3 moves."""
    p = Params(n_test=400, mu_norm=6.0, v0=1.0, seed=4)
    tr, kst = flow_state(p, [200, 1e30], seed=4)
    return lm.make_problem(kst, p, 6.0), lm.flow_pattern(kst, 6.0, tr.gamma[-1], tr.rho[-1],
                                                          tr.v[-1])


def test_column_generation_equals_the_whole_program():
    """solve_pattern restricts the program to a few noise groups and prices
    the others by their dual norm: same OPT as the whole program (every
    group from the start), and it does drop groups."""
    import dynamics.limit_program as lp

    dropped = 0
    for prob, pat in _late_items(6):
        cg = lp.solve_pattern(prob, pat)
        whole = lp.solve_pattern(prob, pat, np.ones(pat.sa.shape, bool))
        assert cg.ok and whole.ok
        assert cg.opt == pytest.approx(whole.opt, rel=1e-7)
        assert whole.info["groups"] == len(lp.layout(prob, pat).noi)
        dropped += whole.info["groups"] - cg.info["groups"]
    assert dropped > 0


def test_certified_end_has_no_improving_flip_near_a_kink():
    """After the repair, no entry of a nonzero noise unit within 1e-4 ||u||
    of its kink (a band wider than any fixed threshold the walk could use)
    whose flipped side has a negative multiplier lowers OPT when flipped.
    (A kink test |<u, xi_i>| <= 1e-6 ||u|| depends on the solver's accuracy
    on the kink values, 1e-9 .. 1e-4; the walk reads kinks from
    complementarity.)  The default-size run has such an entry."""
    tried = 0
    items = _late_items(4) + [_default_size_item()]
    for prob, pat in items:
        lim = lm.repair(prob, pat)
        assert lim.certified, lim.reason
        opt = lim.optimum
        _, zn = lm._zero_units(opt)
        zz = np.einsum("ik,jrk->jri", prob.L, opt.beta)
        size = np.linalg.norm(opt.beta, axis=2)
        for j, r in zip(*np.nonzero(~zn)):
            for i in np.nonzero(np.abs(zz[j, r]) <= 1e-4 * size[j, r])[0]:
                old = lim.pattern.act[j, r, i]
                a_old, a_new = (1.0, prob.alpha) if old else (prob.alpha, 1.0)
                nu_new = -opt.nu[j, r, i] - (1.0 if old else -1.0) * opt.lam[i] * prob.y[i] \
                    * prob.c * (1.0 - 2.0 * j) * lim.pattern.s2[j, r] * (a_old - a_new)
                if nu_new >= 0.0:
                    continue
                flipped = lm.apply_move(lim.pattern, (0.0, "flip", (j, r, int(i))))
                assert lm.solve_pattern(prob, flipped).opt >= opt.opt * (1.0 - 1e-6)
                tried += 1
    assert tried > 0


def test_coarse_pattern_leg_gives_the_fine_limit():
    """The flow on to the pattern time with PATTERN_FLOW's coarse steps seeds
    the same certified limit as the finely stepped flow (FLOW), run by run."""
    from dynamics.batch import stacked_stats
    from dynamics.kernels import Jobs
    from dynamics.limit import LIMIT_FIELDS
    from dynamics.run import FLOW, PATTERN_FLOW

    assert PATTERN_FLOW.max_dt_frac > 5 * FLOW.max_dt_frac
    p = Params(**SMALL)
    st = stacked_stats(p, "wishart", [0, 1, 2, 3])
    mus = np.array([2.0, 3.0, 4.0])
    jobs = Jobs(np.tile(np.arange(4), mus.size), np.repeat(mus, 4), np.full(12, p.v0))
    cp = np.array([200.0, np.inf])
    coarse = lr.limit_batch(p, "exact", st, jobs, cp, use_flow=False)
    orig = lr.PATTERN_FLOW
    lr.PATTERN_FLOW = FLOW
    try:
        fine = lr.limit_batch(p, "exact", st, jobs, cp, use_flow=False)
    finally:
        lr.PATTERN_FLOW = orig
    assert np.all(coarse["info"][:, 2] < 0.3 * fine["info"][:, 2])  # fewer flow steps
    np.testing.assert_array_equal(coarse["test_error"][:, -1], fine["test_error"][:, -1])
    k = LIMIT_FIELDS.index("opt")
    np.testing.assert_allclose(coarse["limit"][:, k], fine["limit"][:, k], rtol=1e-7)


def test_repaired_limit_does_not_depend_on_the_solver_path():
    """Column generation and the whole program reach the optimum along
    different interior-point iterates; the repair walk (kinks by
    complementarity, moves kept above the solver's accuracy) ends at the same
    pattern and OPT with either."""
    import dynamics.limit_program as lp

    def whole(prob, pat, units=None):
        return lp.solve_pattern(prob, pat, np.ones(pat.sa.shape, bool))

    moves = 0
    for prob, pat in _late_items(4, times=(200, 1e10)) + [_default_size_item()]:
        cg = lm.repair(prob, pat)
        moves += cg.moves
        orig = lm.solve_pattern
        lm.solve_pattern = whole
        try:
            ref = lm.repair(prob, pat)
        finally:
            lm.solve_pattern = orig
        assert cg.certified and ref.certified
        assert np.array_equal(cg.pattern.act, ref.pattern.act) and cg.moves == ref.moves
        assert cg.optimum.opt == pytest.approx(ref.optimum.opt, rel=1e-7)
    assert moves >= 3


def test_pattern_leg_retakes_a_failed_coarse_part_with_fine_steps():
    """When the coarse part of the pattern leg fails (here: its step budget
    is spent at once), the leg is taken again from 1e6 with FLOW's steps:
    the same results, bit for bit, as a leg with FLOW's steps throughout."""
    from dynamics.batch import stacked_stats
    from dynamics.kernels import Jobs
    from dynamics.run import FLOW

    p = Params(**SMALL)
    st = stacked_stats(p, "wishart", [0, 1])
    jobs = Jobs(np.tile(np.arange(2), 2), np.repeat([2.0, 4.0], 2), np.full(4, p.v0))
    cp = np.array([200.0, np.inf])
    orig = lr.PATTERN_FLOW
    try:
        lr.PATTERN_FLOW = FLOW._replace(max_dt_frac=0.2, max_steps=1)
        failed = lr.limit_batch(p, "exact", st, jobs, cp, use_flow=False)
        lr.PATTERN_FLOW = FLOW
        fine = lr.limit_batch(p, "exact", st, jobs, cp, use_flow=False)
    finally:
        lr.PATTERN_FLOW = orig
    assert np.all(failed["status"][:, 0] == -1)
    for k in ("test_error", "margin", "info", "limit"):
        np.testing.assert_array_equal(failed[k], fine[k])
