"""Beyond the paper: how ||mu||* moves with noise correlation, noise law,
label noise and optimizer, at small (1e-3) and large (1) v0.

Every point is `compare.boundaries.find_boundary` (the main point of `dyn
solve`) at the default parameters (n=20, d=1000, m=20, T=200) with sampler
`data`:
  * ar1:KAPPA, noise laws, flips, gd, momentum: level `exact` (exact for all
    of these; checked against the network in tests/equivalence/test_beyond.py);
  * adam and sign GD: level `full` only (the network itself): they act per
    weight coordinate, W leaves span{mu, xi_i}, and the reduced levels refuse
    them.
Same as e.g. `dyn solve --v0 0.001 --sampler data --noise ar1:0.6 --d-grid
none --n-grid none --no-verify`.

Run:  python studies/beyond.py [--seeds 8] [--out figures/beyond]
      python studies/beyond.py --quick      # smoke test: tiny sizes, 2 seeds
Writes beyond.nc (atomic) and beyond.png; prints a table.
"""
from __future__ import annotations

import argparse
import os
import time

import numpy as np
import xarray as xr

from compare.boundaries import find_boundary
from compare.dataset import global_attrs, write_netcdf
from compare.plots import plt, save_figure
from dynamics import Params, RunSpec

STUDIES = [  # (group, label, params changes, level)
    ("noise correlation", "gaussian (kappa=0)", {}, "exact"),
    ("noise correlation", "ar1 kappa=0.3", {"noise": "ar1:0.3"}, "exact"),
    ("noise correlation", "ar1 kappa=0.6", {"noise": "ar1:0.6"}, "exact"),
    ("noise correlation", "ar1 kappa=0.9", {"noise": "ar1:0.9"}, "exact"),
    ("noise law", "rademacher", {"noise": "rademacher"}, "exact"),
    ("noise law", "student-t nu=3", {"noise": "student-t:3"}, "exact"),
    ("noise law", "student-t nu=10", {"noise": "student-t:10"}, "exact"),
    ("noise law", "spiked K=1 beta=50", {"noise": "spiked:1,50"}, "exact"),
    ("label noise", "flip=0.05", {"flip": 0.05}, "exact"),
    ("label noise", "flip=0.1", {"flip": 0.1}, "exact"),
    ("label noise", "flip=0.2", {"flip": 0.2}, "exact"),
    ("optimizer", "momentum 0.9", {"optimizer": "momentum:0.9"}, "exact"),
    ("optimizer", "gd eta=1e-3 (reference)", {"eta": 1e-3}, "exact"),
    ("optimizer", "adam eta=1e-3 (network)", {"optimizer": "adam", "eta": 1e-3}, "full"),
    ("optimizer", "sign eta=1e-3 (network)", {"optimizer": "sign", "eta": 1e-3}, "full"),
]
V0S = (1e-3, 1.0)
# --quick: tiny sizes (sampler data needs n <= d - 1, spiked noise K <= d - 1)
QUICK = dict(n=8, m=4, d=200, steps=40, n_test=200)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=8)
    ap.add_argument("--full-seeds", type=int, default=4, help="seeds for level full")
    ap.add_argument("--out", default="figures/beyond")
    ap.add_argument("--quick", action="store_true",
                    help="smoke test: n=8, m=4, d=200, T=40, 2 seeds (1 for level full)")
    args = ap.parse_args()
    sizes = QUICK if args.quick else {}
    if args.quick:
        args.seeds, args.full_seeds = 2, 1
    labels = [s[1] for s in STUDIES]
    star = np.full((len(V0S), len(STUDIES)), np.nan)
    lo, hi, loss = star.copy(), star.copy(), star.copy()
    t0 = time.perf_counter()
    for a, v0 in enumerate(V0S):
        for b, (group, label, change, level) in enumerate(STUDIES):
            p = Params(v0=v0, **sizes, **change)
            seeds = args.full_seeds if level == "full" else args.seeds
            res = find_boundary(RunSpec(p, level, "data", seeds), taus=(0.25,), rel_tol=0.02)
            star[a, b] = res.star()
            lo[a, b], hi[a, b] = res.ci[0.25]
            loss[a, b] = res.loss_at_star
            print(f"v0={v0:<6g} {group:<18} {label:<34} mu*={star[a, b]:8.3g} "
                  f"[{lo[a, b]:.3g}, {hi[a, b]:.3g}]  loss@mu*={loss[a, b]:.3g}  "
                  f"({time.perf_counter() - t0:.0f} s)", flush=True)
    ds = xr.Dataset(
        {"mu_star": (("v0", "setting"), star), "mu_star_lo": (("v0", "setting"), lo),
         "mu_star_hi": (("v0", "setting"), hi), "loss_at_mu_star": (("v0", "setting"), loss)},
        coords={"v0": list(V0S), "setting": labels,
                "group": ("setting", [s[0] for s in STUDIES]),
                "level": ("setting", [s[3] for s in STUDIES])},
        attrs=global_attrs(Params(**sizes), swept=("v0", "mu_norm"),
                           title="dyn beyond-the-paper study", sampler="data",
                           n_seeds=args.seeds, full_seeds=args.full_seeds, threshold=0.25))
    os.makedirs(args.out, exist_ok=True)
    write_netcdf(ds, os.path.join(args.out, "beyond.nc"))
    shown = list(range(len(STUDIES)))
    fig, axes = plt.subplots(1, 2, figsize=(13, 6.5), sharey=True)
    y = np.arange(len(STUDIES))
    for ax, a, v0 in zip(axes, range(len(V0S)), V0S):
        base = star[a, 0]
        for row, b in enumerate(shown):
            group = STUDIES[b][0]
            color = f"C{['noise correlation', 'noise law', 'label noise', 'optimizer'].index(group)}"
            err = [[star[a, b] - lo[a, b]], [hi[a, b] - star[a, b]]]
            ax.errorbar(star[a, b], y[row], xerr=np.abs(err), fmt="o", color=color, capsize=3)
        ax.axvline(base, color="k", ls=":", lw=1, label=f"gaussian, gd baseline ({base:.2f})")
        ax.set_xscale("log")
        ax.set_xlabel(r"critical signal $\|\mu\|^*$ (clean test error = 0.25; 95% bootstrap)")
        ax.set_title(f"v0 = {v0:g}", fontsize=10)
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8, loc="upper right")
    axes[0].set_yticks(y[:len(shown)])
    axes[0].set_yticklabels([f"{STUDIES[b][0]}: {STUDIES[b][1]}" for b in shown], fontsize=8)
    axes[0].invert_yaxis()
    bp = Params(**sizes)
    fig.suptitle(f"Beyond the paper: shifts of the phase boundary (n={bp.n}, d={bp.d}, "
                 f"m={bp.m}, eta={bp.eta:g} unless stated, T={bp.steps}, sampler data)",
                 fontsize=10)
    fig.tight_layout()
    save_figure(fig, os.path.join(args.out, "beyond.png"))
    print(f"wrote {args.out}/beyond.nc and beyond.png ({time.perf_counter() - t0:.0f} s)")


if __name__ == "__main__":
    main()
