"""Peer benchmark: a batched PyTorch full network against the project's levels.

The peer is what one would write by hand in PyTorch for this model (docs/theory.md#network-and-training):
all Q = 16 configurations (4 seeds x ||mu|| in {0.5, 1, 3, 10}, v0 = 1,
n = m = 20, T = 200 GD steps, eta = 0.01, c = 1, other parameters at their
``Params`` defaults) trained at once, config axis first, in float32 and in
float64, with hand-written gradients (no autograd):

* patches P = [mu, xi_1..xi_n] (Q, n+1, d), filters W (Q, 2m, d) (class j = +1
  rows first), output weights V (Q, 2m, 2);
* forward: H = bmm(P, W^T) (Q, n+1, 2m) (this orientation was faster than
  bmm(W, P^T) with MKL here), s = H[:, 0] yhat, z = H[:, 1:];
  f = c sum_j j sum_r [v1 ReLU(s) + v2 ReLU(z)]; logistic loss every step;
* backward (the formulas of ``fullsim.layers.gradients``): the coefficients
  C (Q, 2m, n+1) of gW = C P, applied as W.baddbmm_(C, P, alpha=-eta) (the
  gradient bmm fused with the update), and gV; simultaneous update of W, V;
* after step T, the clean test error on the seed's n_test = 1000 real test
  points (the vectors behind the ``exact`` level's test statistics, drawn
  outside the timing like the training data): one bmm per ||mu|| of the
  seeds' test noise (S, n_test, d) with the filters, signal part
  yhat <w, mu>.  The reduced levels compute this test error inside their
  timed call, so the peer does the same work; the part is also timed on its
  own and the train-only ratio printed beside it.

Timed on the same 16 configurations, in one process, each method warmed up
once, best of R rounds (default 3; in each round exact, orthogonal, torch
f32 and torch f64 take turns, each after a 1 s pause; a method whose call
is shorter than 0.3 s first runs back to back for 0.3 s untimed, then as
many timed calls as fit in 0.3 s, at most 10, so that the methods are timed
in the same stretch of a VM's drifting speed and in their steady state, as
a sweep runs them, none paying a wake-up from idle), seconds per
configuration:

* ``exact`` / ``orthogonal``: ``dynamics.batch.run_batch`` (the kernel call
  of sweeps: 16 jobs, one parallel Numba call, checkpoint T, which also
  evaluates the d-free test error), statistics of sampler 'data' drawn before;
* ``full``: ``fullsim.simulate_full`` per configuration, record_every = T (it
  includes its final clean test error on 1000 regenerated test vectors; that
  part is timed separately and shown); at d >= 1e5 only 2 configurations;
* ``torch f32`` / ``torch f64``: one call of the batched loop above (training
  and final test error; "train only" subtracts the timed test-error part).

All data (``dynamics.sample_data`` per seed, the same realisation for every
method) is drawn outside the timing.  Checks: on one configuration at
d = 1000, the float64 (and float32) network against ``simulate_full`` (loss at
every step, final W and V, test error); at every d, the torch final losses and
test errors of all 16 configurations against the ``exact`` kernel's.

Run from the repository root (needs torch: the optional extra ``bench``)::

    nice -n 10 python benchmarks/peers.py                  # d = 1e3, 1e4, 1e5
    nice -n 10 python benchmarks/peers.py --d 1000,10000
    nice -n 10 python benchmarks/peers.py --quick          # smoke: d = 1e3, 1 repeat
    nice -n 10 python benchmarks/peers.py --threads 1      # every method on one thread
    nice -n 10 python benchmarks/peers.py --mus 16 --d 1000,10000   # 64 configs: sweep-shaped

``--threads`` (default 2, the cores of the reference machine) sets torch's
threads and OMP/OPENBLAS/MKL/NUMBA_NUM_THREADS before numpy is imported.  The
load average is printed: when other jobs share the cores, multithreaded BLAS
and OpenMP pools slow down by large factors (seen here: simulate_full at
d = 1e3 took 9 s on 2 threads vs 0.2 s on 1 thread at load 7), so compare
runs only at a similar load.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time


def _thread_count(argv) -> int:
    """--threads N (default 2), read before numpy/numba/torch load their pools."""
    ap = argparse.ArgumentParser(add_help=False)
    ap.add_argument("--threads", type=int, default=2)
    n = ap.parse_known_args(argv)[0].threads
    return max(1, n)


THREADS = _thread_count(sys.argv[1:]) if __name__ == "__main__" else 2
if __name__ == "__main__":
    for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                 "NUMBA_NUM_THREADS"):
        os.environ[_var] = str(THREADS)  # same thread count for every method

import numpy as np

try:
    import dynamics  # noqa: F401  (installed, e.g. pip install -e .)
except ImportError:  # run from a checkout without installing
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from dynamics import Params, RunSpec, sample_data
from dynamics.batch import run_batch
from dynamics.kernels import GROUP_MIN
from dynamics.run import kernel_stats
from fullsim import simulate_full
from fullsim.network import clean_test_error

from _common import machine_rows, table

MUS = (0.5, 1.0, 3.0, 10.0)
N_SEEDS = 4
BASE = Params(n=20, m=20, steps=200, v0=1.0, eta=0.01, c=1.0)
CHECK_D = 1000
CHECK_JOB = (2, 0)  # (||mu|| index, seed index) of the fullsim check: ||mu|| = 3, seed 0


def load() -> str:
    try:
        return "{:.2f} {:.2f} {:.2f}".format(*os.getloadavg())
    except OSError:
        return "n/a"


SETTLE_S = 1.0  # idle time before each method: the thread pools of the previous one stop spinning


def best(fn, repeats: int) -> float:
    """Best wall time (s) of ``repeats`` calls of ``fn`` (after one untimed call).

    Sleeps SETTLE_S first: OpenBLAS and OpenMP worker threads busy-wait for a
    while after their last call (seen here: the 16-job ``exact`` call, ~7 ms,
    took 0.58-1.0 ms per configuration right after data sampling, ``full`` or
    torch, 0.44 ms on idle cores), so without a pause a method is timed
    against the spinning threads of the one before it."""
    return best_interleaved({"fn": fn}, repeats)["fn"]


WARM_S = 0.3  # after the pause, calls shorter than this run back to back this long untimed,
#               then as many timed calls as fit in WARM_S (at most MAX_CALLS) give the round's best
MAX_CALLS = 10


def best_interleaved(fns: dict, repeats: int) -> dict:
    """Best wall time (s) of each of ``fns`` (name -> callable) over
    ``repeats`` rounds, each round calling every method once in turn (after
    one untimed call each), with a SETTLE_S pause before every timed call.

    Interleaved rounds: on a shared VM the speed of the cores drifts by up to
    ~1.4x over tens of seconds (seen here: the same one-job loop at 2.1 and
    2.9 us per step in consecutive runs), so timing the methods one after the
    other would compare them in different phases; in rounds, each method's
    best call comes from the same stretch of time.  After the pause, a method
    whose calls take less than WARM_S runs back to back for WARM_S untimed,
    then min(MAX_CALLS, WARM_S / call time) timed calls (at least one), the
    same rule for every method (``timeit``'s autorange, bounded): the first
    calls after an idle second run on sleeping threads and clocked-down
    cores (the 16-job ``exact`` call: best 0.41 ms per configuration right
    after a 1 s pause, 0.29 ms for the call after it; 0.36-0.42 ms with one
    untimed call before the timed one, 0.26 ms back to back), which would
    charge a wake-up to a 5 ms call that a sweep, calling back to back, never
    pays; a 1-16 s call (the peer at d >= 1e4) is timed once per round."""
    last = {}
    for name, fn in fns.items():
        t0 = time.perf_counter()
        fn()
        last[name] = time.perf_counter() - t0
    out = {name: np.inf for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            time.sleep(SETTLE_S)
            t_end = time.perf_counter() + WARM_S
            while last[name] < WARM_S and time.perf_counter() < t_end:
                fn()
            for _ in range(max(1, min(MAX_CALLS, int(WARM_S / max(last[name], 1e-9))))):
                t0 = time.perf_counter()
                fn()
                last[name] = time.perf_counter() - t0
                out[name] = min(out[name], last[name])
    return out


# ---------------------------------------------------------------- problem data

@dataclasses.dataclass
class Problem:
    """The 16 configurations at one d: job q = k * S + s (||mu|| index k, seed s),
    the layout of ``dynamics.boundary.reduced_evaluator``."""

    params: Params
    reals: list            # one Realisation per seed (mu of the base params)
    job_seed: np.ndarray   # (Q,)
    job_mu: np.ndarray     # (Q,)

    @property
    def Q(self) -> int:
        return self.job_mu.size

    def job_params(self, q: int) -> Params:
        s = int(self.job_seed[q])
        return self.params.replace(seed=self.params.seed + s, mu_norm=float(self.job_mu[q]))

    def job_real(self, q: int):
        """The seed's realisation with mu = ||mu||_q e_1 (nothing else depends on ||mu||)."""
        real = self.reals[int(self.job_seed[q])]
        mu = np.zeros(self.params.d)
        mu[0] = self.job_mu[q]
        return dataclasses.replace(real, mu=mu)


def make_problem(d: int) -> Problem:
    p = BASE.replace(d=d)
    reals = [sample_data(p.replace(seed=p.seed + s)) for s in range(N_SEEDS)]
    return Problem(p, reals, np.tile(np.arange(N_SEEDS), len(MUS)),
                   np.repeat(np.asarray(MUS, dtype=np.float64), N_SEEDS))


def seeds_test_noise(prob: Problem) -> np.ndarray:
    """The seeds' real test noise vectors (S, n_test, d), float64: the vectors
    whose inner products are the ``exact`` level's test statistics (at
    d = 1e5: 3.2 GB, and 1.6 GB more for the float32 peer's copy)."""
    p = prob.params
    out = np.empty((len(prob.reals), p.n_test, p.d))
    for s, real in enumerate(prob.reals):
        for sl, chunk in real.test_vectors(p):  # the seed is the realisation's test_seed
            out[s, sl] = chunk
    return out


# ---------------------------------------------------------------- the PyTorch peer

class TorchNet:
    """Batched two-layer ReLU CNN with hand-written gradients (module docstring)."""

    def __init__(self, prob: Problem, dtype, xt: np.ndarray):
        """xt (S, n_test, d): the seeds' test noise (``seeds_test_noise``)."""
        import torch
        self.torch, self.dtype = torch, dtype
        p = prob.params
        M, S, n, m, d = len(MUS), N_SEEDS, p.n, p.m, p.d
        as_t = lambda a: torch.as_tensor(np.ascontiguousarray(a), dtype=dtype)
        self.W0 = as_t(np.stack([r.W0.reshape(2 * m, d) for r in prob.reals]))  # (S, 2m, d)
        P = torch.zeros((M, S, n + 1, d), dtype=dtype)
        P[:, :, 1:] = as_t(np.stack([r.xi for r in prob.reals]))[None]
        P[:, :, 0, 0] = as_t(np.asarray(MUS))[:, None]  # mu = ||mu|| e_1
        self.P = P.reshape(M * S, n + 1, d)
        st = [prob.reals[s].stats for s in prob.job_seed]
        self.yhat = as_t(np.stack([x.yhat for x in st]))  # (Q, n)
        self.y = as_t(np.stack([x.y for x in st]))
        self.js = as_t(np.repeat([1.0, -1.0], m))  # (2m,): class j of each filter row
        self.Xt = torch.as_tensor(xt, dtype=dtype)  # (S, nt, d); float64: no copy
        self.yt = as_t(np.stack([r.stats.test_yhat for r in prob.reals]))  # (S, nt)
        self.p, self.M, self.S = p, M, S
        self.test_seconds = 0.0  # wall time of the last call's test-error part

    def train(self):
        """T GD steps from (W0, v0); returns W (Q, 2m, d), V (Q, 2m, 2), the
        loss (Q, T+1) at every step (computed from W, V before each update)
        and the final clean test error (Q,)."""
        torch, p = self.torch, self.p
        Q, n, m, d, T = self.P.shape[0], p.n, p.m, p.d, p.steps
        c, eta, eta_v = float(p.c), float(p.eta), float(p.eta_v_eff)
        W = torch.empty((Q, 2 * m, d), dtype=self.dtype)
        W.view(self.M, self.S, 2 * m, d).copy_(self.W0[None])
        V = torch.full((Q, 2 * m, 2), float(p.v0), dtype=self.dtype)
        C = torch.empty((Q, 2 * m, n + 1), dtype=self.dtype)
        loss = torch.empty((Q, T + 1), dtype=self.dtype)
        P, yhat, y, js = self.P, self.yhat, self.y, self.js
        Wt, Ct = W.transpose(1, 2), C.transpose(1, 2)  # views (Q, d, 2m), (Q, n+1, 2m)
        for t in range(T + 1):
            H = torch.bmm(P, Wt)                       # (Q, n+1, 2m): <mu, w>, <xi_i, w>
            s = H[:, :1, :] * yhat[:, :, None]         # (Q, n, 2m): <w, yhat_i mu>
            z = H[:, 1:, :]                            # (Q, n, 2m): <w, xi_i>
            rs, rz = torch.relu(s), torch.relu(z)
            v1, v2 = V[:, None, :, 0], V[:, None, :, 1]
            f = c * (js * (v1 * rs + v2 * rz)).sum(-1)  # (Q, n)
            yf = y * f
            loss[:, t] = torch.nn.functional.softplus(-yf).mean(1)
            if t == T:
                t0 = time.perf_counter()
                err = self.test_error(W, V, H[:, 0, :])
                self.test_seconds = time.perf_counter() - t0
                break
            q = (-(c / n)) * torch.sigmoid(-yf) * y    # (c/n) l'_i y_i
            jq = q[:, :, None] * js                    # (Q, n, 2m)
            Ct[:, 0, :] = V[..., 0] * (jq * (s > 0) * yhat[:, :, None]).sum(1)
            Ct[:, 1:, :] = jq * (z > 0) * v2
            gV = torch.stack([(jq * rs).sum(1), (jq * rz).sum(1)], dim=-1)  # (Q, 2m, 2)
            W.baddbmm_(C, P, alpha=-eta)               # W -= eta * C P  (= eta gW)
            V.sub_(gV, alpha=eta_v)
        return W, V, loss, err

    def test_error(self, W, V, wmu):
        """Clean test error (Q,) of the final network: f(x) on x = (yhat mu, xi)
        for the seed's test points; wmu (Q, 2m) = <w, mu> (row 0 of the last H)."""
        torch, c = self.torch, float(self.p.c)
        Q, m2 = W.shape[0], W.shape[1]
        Ws = W.view(self.M, self.S, m2, -1)
        Z = torch.stack([torch.bmm(self.Xt, Ws[k].transpose(1, 2))  # (S, nt, 2m) per ||mu||
                         for k in range(self.M)]).view(Q, -1, m2)   # (Q, nt, 2m): <w, xi>
        yt = self.yt.repeat(self.M, 1)                              # (Q, nt)
        s = wmu[:, None, :] * yt[:, :, None]                        # <w, yhat mu>
        v1, v2 = V[:, None, :, 0], V[:, None, :, 1]
        f = c * (self.js * (v1 * torch.relu(s) + v2 * torch.relu(Z))).sum(-1)
        return (yt * f <= 0).to(torch.float64).mean(1)  # a count: exact in float64


# ---------------------------------------------------------------- checks

def rel(a, b) -> float:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.max(np.abs(a - b) / np.abs(b)))


