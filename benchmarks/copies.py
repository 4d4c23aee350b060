"""Second copies of the depth-1 arithmetic (ARCHITECTURE.md "Second copies"):
does each still pay on the work it serves?

    python benchmarks/copies.py loop     # fused one-job GD loop vs the reference step
    python benchmarks/copies.py threads  # parallel entry on one thread vs serial twin (--base)

"loop": T GD steps of one job (ReLU, exact level) with ``loop1._gd_loop_depth1``
against the reference step of ``step``/``step1`` (``_forward``, ``_lprime``,
``_gd_step`` per step), interleaved, min over repeats; both give the same
numbers bit for bit (tests/equivalence/test_reduction.py).

"threads": a ``run_batch`` of one-job batches with ``parallel=False``
(``numba.set_num_threads(1)`` around the parallel entry) in this tree; run
the same script in a tree with ``*_serial`` twins to compare.
"""
from __future__ import annotations

import argparse
import os
import sys

import numba
import numpy as np
from numba import njit

from dynamics.kernels import primitives, step

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import machine_rows, repeat_times, table  # noqa: E402


@njit
def _reference_loop(A, mu2, gamma, rho, v, st, cfg, w, steps):
    """``job._advance``'s loop over the reference step (as with momentum)."""
    for _ in range(steps):
        step._forward(A, gamma, rho, None, v, st, cfg, w)
        primitives._lprime(w.f, st.y, w.lp)
        step._gd_step(A, mu2, gamma, rho, None, v, st, cfg, w)
    step._forward(A, gamma, rho, None, v, st, cfg, w)
    primitives._lprime(w.f, st.y, w.lp)


def loop(args):
    from dynamics.batch import stacked_stats
    from dynamics.kernels import loop1, types
    from dynamics.params import Params
    from dynamics.run import kernel_config
    rows = []
    for n, m in ((20, 20), (50, 50), (100, 20)):
        p = Params(n=n, m=m, v0=1e-3, mu_norm=5.0)
        cfg = kernel_config(p, "exact")
        st = types._job_stats(stacked_stats(p, "wishart", [0]), 0)
        A, mu2, T = p.mu_norm * st.w0_e1, p.mu_norm ** 2, args.steps

        def fused():
            g, r, v = np.zeros((2, m)), np.zeros((2, m, n)), np.full((2, m, 2), p.v0)
            loop1._gd_loop_depth1(A, mu2, g, r, v, st, cfg, types._work(m, n, 1), 0.0,
                                  float(T))

        def reference():
            g, r, v = np.zeros((2, m)), np.zeros((2, m, n)), np.full((2, m, 2), p.v0)
            _reference_loop(A, mu2, g, r, v, st, cfg, types._work(m, n, 1), T)
        fused()
        reference()
        tf, tr = [], []
        for _ in range(args.repeats):
            tf.append(repeat_times(fused, 1)[0])
            tr.append(repeat_times(reference, 1)[0])
        rows.append([f"n={n} m={m}", T, f"{1e6 * min(tr) / T:.2f}", f"{1e6 * min(tf) / T:.2f}",
                     f"{min(tr) / min(tf):.2f}x"])
    table(["size", "steps", "reference us/step", "fused us/step", "ratio"], rows)


def threads(args):
    from dynamics.batch import run_batch, stacked_stats
    from dynamics.params import Params
    from dynamics.spec import RunSpec
    p = Params(v0=1e-3)
    st = stacked_stats(p, "wishart", list(range(8)))
    mus = np.linspace(2.0, 12.0, 4)
    job_seed, job_mu = np.tile(np.arange(8), mus.size), np.repeat(mus, 8)
    run_batch(RunSpec(p), st, job_seed[:1], job_mu[:1], parallel=False)
    ts = repeat_times(lambda: run_batch(RunSpec(p), st, job_seed, job_mu, parallel=False),
                      args.repeats)
    table(["jobs", "parallel=False (s, min)"], [[job_mu.size, f"{ts.min():.3f}"]])


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("what", choices=("loop", "threads"))
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--repeats", type=int, default=7)
    args = ap.parse_args()
    table(["item", "value"], machine_rows())
    print("numba threading layer:", numba.config.THREADING_LAYER)
    {"loop": loop, "threads": threads}[args.what](args)


if __name__ == "__main__":
    main()
