"""Matplotlib figures (Agg backend), saved atomically as PNG."""
from __future__ import annotations

import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib import patheffects  # noqa: E402
from matplotlib.layout_engine import ConstrainedLayoutEngine  # noqa: E402
from matplotlib.ticker import FuncFormatter  # noqa: E402
import numpy as np  # noqa: E402

from dynamics.params import AXES, SPEC_OF, Params  # noqa: E402
from dynamics.run import Trajectory  # noqa: E402

from dynamics.files import atomic_target  # noqa: E402
from .metrics import rel_err_per_step, series  # noqa: E402


def save_figure(fig, path) -> str:
    """Save to a temporary file in the target folder, then rename.  A figure
    with constrained layout fits itself; others are cropped to their content
    (bbox_inches="tight": one more draw, ~0.2 s for the phase heatmap)."""
    fits = isinstance(fig.get_layout_engine(), ConstrainedLayoutEngine)
    try:
        with atomic_target(path, ".png.tmp") as tmp:
            fig.savefig(tmp, dpi=120, bbox_inches=None if fits else "tight", format="png")
    finally:
        plt.close(fig)
    return os.fspath(path)


def _caption(p, swept=()) -> str:
    """Parameters of a figure; swept ones are left out (``Params.caption``)."""
    return p.caption(swept)


def steps_label(steps: float) -> str:
    """'T = 200' or the limit label."""
    return "t = inf (the limit program)" if np.isinf(steps) else f"T = {steps:g}"


def axis_label(name: str) -> str:
    """Axis label of a phase axis or parameter, from the parameter table."""
    spec = AXES.get(name) or SPEC_OF.get(name)
    return f"{spec.long_name} {spec.label}" if spec else name


