"""Runs of the reduced model: ``simulate`` and the ``Trajectory`` it returns.

``Trajectory`` is shared with ``fullsim`` (level "full"), so both models give
the same object, on the same record schedule, for ``compare`` to put side by
side.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from .activation import activation, activation_code
from .data import Stats, check_memory, sample_stats
from .kernels import DIVERGENCE_REASONS, LOSS_UNDERFLOW, FlowConfig, KConfig, KStats, State, \
    clean_error_kernel, flow_kernel, outputs_kernel, records, run_kernel, theta_norm_sq
from .levels import LEVEL, PAPER, level_of, of_kind
from .params import SAMPLERS, Params, ParamError, check_choice, check_params, \
    check_record_every, record_count

def check_optimizer(params: Params, level: str):
    """Adam and sign GD act per weight coordinate: W leaves span{mu, xi_i}, so
    no reduced level describes them; they run only with level "full"."""
    kind = params.optimizer_spec[0]
    if kind in ("adam", "sign") and kind not in level_of(level).optimizers:
        raise ParamError("optimizer", params.optimizer,
                         f"{kind} acts per weight coordinate, so W leaves span{{mu, xi_i}} "
                         f"and no reduced level describes it; use --level full")


INTEGRATORS = ("gd", "flow")
# Long-time settings (kernels.FlowConfig): budget, limit criterion, horizon.
FLOW = FlowConfig(max_steps=1_000_000, max_dt_frac=0.02, gd_max=1e6)
# The flow on to the pattern time of t = inf beyond FLOW.gd_max
# (kernels.PatternLeg, flow.pattern_leg): only its activation pattern is
# used, which the repair walk then corrects, so 10x coarser steps (~13 per
# decade of t instead of ~116); to 1e100 the limit is the same as with FLOW's
# steps in 95 of 96 runs (docs/guide/time-and-limit.md, "Pattern time").
PATTERN_FLOW = FLOW._replace(max_dt_frac=0.2)


def check_integrator(params: Params, integrator: str) -> bool:
    """True for the flow; momentum has no gradient-flow counterpart here."""
    check_choice("integrator", integrator, INTEGRATORS)
    if integrator == "flow" and params.optimizer_spec[0] != "gd":
        raise ParamError("optimizer", params.optimizer,
                         "the gradient-flow integrator follows plain GD only (--optimizer gd)")
    return integrator == "flow"


def check_paper_model(params: Params, level: str):
    """The specialised levels hold for the paper's data only (signal e_1,
    projected noise); their kernels take any activation at depth 1, the
    weight-space network of ``fullsim.network`` (level full) only ReLU."""
    if level == "general":
        raise ParamError("level", level, "the general level runs through "
                         "dynamics.general.simulate_general (docs/theory.md#general-reduction)")
    if params.activation != "relu" and params.depth > 1:
        raise ParamError("activation", params.activation, "depth >= 2 (docs/theory.md#depth) is "
                         "implemented for relu only")
    names = (("activation", "relu"),) if level == "full" else ()
    for name, default in names + (("noise_model", "projected"), ("signal", "e1")):
        value = getattr(params, name)
        if value != default:
            hint = ("use --level general (the exact reduction of the family, equal to "
                    "the network to round-off)" if level == "full" else
                    "use --level general")
            raise ParamError(name, value, f"level {level} is specialised to the paper's "
                             f"model ({name}={default}); {hint}")


def trains_v(params: Params, level: str) -> bool:
    """Is the output layer trained?  Not for level fixed-output (an alias of
    exact with --no-train-v) nor with params.train_v False."""
    return bool(params.train_v) and level_of(level).trains_v


def kernel_config(params: Params, level: str) -> KConfig:
    """Numeric settings of ``level`` for the kernels (validates the optimizer)."""
    check_choice("level", level, of_kind(PAPER))  # a reduced recursion the kernels run
    check_paper_model(params, level)
    check_optimizer(params, level)
    kind, args = params.optimizer_spec
    use_gram, train_v = LEVEL[level].use_gram, trains_v(params, level)
    act, act_a = activation_code(params)
    return KConfig(float(params.c), float(params.eta), float(params.eta_v_eff),
                   float(args[0]) if kind == "momentum" else 0.0, bool(use_gram), bool(train_v),
                   int(act), float(act_a), None if int(act) == 0 else True)


def kernel_stats(stats) -> KStats:
    """KStats of one ``Stats`` (or of a list of them, stacked on a seed axis)."""
    many = isinstance(stats, (list, tuple))
    get = ((lambda k: np.stack([getattr(s, k) for s in stats])) if many
           else (lambda k: getattr(stats, k)))
    return KStats(*(np.ascontiguousarray(get(k), dtype=np.float64) for k in KStats._fields))


def check_stats(params: Params, kst: KStats, stacked: bool = False) -> KStats:
    """Refuse statistics drawn for other sizes or another depth than ``params``
    (a run would silently use their shapes); returns ``kst``."""
    p = params
    lead = 1 if stacked else 0
    want = {"B": (2, p.m, p.n), "U0": (p.depth - 1, 2, p.m, p.m)}
    for name, shape in want.items():
        got = getattr(kst, name).shape[lead:]
        if got != shape:
            raise ValueError(f"the statistics do not match the parameters: {name} has shape "
                             f"{got}, expected {shape} for m={p.m}, n={p.n}, depth={p.depth}; "
                             f"draw them with the same Params (dynamics.sample_stats)")
    return kst


def first_layer(gamma, rho, stats: Stats, params: Params, use_gram=True):
    """First-layer pre-activations s, z (..., 2, m, n) for states with any
    leading axes (any depth): s = yhat (A + j gamma), z = B + rho G (G = I if
    not use_gram)."""
    js = np.array([1.0, -1.0])
    a = params.mu_norm * stats.w0_e1 + js[:, None] * gamma
    return a[..., None] * stats.yhat, stats.B + (rho @ stats.G if use_gram else rho)


def reduced_forward(gamma, rho, v, stats: Stats, params: Params, use_gram=True):
    """s, z (..., 2, m, n) (``first_layer``) and f (..., n) of docs/theory.md#exact-recursion for
    states with any leading axes: f = c sum_j j sum_r [v1 sigma(s) + v2 sigma(z)]
    (depth 1 only; sigma = params.activation).
    """
    if params.depth > 1:
        raise ValueError("reduced_forward is the depth-1 output; at depth >= 2 use "
                         "Trajectory.preactivations (kernels.outputs_kernel)")
    js = np.array([1.0, -1.0])
    s, z = first_layer(gamma, rho, stats, params, use_gram)
    code, a = activation_code(params)
    out = v[..., 0:1] * activation(s, code, a) + v[..., 1:2] * activation(z, code, a)
    f = params.c * np.einsum("j,...jri->...i", js, out)
    return s, z, f


def compared_variables(params: Params) -> tuple:
    """What the comparison with the network checks for a paper-level run of
    ``params``: gamma, rho, v, loss, balance, and U at depth >= 2."""
    base = ("gamma", "rho", "v", "loss", "balance")
    return base if params.depth == 1 else base + ("U",)


def error_count(yf) -> float:
    """Wrong predictions among the margins ``yf = y f``, a tie f = 0 counted
    1/2: #{yf < 0} + #{yf = 0}/2 (docs/theory.md#test-error; the kernels'
    ``error_rate`` counts the same way)."""
    yf = np.asarray(yf)
    return float(np.count_nonzero(yf < 0.0)) + 0.5 * float(np.count_nonzero(yf == 0.0))


class DivergenceError(FloatingPointError):
    """A run crossed the divergence policy (``dynamics.params``): names the
    step, the reason and a hint that fits the cause."""

    def __init__(self, step: int, reason: int, params: Params, level: str):
        self.step, self.reason = int(step), int(reason)
        self.budget = self.reason == BUDGET_REASON
        if self.budget:  # not a divergence: the normalised flow ran out of steps
            when = (f"t = {step:g}" if step < 4e18 else "t >= 4e+18")
            super().__init__(f"{level} run spent the step budget of the normalised flow "
                             f"({FLOW.max_steps} steps) before {when} GD steps: the loss "
                             f"is not decaying; {divergence_hint(step, params, reason)}")
            return
        super().__init__(f"{level} run diverged at step {step}: "
                         f"{DIVERGENCE_REASONS.get(reason, 'unknown')}; "
                         f"{divergence_hint(step, params, reason)}")


BUDGET_REASON = 4  # status reason of the normalised flow's step budget (kernels)


def divergence_hint(step: int, params: Params, reason: int = 1) -> str:
    """What to change: the initial scale at step 0, else the step sizes; for
    the flow's step budget (reason 4), an earlier time or a larger step."""
    if reason == BUDGET_REASON:
        return (f"ask for earlier --times, or raise --eta (now {params.eta:g}: the flow's "
                f"time unit) so the data are fitted sooner")
    if reason == LOSS_UNDERFLOW:
        return (f"try a smaller --eta (now {params.eta:g}; the flow's early steps are GD "
                f"steps of that size)")
    if step == 0:
        scale = ("the noise law's scale (--noise " + params.noise + ")"
                 if params.noise != "gaussian" else "--sigmap")
        return (f"the initial network is already out of range: lower --sigma0, --v0, --c, "
                f"--mu or {scale} (with --data: the scale of the file's values)")
    if params.eta_v_eff > params.eta:
        return f"try a smaller --eta-v (now {params.eta_v_eff:g}) or --eta ({params.eta:g})"
    return f"try a smaller --eta (now {params.eta:g})"


