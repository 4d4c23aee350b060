"""Figures of the measured mechanisms (``dynamics.theory.measure``), Agg backend, atomic PNG."""
from __future__ import annotations

import numpy as np

from dynamics.theory.measure import mechanisms, ratio_agreement, stage1_end

from .plots import _caption, plt, save_figure


def _median_over_neurons(x):
    """Median over (j, r) per step, NaN-aware: (R, 2, m) -> (R,)."""
    x = np.asarray(x, float).reshape(x.shape[0], -1)
    ok = np.isfinite(x).any(1)
    out = np.full(x.shape[0], np.nan)
    out[ok] = np.nanmedian(x[ok], axis=1)
    return out


def plot_ratio_vs_step(trajs_by_v0: dict, path) -> str:
    """Paper's noise ratio <w_{y_i,r}, xi_i>/v_{y_i,r,2} (mean over active
    same-class i, median over neurons with v2 > 0) vs step, one colour per v0;
    dashed: the growing-eigenvector prediction sqrt(eta S_N / eta_v)/k;
    dotted: measured end of stage 1 (max_i |l'_i + 1/2| > 0.1)."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    positive = True
    first = None
    for idx, (v0, tr) in enumerate(sorted(trajs_by_v0.items())):
        first = first or tr
        mech = mechanisms(tr)
        ok = tr.v[..., 1] > 0
        meas = _median_over_neurons(np.where(ok, mech["noise_ratio"][1], np.nan))
        pred = _median_over_neurons(np.where(ok, mech["noise_ratio_pred"][1], np.nan))
        col = f"C{idx}"
        ax.plot(tr.steps, meas, color=col, lw=2, label=f"v0={v0:g} measured")
        ax.plot(tr.steps, pred, color=col, lw=1.2, ls="--", label=f"v0={v0:g} predicted")
        t1 = stage1_end(tr)["measured"]
        if t1 > 0:
            ax.axvline(t1, color=col, lw=1, ls=":", label=f"v0={v0:g} stage-1 end")
        positive &= bool(np.all(meas[np.isfinite(meas)] > 0))
    if positive:
        ax.set_yscale("log")
    ax.set_xlabel("GD step t")
    ax.set_ylabel(r"$\langle w_{y_i,r},\xi_i\rangle / v_{y_i,r,2}$ (median over neurons)")
    ax.set_title("Layer ratio of the noise block vs step\n" + _caption(first.params, ("v0",)),
                 fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, ncol=2)
    return save_figure(fig, path)


def plot_v_change(trajs_by_v0: dict, path) -> str:
    """||v_{j,r} - v0|| / (sqrt(2) v0) vs step (median over neurons, band
    10-90 %), one colour per v0, log y."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    first = None
    for idx, (v0, tr) in enumerate(sorted(trajs_by_v0.items())):
        first = first or tr
        x = mechanisms(tr)["v_rel_change"][1].reshape(len(tr.steps), -1)
        q10, med, q90 = np.quantile(x, [0.1, 0.5, 0.9], axis=1)
        col = f"C{idx}"
        ax.plot(tr.steps[1:], med[1:], color=col, lw=2, label=f"v0={v0:g}")
        ax.fill_between(tr.steps[1:], q10[1:], q90[1:], color=col, alpha=0.2, lw=0)
    ax.set_yscale("log")
    ax.set_xlabel("GD step t")
    ax.set_ylabel(r"$\|v_{j,r} - v_0\| / (\sqrt{2}\, v_0)$")
    ax.set_title("Relative change of the output layer (median, 10-90 % band)\n"
                 + _caption(first.params, ("v0",)), fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    return save_figure(fig, path)


def plot_ratio_agreement(trajs_by_v0: dict, path) -> str:
    """measured / predicted noise ratio vs step (median over neurons with v2 > 0)."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    first = None
    for idx, (v0, tr) in enumerate(sorted(trajs_by_v0.items())):
        first = first or tr
        ax.plot(tr.steps, _median_over_neurons(ratio_agreement(tr)), color=f"C{idx}",
                lw=2, label=f"v0={v0:g}")
    ax.axhline(1.0, color="k", lw=1, ls=":")
    ax.set_yscale("log")
    ax.set_xlabel("GD step t")
    ax.set_ylabel("noise ratio: measured / predicted")
    ax.set_title("Agreement with the growing eigenvector\n" + _caption(first.params, ("v0",)),
                 fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    return save_figure(fig, path)