def check_against_fullsim(torch, prob: Problem):
    """Torch f64/f32 vs simulate_full on one configuration (d = prob's d)."""
    k, s = CHECK_JOB
    q = k * N_SEEDS + s
    p, real = prob.job_params(q), prob.job_real(q)
    tr = simulate_full(p, record_every=1, real=real, keep_weights=True)
    Wf, Vf = tr.extra["W"].reshape(2 * p.m, p.d), tr.extra["V"].reshape(2 * p.m, 2)
    dW = np.linalg.norm(Wf - real.W0.reshape(2 * p.m, p.d))
    rows = []
    xt = seeds_test_noise(prob)
    for name, dtype in (("torch f64", torch.float64), ("torch f32", torch.float32)):
        W, V, loss, err = TorchNet(prob, dtype, xt).train()
        W, V, L = (x[q].double().numpy() for x in (W, V, loss))
        rows.append([name, f"{rel(L, tr.loss):.2e}",
                     f"{np.linalg.norm(W - Wf) / np.linalg.norm(Wf):.2e}",
                     f"{np.linalg.norm(W - Wf) / dW:.2e}",
                     f"{np.max(np.abs(V - Vf)) / np.max(np.abs(Vf)):.2e}",
                     f"{float(err[q]):.4g} vs {tr.test_error:.4g}"])
    print(f"## Check: PyTorch network vs fullsim.simulate_full, one configuration "
          f"(d = {p.d}, seed {p.seed}, ||mu|| = {p.mu_norm:g}, v0 = {p.v0:g}, T = {p.steps}; "
          f"fullsim final loss {tr.loss[-1]:.6g})\n")
    table(["network", "max rel. diff. of loss, all T+1 steps",
           "norm(W - W_full) / norm(W_full)", "norm(W - W_full) / norm(W_full - W0)",
           "max abs(V - V_full) / max abs(V_full)", "test error vs fullsim"], rows)


