"""What the kernels take and keep: statistics (``KStats``), settings
(``KConfig``, ``FlowConfig``), one run's work buffers (``_Work``), the
divergence reasons and the sizes of configuration groups.

Index conventions of every kernel module: axis j in {0, 1} stands for
j = +1, -1 (sign ``js = 1 - 2j``); r is a filter of class j; i a training
sample, k a training sample in a Gram product; p in {0, 1} the patch
(signal, noise).  The upper layers ``U`` of depth L >= 2 (docs/theory.md#depth)
are an array (L-1, 2, m, m); at depth 1 the kernels receive ``U = None``, so
the deep code is not compiled for a depth-1 run (``entry.py``).
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numba import njit

from ..params import LOSS_MAX, THETA_MAX

DIVERGENCE_REASONS = {1: "non-finite network output", 2: f"training loss above {LOSS_MAX:g}",
                      3: f"a coefficient above {THETA_MAX:g} in absolute value",
                      7: "the training loss underflowed to 0 in the normalised flow (every "
                         "margin above ~745, which the flow reaches only after ~1e300 GD "
                         "steps): a step overshot"}
LOSS_UNDERFLOW = 7  # status reason: the flow's loss is exactly 0 (a frozen state, not a time)

TEST_CHUNK = 128  # test points per block of ``test_outputs``: (m, 128) buffers stay in L1/L2
#                   and below malloc's mmap threshold (a (m, n_test) buffer per call was
#                   mmap'ed and unmapped each time, with TLB shootdowns across threads)

GROUP_MAX = 64  # jobs per group (state of 64 jobs at n = m = 20: ~1.2 MB; 64 is 7-10% faster
#                 than 32 per default-sweep chunk, T = 200 and T = 200, inf alike)
GROUP_MAX_F32 = 128  # float32 groups: 1.2x faster per job than 64 (T = 200), 1.1-1.2x with
#                      the limit; 256 no better (float64: 128 is 1.03x, so 64 stays)
GROUP_MIN = 28  # smaller groups run job by job (benchmarks/groups.py --mus 16/24/28 against
#                 the one-job step: 0.59-0.86x at 16, 0.80-0.99x at 24, 1.08-1.49x at 28)
GROUP_TEST_MAX = 2 ** 21  # test outputs (nt, C) of a group at most this many values


class KStats(NamedTuple):
    """Sufficient statistics for the kernels (see ``dynamics.data.Stats``);
    the batch kernels take the same fields stacked on a leading seed axis."""

    w0_e1: np.ndarray       # (2, m)      <w0, e_1>
    w0_perp_sq: np.ndarray  # (2, m)      ||P w0||^2
    B: np.ndarray           # (2, m, n)   <w0, xi_i>
    G: np.ndarray           # (n, n)      <xi_k, xi_i> / N_k
    N: np.ndarray           # (n,)        ||xi_i||^2
    yhat: np.ndarray        # (n,)        clean labels
    y: np.ndarray           # (n,)        observed labels
    test_yhat: np.ndarray   # (nt,)
    test_B: np.ndarray      # (2, m, nt)  <w0, xi_test>
    test_X: np.ndarray      # (n, nt)     <xi_k, xi_test>
    U0: np.ndarray          # (L-1, 2, m, m) initial upper layers (docs/theory.md#depth)


class Jobs(NamedTuple):
    """The jobs of a batch: job q runs seed index seed[q] of the stacked
    statistics (int64) at ||mu|| = mu[q] and v0 = v0[q] (float64), all (Q,)."""

    seed: np.ndarray
    mu: np.ndarray
    v0: np.ndarray


class JobOutputs(NamedTuple):
    """Per-job outputs of a batch at K checkpoints, one row per job: test
    error, loss, train error and normalised margin (Q, K) (NaN after a
    divergence); status (Q, 2) int64 = (step, reason) or (-1, 0); info (Q, 4)
    = (limit certified, final time in GD steps, normalised steps, -1)."""

    test: np.ndarray
    loss: np.ndarray
    train: np.ndarray
    margin: np.ndarray
    status: np.ndarray
    info: np.ndarray


class KConfig(NamedTuple):
    """Numeric settings of a run (everything but the state, mu and v0)."""

    c: float
    eta: float
    eta_v: float
    beta: float       # heavy-ball momentum (0: plain GD)
    use_gram: bool    # False: level "orthogonal" (G = I)
    train_v: bool     # False: level "fixed-output"
    act: int = 0      # activation: 0 relu, 1 relu^act_a, 2 leaky with slope act_a (docs/theory.md#general-reduction)
    act_a: float = 0.0
    general: object = None  # None: ReLU (act 0), True: another activation; a type, so
                            # a ReLU run compiles only the ReLU bodies (``step1``)


class FlowConfig(NamedTuple):
    """Long-time settings: step budget, step growth cap, GD horizon."""

    max_steps: int        # normalised steps allowed per run
    max_dt_frac: float    # a step moves the time by at most this fraction of t
    gd_max: float = 1e6   # integrator gd: a checkpoint later than this is reached by the flow


class Schedule(NamedTuple):
    """How the jobs of a batch move through time: checkpoints (K,) in GD
    steps (ascending, finite), the flow's settings fc (``FlowConfig``), and
    use_flow (True: the normalised scheme throughout, integrator "flow")."""

    checkpoints: np.ndarray
    fc: "FlowConfig"
    use_flow: bool


class PatternLeg(NamedTuple):
    """The flow from a batch's last finite checkpoint on to GD time t, whose
    state's activation pattern seeds the limit program: beyond the recorded
    flow's gd_max with the settings fc (``FlowConfig``; a coarser step than
    the recorded times': only the pattern is used; ``flow.pattern_leg``)."""

    t: float
    fc: "FlowConfig"