def check_record_memory(params: Params, record_every: int):
    """Refuse a recording schedule whose arrays would not fit (before allocating)."""
    record_every = check_record_every(record_every, params.steps)
    R = record_count(params.steps, record_every)
    m = params.m
    check_memory(8.0 * R * (m * (6 + 2 * params.n) + 2 * (params.depth - 1) * m * m + 3),
                 f"recording {R} states (--steps {params.steps}, --record-every {record_every})",
                 hint="raise --record-every or lower --steps")


def record_steps(steps: int, record_every: int) -> np.ndarray:
    """Recorded steps: 0, k, 2k, ... and always the last step T (k validated by
    ``params.check_record_every``: an integer in [1, T], so the kernels, which
    record where t % k == 0 or t == T, write exactly these len(rec) states)."""
    record_every = check_record_every(record_every, steps)
    rec = np.arange(0, steps + 1, record_every)
    if rec[-1] != steps:
        rec = np.append(rec, steps)
    return rec


@dataclass
class Trajectory:
    """Recorded training run (reduced or full), float64 arrays.

    steps (R,); gamma (R,2,m); rho (R,2,m,n); v (R,2,m,2); loss, train_error
    (R,); test_error: clean test error at the last step; U (R,L-1,2,m,m): the
    upper layers (docs/theory.md#depth; L = 1: shape (R,0,2,m,m)), None means L = 1.
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
    U: np.ndarray | None = None

    # The trajectory protocol (shared with general.GeneralTrajectory; compare/
    # reads these instead of asking for the class): the coefficient layout,
    # the label arrays, the variables compared with the network, the patch
    # pre-activations and the data source.
    layout = "paper"              # (gamma, rho, v) of the paper's model
    label_names = ("yhat", "y")
    source = None                 # data drawn from the parameters

    def compared_variables(self) -> tuple:
        """Variables compared with the network: gamma, rho, v, loss, balance
        (and the upper layers U at depth >= 2)."""
        return compared_variables(self.params)

    def patch_preactivations(self):
        """(signal-patch, noise-patch) pre-activations (s, z) per step
        (``first_layer`` with this level's Gram; any depth)."""
        return first_layer(self.gamma, self.rho, self.stats, self.params,
                           LEVEL[self.level].use_gram)

    @property
    def test_error_noisy(self) -> float:
        """Test error against flipped labels: flip + (1 - 2 flip) clean error."""
        flip = self.params.flip
        return flip + (1.0 - 2.0 * flip) * self.test_error

    def preactivations(self):
        """s, z (R, 2, m, n) and f (R, n) at every recorded step (docs/theory.md#exact-recursion).

        z uses this level's own G (the identity for "orthogonal"; the full
        network's coefficients give its true <w, xi_i> up to round-off).
        """
        use_gram = LEVEL[self.level].use_gram
        if self.params.depth == 1:
            return reduced_forward(self.gamma, self.rho, self.v, self.stats, self.params,
                                   use_gram=use_gram)
        s, z = first_layer(self.gamma, self.rho, self.stats, self.params, use_gram)
        f = np.empty((len(self.steps), self.params.n))
        cfg = KConfig(float(self.params.c), 0.0, 0.0, 0.0, use_gram, True)  # forward only
        outputs_kernel(kernel_stats(self.stats), cfg, float(self.params.mu_norm),
                       *(np.ascontiguousarray(x) for x in (self.gamma, self.rho, self.upper,
                                                           self.v)), f)
        return s, z, f

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

    @property
    def upper(self) -> np.ndarray:
        """Upper layers U (R, L-1, 2, m, m) (empty at depth 1)."""
        if self.U is not None:
            return self.U
        m = self.params.m
        return np.zeros((len(self.steps), 0, 2, m, m))

    def layer_balance(self) -> np.ndarray:
        """Per hidden neuron, ||outgoing||^2 - ||incoming||^2, shape (R, L, 2, m)
        (docs/theory.md#depth; conserved by the flow, O(eta^2) per GD step).  Layer 1:
        incoming w_{j,r}, outgoing U(1)_{j,:,r} (v_{j,r,:} at depth 1); layer
        l >= 2: incoming U(l-1)_{j,k,:}, outgoing U(l)_{j,:,k} or v_{j,k,:}."""
        U = self.upper
        L = U.shape[1] + 1
        incoming = [self.w_norm_sq()] + [np.sum(U[:, l]**2, axis=-1) for l in range(L - 1)]
        outgoing = [np.sum(U[:, l]**2, axis=-2) for l in range(L - 1)]
        outgoing.append(np.sum(self.v**2, axis=-1))
        return np.stack([o - i for o, i in zip(outgoing, incoming)], axis=1)

    def balance(self) -> np.ndarray:
        """First-layer balance ||outgoing||^2 - ||w_{j,r}||^2, shape (R, 2, m);
        at depth 1, sum_p v_{j,r,p}^2 - ||w_{j,r}||^2 (docs/theory.md#identities)."""
        return self.layer_balance()[:, 0]

    def layer_change(self) -> np.ndarray:
        """Relative change ||theta_l(t) - theta_l(0)|| / ||theta_l(0)|| of every
        layer (R, L+1): W (d-free: ||W - W0||^2 = sum (gamma/||mu||)^2
        + rhohat K rhohat^T, ||W0||^2 = sum <w0,e1>^2 + ||P w0||^2), U(1..L-1), v."""
        st, mu = self.stats, self.params.mu_norm
        rhohat = self.rho / st.N
        dW = (np.sum((self.gamma / mu) ** 2, axis=(1, 2))
              + np.einsum("tjrk,kl,tjrl->t", rhohat, st.gram, rhohat))
        W0 = np.sum(st.w0_e1**2) + np.sum(st.w0_perp_sq)
        cols = [np.sqrt(dW / W0)]
        U = self.upper
        for l in range(U.shape[1]):
            cols.append(np.linalg.norm((U[:, l] - U[0, l]).reshape(len(U), -1), axis=1)
                        / np.linalg.norm(U[0, l]))
        v0 = self.v[0].reshape(-1)
        cols.append(np.linalg.norm(self.v.reshape(len(self.v), -1) - v0, axis=1)
                    / np.linalg.norm(v0))
        return np.stack(cols, axis=1)


def _recorded(rec) -> dict:
    """The ``Trajectory`` fields of a run's ``Records``."""
    return {k: getattr(rec, k) for k in ("gamma", "rho", "U", "v", "loss", "train_error")}


def simulate(params: Params, level: str = "exact", sampler: str = "wishart", *,
             record_every: int = 1, stats: Stats | None = None) -> Trajectory:
    """Run the reduced recursion at ``level`` on statistics from ``sampler``.

    Pass ``stats`` to reuse a realisation (e.g. the one of a full run).
    Raises ``DivergenceError`` under the divergence policy.
    """
    check_params(params)
    check_choice("sampler", sampler, SAMPLERS)
    cfg = kernel_config(params, level)
    check_record_memory(params, record_every)
    record_every = check_record_every(record_every, params.steps)
    rec = record_steps(params.steps, record_every)
    t0 = time.perf_counter()
    if stats is None:
        stats = sample_stats(params, sampler)
    p = params
    kst = check_stats(params, kernel_stats(stats))
    state = State(np.zeros((2, p.m)), np.zeros((2, p.m, p.n)), kst.U0.copy(),
                  np.full((2, p.m, 2), p.v0))
    out = records(len(rec), state)
    run_kernel(kst, cfg, float(p.mu_norm), int(p.steps), int(record_every), state, out)
    if out.status[0] >= 0:
        raise DivergenceError(out.status[0], out.status[1], p, level)
    test = clean_error_kernel(p.mu_norm * kst.w0_e1, *state, kst, cfg)
    return Trajectory(params=p, level=level, sampler=sampler, stats=stats,
                      steps=rec, test_error=float(test),
                      wall_time=time.perf_counter() - t0, **_recorded(out))


def check_checkpoints(checkpoints, steps: int, integers: bool = True,
                      allow_inf: bool = True) -> np.ndarray:
    """Ascending, distinct times in GD steps (default: [steps]), >= 0: integers
    up to FLOW.gd_max for GD (later GD checkpoints are reached by the flow,
    ``kernels._advance``), any numbers if ``integers`` is False (flow times); inf
    (the limit t -> infinity) allowed last if ``allow_inf``."""
    try:
        cp = np.array([steps] if checkpoints is None else checkpoints, dtype=np.float64)
    except (TypeError, ValueError):
        raise ParamError("times", checkpoints, "must be numbers (GD steps) or inf") from None
    fin = cp[np.isfinite(cp)] if cp.ndim == 1 else cp
    with np.errstate(invalid="ignore"):  # inf - inf: NaN, refused below (no warning)
        gaps = np.diff(cp) if cp.ndim == 1 else cp
    if (cp.ndim != 1 or cp.size == 0 or np.any(np.isnan(cp)) or np.any(cp < 0)
            or not np.all(gaps > 0)  # NaN differences (inf, inf) are not > 0
            or (integers and np.any((fin <= FLOW.gd_max) & (fin != np.round(fin))))
            or (not allow_inf and fin.size < cp.size)):
        kind = (f"numbers >= 0, integers up to {FLOW.gd_max:g} (later times are reached by "
                f"the flow)" if integers else "numbers >= 0")
        raise ParamError("times", cp.tolist(),
                         f"must be ascending, distinct {kind} (GD steps)"
                         + (", optionally ending with inf" if allow_inf else ""))
    return cp


def simulate_flow(params: Params, level: str = "exact", sampler: str = "wishart", *,
                  times=None, stats: Stats | None = None,
                  flow: FlowConfig = FLOW, t_pattern: float | None = None) -> Trajectory:
    """Normalised gradient flow of the reduced model (docs/theory.md#training-time-and-flow; GD with step
    eta L_0/L_k, ``kernels.normalised_gd``), recorded at ``times`` in GD
    steps of params.eta.  inf (last) is the limit t -> infinity: the
    certified optimum of the max-margin program seeded by the flow's pattern
    at GD time ``t_pattern`` (default ``limit.PATTERN_TIME``; docs/guide/time-and-limit.md,
    ``dynamics.limit``); its record holds the limit direction (w(0) dropped,
    margins >= 1), its test error counts ties f = 0 as 1/2, and
    ``traj.extra["limit"]`` the certificate (``limit.LIMIT_FIELDS``, the
    walk's stop reason).  ``traj.steps`` holds the times (float, inf
    allowed); ``traj.extra["flow"]`` the step count and the final flow time."""
    from . import limit as lm
    from .limit_run import FlowEnd, evaluate_limit, outputs

    check_choice("sampler", sampler, SAMPLERS)
    cfg = kernel_config(params, level)
    check_integrator(params, "flow")
    times = check_checkpoints(times, params.steps, integers=False)
    to_limit = bool(np.isinf(times[-1]))
    if to_limit:
        lm.check_limit(params, level)
        t_pattern = lm.PATTERN_TIME if t_pattern is None else float(t_pattern)
        later = times.size == 1 or t_pattern > times[-2]  # else: the last finite time's pattern
        run_times = np.append(times[:-1], t_pattern) if later else times[:-1]
    else:
        run_times = times
    t0 = time.perf_counter()
    if stats is None:
        stats = sample_stats(params, sampler)
    p = params
    kst = check_stats(params, kernel_stats(stats))
    R = times.size
    state = State(np.zeros((2, p.m)), np.zeros((2, p.m, p.n)), kst.U0.copy(),
                  np.full((2, p.m, 2), p.v0))
    gamma, rho, U, v = state
    rec = records(run_times.size, state)
    flow_kernel(kst, cfg, flow, float(p.mu_norm), state, run_times, rec,
                PATTERN_FLOW if to_limit and later else None)
    status, info, out = rec.status, rec.info, _recorded(rec)
    if status[0] >= 0:
        raise DivergenceError(int(min(run_times[status[0]], 4e18)), status[1], p, level)
    test = clean_error_kernel(p.mu_norm * kst.w0_e1, gamma, rho, U, v, kst, cfg)
    extra = {}
    if to_limit:
        mu = float(p.mu_norm)
        f_train, _ = outputs(kst, cfg, mu, gamma, rho, v)
        margin = float(np.min(kst.y * f_train)) / theta_norm_sq(
            mu * kst.w0_e1, mu, gamma, rho, U, v, kst, cfg.train_v)
        if not margin > 0.0:
            raise ParamError("times", "inf", f"the flow does not separate the training data "
                             f"at t = {run_times[-1]:g} (normalised margin {margin:.3g}): no "
                             f"max-margin limit; give finite times")
        fields, test, state, lim = evaluate_limit(
            kst, cfg, p, mu, FlowEnd(gamma, rho, v, margin, float(run_times[-1])))
        if state is None:
            raise ParamError("times", "inf", "the conic solvers failed on the limit program "
                             f"({lim.optimum.info}); give finite times")
        for k, arr in out.items():  # keep the finite records, add the limit's
            keep = arr[:R - 1]
            out[k] = np.concatenate([keep, np.full((1,) + arr.shape[1:], np.nan)])
        out["gamma"][-1], out["rho"][-1], out["v"][-1] = state
        out["U"][-1] = U
        out["loss"][-1], out["train_error"][-1] = 0.0, 0.0
        extra["limit"] = dict(fields, reason=lim.reason, margin_flow=margin)
    traj = Trajectory(params=p, level=level, sampler=sampler, stats=stats, steps=times,
                      test_error=float(test), wall_time=time.perf_counter() - t0, **out)
    traj.extra["flow"] = dict(t_final=float(info[1]), n_steps=int(info[2]))
    traj.extra.update(extra)
    return traj


def advance(params: Params, level: str, stats: Stats, gamma, rho, v, steps: int, U=None):
    """Advance the state (gamma, rho, v; U at depth >= 2) in place by ``steps``
    GD steps (no recording); raises ``DivergenceError``."""
    cfg = kernel_config(params, level)
    kst = check_stats(params, kernel_stats(stats))
    if U is None and params.depth > 1:
        raise ValueError("advance at depth >= 2 needs the upper layers U (the state)")
    U = kst.U0.copy() if U is None else U
    state = State(gamma, rho, U, v)
    rec = records(2, state)
    run_kernel(kst, cfg, float(params.mu_norm), int(steps), int(steps), state, rec)
    if rec.status[0] >= 0:
        raise DivergenceError(rec.status[0], rec.status[1], params, level)
