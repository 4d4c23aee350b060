"""Long training times: the normalised flow scheme against stepping GD, side by side.

One exact run (n = m = 20, d = 1000, wishart statistics drawn outside the
timing, v0 = 1, ||mu|| = 5, eta = 0.01).  GD is stepped to T = 2*10^4; the
normalised scheme (``dynamics.kernels.normalised_gd``, used by --times ...
inf and --integrator flow) to T = 10^6 and to the stop of the limit at
t = 10^30.  Printed: wall time, steps, and the ratio of wall time per unit
of training time t (GD steps).  Usage: python benchmarks/flow.py [--quick]
"""
from __future__ import annotations

import sys

import numpy as np

sys.path.insert(0, __file__.rsplit("/", 2)[0])

from benchmarks._common import machine_rows, repeat_times, table  # noqa: E402
from dynamics import Params  # noqa: E402
from dynamics.data import sample_stats  # noqa: E402
from dynamics.run import simulate, simulate_flow  # noqa: E402


def main(argv=None):
    quick = "--quick" in (argv or sys.argv[1:])
    p = Params(v0=1.0, mu_norm=5.0)
    stats = sample_stats(p, "wishart")
    T_gd = 2_000 if quick else 20_000
    gd_p = p.replace(steps=T_gd)
    simulate(gd_p.replace(steps=2), "exact", "wishart", record_every=2, stats=stats)  # compile
    simulate_flow(p, "exact", "wishart", times=[10], stats=stats)
    reps = 1 if quick else 3
    t_gd = np.min(repeat_times(lambda: simulate(gd_p, "exact", "wishart", record_every=T_gd,
                                                stats=stats), reps))
    rows, per_t_gd = [], t_gd / T_gd
    rows.append(["GD", f"{T_gd:g}", f"{T_gd}", f"{t_gd * 1e3:.1f}", f"{per_t_gd:.3g}", "1"])
    for target in ((1e5,) if quick else (1e6, np.inf)):
        runs = []
        t_fl = np.min(repeat_times(lambda: runs.append(
            simulate_flow(p, "exact", "wishart", times=[target], stats=stats)), reps))
        info = runs[-1].extra["flow"]
        reached = info["t_final"]
        per_t = t_fl / reached
        rows.append(["normalised flow", "inf (stop)" if np.isinf(target) else f"{target:g}",
                     f"{info['n_steps']}", f"{t_fl * 1e3:.1f}", f"{per_t:.3g}",
                     f"{per_t_gd / per_t:.3g}"])
    print("Long training times, one exact run (n = m = 20, d = 1000, v0 = 1, ||mu|| = 5)\n")
    table(["scheme", "time T (GD steps)", "steps", "wall ms", "s per unit t",
           "speed-up per unit t vs GD"], rows)
    print(f"GD steps / normalised steps to 10^6: "
          f"{1e6 / max(1, int(rows[1][2])):.0f}x fewer evaluations" if not quick else "")
    table(["item", "value"], machine_rows())


if __name__ == "__main__":
    main()