class Groups(NamedTuple):
    """Jobs group start[g] .. start[g+1]-1 share one seed; groups smaller
    than min_size run job by job."""

    start: np.ndarray
    min_size: int


class State(NamedTuple):
    """A run's state, updated in place by the kernels: gamma (2, m), rho
    (2, m, n), U (L-1, 2, m, m) upper layers (empty at depth 1), v (2, m, 2)."""

    gamma: np.ndarray
    rho: np.ndarray
    U: np.ndarray
    v: np.ndarray


class Records(NamedTuple):
    """What a recording run writes: the state at R records (leading axis R),
    loss and train error (R,), status (2,) = (step or time index, reason) or
    (-1, 0), info (4,) (the flow's: (-1, final time, normalised steps, -1))."""

    gamma: np.ndarray
    rho: np.ndarray
    U: np.ndarray
    v: np.ndarray
    loss: np.ndarray
    train_error: np.ndarray
    status: np.ndarray
    info: np.ndarray


def records(R: int, state: State, fill=np.nan) -> Records:
    """Records of R entries shaped like ``state`` (filled with ``fill``)."""
    return Records(*(np.full((R,) + x.shape, fill) for x in state), np.full(R, fill),
                   np.full(R, fill), np.full(2, -1, dtype=np.int64), np.full(4, fill))


class _Work(NamedTuple):
    """Buffers of one run, allocated once and reused at every step."""

    a: np.ndarray      # (2, m) a_{j,r} = A + j gamma (depth 1; s_{j,r,i} = yhat_i a_{j,r})
    z: np.ndarray      # (2, m, n) noise pre-activations (depth 1)
    f: np.ndarray      # (n,) training outputs
    lp: np.ndarray     # (n,) l'_i
    dgamma: np.ndarray  # increments of one step
    drho: np.ndarray
    dv: np.ndarray
    mg: np.ndarray     # momentum buffers of gamma, rho, v
    mr: np.ndarray
    mv: np.ndarray
    H: np.ndarray      # (2, L, 2, m, n) hidden activations (depth >= 2; else empty)
    delta: np.ndarray  # (L, 2, m, n)    df/dpre of one class (depth >= 2)
    qd: np.ndarray     # (2, m, n)       l' y delta of one layer (depth >= 2)
    dU: np.ndarray     # (L-1, 2, m, m)
    mU: np.ndarray
    qn: np.ndarray     # (3, n) per-sample factors of the depth-1 increments
    rows: np.ndarray   # (3, m) per-filter sums of the depth-1 increments


@njit(cache=True)
def _work(m, n, L):
    """Buffers of one run at depth L."""
    Ld = L if L > 1 else 0
    return _Work(np.empty((2, m)), np.empty((2, m, n)), np.empty(n), np.empty(n),
                 np.empty((2, m)), np.empty((2, m, n)), np.empty((2, m, 2)),
                 np.zeros((2, m)), np.zeros((2, m, n)), np.zeros((2, m, 2)),
                 np.empty((2, Ld, 2, m, n)), np.empty((Ld, 2, m, n)),
                 np.empty((2 if L > 1 else 0, m, n)),
                 np.zeros((L - 1, 2, m, m)), np.zeros((L - 1, 2, m, m)),
                 np.empty((3, n)), np.empty((3, m)))


@njit(cache=True)
def _depth(U):
    """L of upper layers U (None at depth 1)."""
    if U is None:
        return 1
    return U.shape[0] + 1


@njit(cache=True)
def _job_stats(st, si):
    """The statistics of seed index si of stacked statistics."""
    return KStats(st.w0_e1[si], st.w0_perp_sq[si], st.B[si], st.G[si], st.N[si],
                  st.yhat[si], st.y[si], st.test_yhat[si], st.test_B[si], st.test_X[si],
                  st.U0[si])


@njit(cache=True)
def _upper_at(upper, i):
    """upper[i] (the upper layers of seed or record i), or None at depth 1."""
    if upper is None:
        return None
    return upper[i]


@njit(cache=True)
def _upper_copy(U):
    """A copy of the upper layers U, or None at depth 1."""
    if U is None:
        return None
    return U.copy()