# ---------------------------------------------------------------- one d

def bench_d(torch, d: int, repeats: int, full_configs: int | None):
    prob = make_problem(d)
    p, Q = prob.params, prob.Q
    load0 = load()
    stacked = kernel_stats([r.stats for r in prob.reals])
    cp = [p.steps]
    res, secs, counts = {}, {}, {}

    fns = {}
    for level in ("exact", "orthogonal"):
        fns[level] = lambda lv=level: res.__setitem__(lv, run_batch(
            RunSpec(p, lv, times=cp), stacked, prob.job_seed, prob.job_mu))
    xt = seeds_test_noise(prob)
    nets = {"torch f32": TorchNet(prob, torch.float32, xt),
            "torch f64": TorchNet(prob, torch.float64, xt)}
    test_secs = {name: [] for name in nets}  # the test-error part of every call

    def torch_call(name):
        res[name] = nets[name].train()
        test_secs[name].append(nets[name].test_seconds)
    for name in nets:
        fns[name] = lambda nm=name: torch_call(nm)
    for name, t in best_interleaved(fns, repeats).items():  # the four methods in rounds
        secs[name], counts[name] = t / Q, Q
    test_part = {name: min(ts) / Q for name, ts in test_secs.items()}
    del fns, nets, xt

    nf = Q if full_configs is None else min(Q, full_configs)
    jobs = [0, Q - 1] if nf == 2 else list(range(nf))
    args = [(prob.job_params(q), prob.job_real(q)) for q in jobs]

    def full_all():
        for pq, rq in args:
            simulate_full(pq, record_every=pq.steps, real=rq)
    secs["full"], counts["full"] = best(full_all, repeats) / len(jobs), len(jobs)
    pq, rq = args[0]
    V0 = np.full((2, p.m, 2), p.v0)
    t_test = best(lambda: clean_test_error(rq.W0, V0, rq, pq), min(repeats, 2))
    load1 = load()

    ex = res["exact"]
    status = ex["status"][:, 0]
    diverged = int(np.sum(status >= 0))
    L_exact = ex["loss"][:, 0]
    lerr = {nm: rel(res[nm][2][:, -1].double().numpy(), L_exact)
            for nm in ("torch f32", "torch f64")}
    terr = {nm: float(np.max(np.abs(res[nm][3].double().numpy() - ex["test_error"][:, 0])))
            for nm in ("torch f32", "torch f64")}

    mus = ", ".join(f"{m:.3g}" for m in MUS)
    print(f"## d = {d:.0e}: {Q} configurations (||mu|| in ({mus}) x {N_SEEDS} seeds), "
          f"n = m = {p.n}, T = {p.steps}, v0 = {p.v0:g}, eta = {p.eta:g}, c = {p.c:g}\n")
    rows = []
    for name in ("exact", "orthogonal", "torch f32", "torch f64", "full"):
        grouped = "grouped" if Q // N_SEEDS >= GROUP_MIN else "job by job"
        note = {"exact": f"run_batch, {Q} jobs in one Numba call ({grouped}; sampler 'data')",
                "orthogonal": f"run_batch, {Q} jobs in one Numba call ({grouped}; G = I)",
                "torch f32": f"one batched call, {Q} configs; of which final test "
                             f"error {test_part['torch f32']:.3g} s",
                "torch f64": f"one batched call, {Q} configs; of which final test "
                             f"error {test_part['torch f64']:.3g} s",
                "full": f"simulate_full per config; of which final test error "
                        f"{t_test:.3g} s"}[name]
        rows.append([name, f"{secs[name]:.3g}", counts[name],
                     f"{secs[name] / secs['exact']:.3g}",
                     f"{secs[name] / secs['orthogonal']:.3g}", note])
    table(["method", "s / configuration", "configs timed", "/ exact", "/ orthogonal", "note"],
          rows)
    train_only = {nm: (secs[nm] - test_part[nm]) / secs["exact"] for nm in test_part}
    print(f"Ratios (d = {d:.0e}): torch_f32/exact = {secs['torch f32'] / secs['exact']:.3g}, "
          f"torch_f64/exact = {secs['torch f64'] / secs['exact']:.3g}, "
          f"full/exact = {secs['full'] / secs['exact']:.3g}, "
          f"full/torch_f64 = {secs['full'] / secs['torch f64']:.3g}")
    print(f"Final loss vs exact kernel, max rel. diff. over the {Q} configs: "
          f"torch f64 {lerr['torch f64']:.2e}, torch f32 {lerr['torch f32']:.2e} "
          f"(exact-level runs diverged: {diverged}; final loss range "
          f"{L_exact.min():.3g}..{L_exact.max():.3g})")
    print(f"Peer without its final test error (training only; the reduced levels' "
          f"timed call still includes theirs): torch_f32/exact = {train_only['torch f32']:.3g}, "
          f"torch_f64/exact = {train_only['torch f64']:.3g}")
    print(f"Final clean test error vs exact kernel, max abs. diff. over the {Q} configs "
          f"(same test points): torch f64 {terr['torch f64']:.3g}, torch f32 "
          f"{terr['torch f32']:.3g}")
    print(f"Load average (1/5/15 min) before / after this d: {load0} / {load1}\n")
    return prob if d == CHECK_D else None


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--d", default="1000,10000,100000",
                    help="comma-separated widths d (default 1000,10000,100000)")
    ap.add_argument("--repeats", type=int, default=3, help="repeats per cell (best of)")
    ap.add_argument("--threads", type=int, default=2,
                    help="threads of every method: torch, Numba, BLAS (default 2 = cores)")
    ap.add_argument("--quick", action="store_true",
                    help="smoke test: d = 1000 only, 1 repeat, 2 full configurations")
    ap.add_argument("--mus", type=int, default=None,
                    help="K ||mu|| values log-spaced in [0.5, 10] instead of the 4 fixed "
                         "ones (K x 4 configurations; K >= 16 lets the reduced levels "
                         "step a seed's configurations together, as in sweeps; the "
                         "full network then times 2 configurations)")
    args = ap.parse_args(argv)
    global MUS
    if args.mus is not None:
        if args.mus < 1:
            ap.error(f"--mus: expected a positive integer, got {args.mus}")
        MUS = tuple(float(x) for x in np.geomspace(0.5, 10.0, args.mus))
    try:
        import torch
    except ImportError:
        print("peers.py: torch is not installed (optional extra [bench]: pip install torch); "
              "skipped")
        return 0
    torch.set_num_threads(THREADS)
    try:
        ds = [int(float(x)) for x in args.d.split(",") if x.strip()]
    except ValueError:
        ap.error(f"--d: expected comma-separated integers, got {args.d!r}")
    repeats = 1 if args.quick else max(1, args.repeats)
    if args.quick:
        ds = [CHECK_D]

    t_start = time.perf_counter()
    print("# Peer benchmark: batched PyTorch full network vs the reduced levels and fullsim"
          + (" (--quick)" if args.quick else "") + "\n")
    print(f"torch {torch.__version__}, torch.get_num_threads() = {torch.get_num_threads()} "
          f"(set_num_threads({THREADS})); OMP/OPENBLAS/MKL/NUMBA_NUM_THREADS = {THREADS}; "
          f"best of {repeats} rounds (calls under {WARM_S} s: after {WARM_S} s back to back, up "
          f"to {MAX_CALLS} timed calls per round); load average at start: {load()} "
          f"on {os.cpu_count()} CPUs (other jobs share them: BLAS/OpenMP thread pools slow "
          f"down badly when the load exceeds the cores; compare with --threads 1)\n")
    check_prob = None
    for d in ds:
        full_configs = 2 if (d >= 100000 or args.quick or args.mus) else None
        got = bench_d(torch, d, repeats, full_configs)
        check_prob = got if got is not None else check_prob
    if check_prob is None:
        check_prob = make_problem(CHECK_D)
    check_against_fullsim(torch, check_prob)

    rows = machine_rows() + [["torch", torch.__version__],
                             ["torch threads", torch.get_num_threads()]]
    try:
        from threadpoolctl import threadpool_info
        for i in threadpool_info():
            rows.append([f"threadpool {i['user_api']}",
                         f"{i['internal_api']} {i.get('version')}, {i['num_threads']} threads"])
    except ImportError:
        pass
    table(["item", "value"], rows)
    print(f"Total: {time.perf_counter() - t_start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