def plot_overlay(reduced: Trajectory, full: Trajectory, path, neurons=4) -> str:
    """Reduced (solid) vs full (dashed) gamma, max_i rho, v and loss over steps."""
    t = reduced.steps
    p = reduced.params
    # the neurons with the largest final |v_2|: the ones that matter
    flat = np.argsort(-np.abs(full.v[-1, :, :, -1]).ravel())[:neurons]
    picks = [np.unravel_index(k, full.v.shape[1:3]) for k in flat]
    fig, axes = plt.subplots(2, 2, figsize=(11, 7.5))
    if hasattr(reduced, "pre"):  # general level (docs/theory.md#general-reduction): pre-activations
        panels = [("pre", lambda tr, j, r: tr.pre[:, j, r, 0, 0],
                   r"$\langle w_{j,r}, x_{1}^{(1)}\rangle$"),
                  ("pre", lambda tr, j, r: tr.pre[:, j, r, :, -1].max(axis=-1),
                   r"$\max_i \langle w_{j,r}, x_i^{(P)}\rangle$"),
                  ("v", lambda tr, j, r: tr.v[:, j, r, -1], r"$v_{j,r,P}$ (last patch)")]
    else:
        panels = [("gamma", lambda tr, j, r: tr.gamma[:, j, r], r"$\gamma_{j,r}$"),
                  ("rho", lambda tr, j, r: tr.rho[:, j, r].max(axis=-1),
                   r"$\max_i \rho_{j,r,i}$"),
                  ("v", lambda tr, j, r: tr.v[:, j, r, 1], r"$v_{j,r,2}$ (noise patch)")]
    for ax, (_, get, label) in zip(axes.flat, panels):
        for c_idx, (j, r) in enumerate(picks):
            color = f"C{c_idx}"
            jl = "+1" if j == 0 else "-1"
            ax.plot(t, get(reduced, j, r), color=color, lw=1.8, label=f"j={jl}, r={r} {reduced.level}")
            ax.plot(t, get(full, j, r), color=color, lw=0, marker="o", mfc="none", ms=4,
                    markevery=max(1, len(t) // 15), label=f"j={jl}, r={r} full")
        ax.set_xlabel("step t")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[0, 0].legend(fontsize=7, ncol=2)
    ax = axes[1, 1]
    ax.semilogy(t, reduced.loss, lw=1.8, label=f"{reduced.level} (test err {reduced.test_error:.3f})")
    ax.semilogy(t, full.loss, lw=0, marker="o", mfc="none", ms=4, markevery=max(1, len(t) // 15),
                label=f"full (test err {full.test_error:.3f})")
    ax.set_xlabel("step t")
    ax.set_ylabel("training loss")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, which="both")
    unused = getattr(reduced, "unused", ())
    fig.suptitle(f"{reduced.level} reduction (lines) vs weight-space network (circles)\n"
                 f"{_caption(p, unused)}",
                 fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path)


def plot_rel_error(reduced: Trajectory, full: Trajectory, path) -> str:
    """Relative error reduced vs full per step, per variable (log y)."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    floor = 1e-17
    for name in reduced.compared_variables():
        a, b = series(reduced, name), series(full, name)
        ax.semilogy(reduced.steps, np.maximum(rel_err_per_step(a, b), floor), label=name)
    ax.axhline(1e-10, color="k", ls=":", lw=1, label="1e-10")
    ax.set_xlabel("step t")
    ax.set_ylabel(r"$\|a_t-b_t\|_\max / \|b_t\|_\max$ (floored at 1e-17)")
    ax.set_title(f"{reduced.level} vs full network: relative error\n"
                 f"{_caption(reduced.params, getattr(reduced, 'unused', ()))}",
                 fontsize=9)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, which="both")
    fig.tight_layout()
    return save_figure(fig, path)


def plot_scaling(x, mu_star, ci, fit, theory_slopes, *, xlabel, path, title) -> str:
    """mu* vs a grid variable on log axes, with fitted and theory slopes.

    ci: (lower, upper) arrays of the 95% interval; fit: (slope, intercept) in
    log space; theory_slopes: {label: slope}, drawn through the geometric
    centre of the measurements.
    """
    ci_lo, ci_hi = ci
    x, y = np.asarray(x, float), np.asarray(mu_star, float)
    ok = np.isfinite(y)
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    yerr = np.vstack([y - np.asarray(ci_lo), np.asarray(ci_hi) - y])
    ax.errorbar(x[ok], y[ok], yerr=np.abs(yerr[:, ok]), fmt="o", color="k", capsize=3,
                label=r"measured $\|\mu\|^*$ (95% bootstrap)")
    xs = np.geomspace(x.min(), x.max(), 50)
    slope, icpt = fit
    ax.plot(xs, np.exp(icpt) * xs**slope, color="C0", label=f"fit: slope {slope:.3f}")
    if ok.any():
        cx, cy = np.exp(np.mean(np.log(x[ok]))), np.exp(np.mean(np.log(y[ok])))
        for k, (label, sl) in enumerate(theory_slopes.items()):
            ax.plot(xs, cy * (xs / cx) ** sl, ls="--", color=f"C{k + 1}", label=label)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(r"critical signal $\|\mu\|^*$ (test error = $\tau$)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, which="both")
    fig.tight_layout()
    return save_figure(fig, path)


def plot_error_curve(mu, test, tau, mu_star, path, title) -> str:
    """Seed-mean test error vs ||mu|| (log x) with the per-seed spread."""
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    mean = test.mean(axis=0)
    ax.fill_between(mu, test.min(axis=0), test.max(axis=0), alpha=0.2, label="seed range")
    ax.plot(mu, mean, "o-", ms=3, label="seed mean")
    ax.axhline(tau, color="k", ls=":", lw=1, label=f"tau = {tau:g}")
    if np.isfinite(mu_star):
        ax.axvline(mu_star, color="C3", ls="--", lw=1, label=rf"$\|\mu\|^*$ = {mu_star:.3g}")
    ax.set_xscale("log")
    ax.set_xlabel(r"signal strength $\|\mu\|$")
    ax.set_ylabel("clean test error")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, which="both")
    fig.tight_layout()
    return save_figure(fig, path)


# Exponent of mu* in (v0, d, n) for each law of docs/theory.md#mechanisms-and-laws (constants unknown;
# curves are anchored on the measured mu* curve, at the end named last).
def phase_laws() -> dict:
    """label -> (exponents of mu*, anchor end) of the laws of docs/theory.md#mechanisms-and-laws (sympy);
    the large-v0 law is anchored at the large end of the axis."""
    from dynamics.theory.lawcache import law_exponents  # derived once, kept on disk

    return {e["label"]: (e["exponents"], "last" if name == "large_v0" else "first")
            for name, e in law_exponents().items()}


def plot_phase(ds, path, k: int = 0) -> str:
    """Heatmap of the seed-mean test error at checkpoint index k, with the
    mu* curve and theory laws."""
    ds = ds.isel(steps=k)
    xn, yn = ds.attrs["x_axis"], ds.attrs["y_axis"]
    x, y = ds[xn].values.astype(float), ds[yn].values.astype(float)
    fig, ax = plt.subplots(figsize=(7.5, 6.0), layout="constrained")
    mesh = ax.pcolormesh(x, y, ds.test_error_mean.transpose(yn, xn).values, shading="nearest",
                         cmap="viridis", vmin=0.0, vmax=0.5)
    cbar = fig.colorbar(mesh, ax=ax)
    cbar.set_label(f"clean test error (mean over {ds.sizes['seed']} seeds)")
    if "mu_star" in ds:
        other = yn if xn == "mu" else xn
        t = ds[other].values.astype(float)
        star = ds.mu_star.values
        ok = np.isfinite(star)
        curve = (t, star) if yn == "mu" else (star, t)
        ax.plot(*(c[ok] for c in curve), "w-o", ms=3, lw=2,
                path_effects=[patheffects.withStroke(linewidth=3.5, foreground="k")],
                label=rf"measured $\|\mu\|^*$ (test error = {ds.attrs['threshold']:g})")
        if other in ("v0", "d", "n") and ok.sum() >= 2:
            for k, (label, (expo, anchor)) in enumerate(phase_laws().items()):
                i0 = np.nonzero(ok)[0][-1 if anchor == "last" else 0]
                law = star[i0] * (t / t[i0]) ** expo[other]
                xy = (t, law) if yn == "mu" else (law, t)
                ax.plot(*xy, ls="--", lw=1.5, color=f"C{k + 1}", label=f"{label} (anchored)")
        ax.set_xlim(x.min(), x.max())
        ax.set_ylim(y.min(), y.max())
        # below the axes: covers no data (loc="best" also scanned the mesh's
        # 4096 log-scale cells, 0.5 s)
        fig.legend(fontsize=7, loc="outside lower center", ncol=2)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel(axis_label(xn))
    ax.set_ylabel(axis_label(yn))
    p = Params.from_attrs(ds.attrs)
    f32 = ", float32" if ds.attrs.get("precision") == "float32" else ""
    ax.set_title(f"dyn phase ({ds.attrs['level']}, {ds.attrs['sampler']}{f32}): {xn} x {yn}, "
                 f"{steps_label(float(ds.steps))}\n"
                 f"{_caption(p, swept=(xn, yn, 'steps'))}", fontsize=8)  # T: in the title
    return save_figure(fig, path)


def plot_mu_star_vs_time(ds, path) -> str:
    """mu* (headline tau) against training time, one line per v0, with the
    bootstrap intervals; the limit (steps = inf) is drawn at the right edge."""
    steps = ds.steps.values.astype(float)
    finite = np.isfinite(steps)
    x = steps.copy()
    if not finite.all():  # place the limit one decade beyond the last finite time
        x[~finite] = (steps[finite].max() if finite.any() else 1.0) * 10.0
    tau = float(ds.tau.values[0])
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for k, v0 in enumerate(ds.v0.values):
        sel = ds.sel(v0=v0, tau=tau)
        star, lo, hi = sel.mu_star_t.values, sel.mu_star_t_lo.values, sel.mu_star_t_hi.values
        ax.errorbar(x, star, yerr=[star - lo, hi - star], marker="o", capsize=3,
                    color=f"C{k}", label=f"$v_0$ = {v0:g}")
    ax.set_xscale("log")
    ax.set_xticks(x)
    ax.set_xticklabels([f"{t:g}" if np.isfinite(t) else "inf\n(limit)" for t in steps])
    ax.set_xlabel("training time T (GD steps)")
    return _finish_boundary_figure(
        fig, ax, ds, tau, f"boundary vs training time ({ds.attrs['level']}, "
        f"{ds.attrs['sampler']}, {ds.attrs['n_seeds']} seeds, 95% bootstrap CI)",
        ("v0", "mu_norm", "steps"), path)


def _finish_boundary_figure(fig, ax, ds, tau, title, swept, path) -> str:
    """y label (log ticks as plain numbers: 2, 3, 4, not 2 x 10^0), title with
    the parameter caption, legend; save."""
    if ax.get_yscale() == "log":
        plain = FuncFormatter(lambda value, _: f"{value:g}")
        ax.yaxis.set_major_formatter(plain)
        lo, hi = ax.get_ylim()
        if hi < 30.0 * lo:  # label the minor ticks only within ~1.5 decades
            ax.yaxis.set_minor_formatter(plain)
    ax.set_ylabel(rf"$\|\mu\|^*$ (mean test error = {tau:g})")
    ax.set_title(f"{title}\n{Params.from_attrs(ds.attrs).caption(swept)}", fontsize=8)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path)


def plot_phase_times(ds, path) -> str:
    """The mu* curves of a phase sweep at every checkpoint time, overlaid."""
    xn, yn = ds.attrs["x_axis"], ds.attrs["y_axis"]
    other = yn if xn == "mu" else xn
    t = ds[other].values.astype(float)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for k, steps in enumerate(ds.steps.values):
        star = ds.mu_star.isel(steps=k).values
        ax.plot(t, star, "o-", ms=3, color=f"C{k}", label=steps_label(float(steps)))
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel(axis_label(other))
    return _finish_boundary_figure(
        fig, ax, ds, float(ds.attrs["threshold"]), f"phase boundary at each training time "
        f"({ds.attrs['level']}, {ds.attrs['sampler']}, {ds.sizes['seed']} seeds)",
        (xn, yn, "steps"), path)
