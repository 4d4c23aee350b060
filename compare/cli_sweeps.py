"""``dyn phase`` and ``dyn theory``: click commands (``compare/cli.py`` adds
them to the ``dyn`` group)."""
from __future__ import annotations

import os
import time

import click
import numpy as np
from click.core import ParameterSource

from dynamics.levels import sampler_for
from dynamics.params import (ALL_LEVELS, AXES, D_GRID, N_GRID, PRECISIONS, SAMPLERS, SPEC_OF,
                             TAU, ParamError)

from .cli_common import (FiniteFloatRange, output_path, parse_times, build_params, cli_errors,
                         model_options, native_signals, out_option, pack, progress_bar,
                         refuse_sampler_of_level, refuse_unused, seeds_option,
                         threshold_option)


# ---------------------------------------------------------------- phase
PLAN_RUNS = 10 ** 6  # dyn phase announces sweeps of this many runs (the default has 32768)


class AxisType(click.ParamType):
    """``NAME=LO..HI:K``: K log-spaced values of a sweepable parameter."""

    name = "NAME=LO..HI:K"

    def convert(self, value, param, ctx):
        if isinstance(value, tuple):
            return value
        from .phase import parse_axis
        try:
            name, vals = parse_axis(value)
        except ParamError as exc:
            self.fail(f"{value!r}: {exc.allowed}", param, ctx)
        k = int(value.rsplit(":", 1)[1])
        if len(vals) < k:  # integer axis: log-spaced values that round alike are merged
            click.echo(f"note: {param.opts[0]} {value}: {k} log-spaced values round to "
                       f"{len(vals)} distinct integers", err=True)
        return name, vals


AXIS_NAMES = ", ".join(AXES)


@click.command()
@model_options()
@click.option("--x", "x_axis", type=AxisType(), default="v0=1e-3..10:64", show_default=True,
              help=f"first axis NAME=LO..HI:K (log-spaced); NAME in {AXIS_NAMES}")
@click.option("--y", "y_axis", type=AxisType(), default="mu=0.5..50:64", show_default=True,
              help="second axis, same syntax")
@seeds_option("seeds per grid point")
@threshold_option("test-error threshold for the mu* curve, in (0, 0.5)")
@click.option("--level", type=click.Choice(ALL_LEVELS), default="exact", show_default=True)
@click.option("--sampler", type=click.Choice(SAMPLERS), default="wishart", show_default=True,
              help="statistics sampler (level full: data only)")
@click.option("--times", default=None, callback=parse_times,
              help="training times (GD steps, 'inf' = the limit): one heatmap per time "
                   "from the same runs; default: only --steps")
@click.option("--precision", type=click.Choice(PRECISIONS), default="float64", show_default=True,
              help="float32: the group kernels in single precision (~1.3-1.6x faster; "
                   "paper levels, depth 1, ReLU; see the README for how the boundaries "
                   "compare); dyn compare and verification are always float64")
@out_option("dir", "dyn-phase", "sweep folder (resumable): phase.zarr, phase.nc, phase.png")
@click.option("--overwrite", is_flag=True, help="discard an existing sweep with other settings")
@click.option("--scheduler", default=None, help="dask.distributed scheduler address")
@click.option("--dask-workers", type=click.IntRange(1, 1024), default=None,
              help="start a local dask cluster with this many worker processes")
@click.option("--quiet", is_flag=True, help="no progress bar")
@pack("run", "level", "sampler", "times", "precision")
@pack("store", "out", "overwrite")
@pack("cluster", "scheduler", "dask_workers")
def phase(x_axis, y_axis, seeds, threshold, run, store, cluster, quiet, **kwargs):
    """Test-error heatmap over two parameter axes (resumable sweep)."""
    from dynamics.spec import RunSpec

    from .dataset import write_netcdf
    from .phase import make_spec, run_phase
    from .plots import plot_phase, plot_phase_times

    ctx = click.get_current_context()
    for axis, flag in ((x_axis, "--x"), (y_axis, "--y")):
        name = AXES[axis[0]].name
        if ctx.get_parameter_source(name) == ParameterSource.COMMANDLINE:
            raise click.UsageError(f"{AXES[axis[0]].flag} is swept by {flag} "
                                   f"{axis[0]}=...; give it only once", ctx)
    if x_axis[0] == y_axis[0]:
        raise click.BadParameter(f"{y_axis[0]}: must differ from the --x axis",
                                 param_hint="--y")
    params = build_params(kwargs, swept=(AXES[x_axis[0]].name, AXES[y_axis[0]].name),
                          level=run.level)
    refuse_sampler_of_level(run.level, run.sampler)
    if run.times is not None:
        refuse_unused(ctx, "steps", "--steps", "with --times (the sweep runs to the "
                      "--times; --steps is only their default)")
    if cluster.scheduler and cluster.dask_workers:
        raise click.UsageError("--dask-workers has no effect with --scheduler (the "
                               "workers are those of the scheduler's cluster); give one "
                               "of them", ctx)
    t0 = time.perf_counter()
    with cli_errors():
        sampler = sampler_for(run.level, run.sampler)
        spec = make_spec(RunSpec(params, run.level, sampler, seeds, run.times,
                                 precision=run.precision),
                         x_axis, y_axis, tau=threshold)
        runs = len(x_axis[1]) * len(y_axis[1]) * seeds
        if not quiet and runs >= PLAN_RUNS:  # say what a long sweep will do before it starts
            click.echo(f"dyn phase: {len(x_axis[1])} x {len(y_axis[1])} x {seeds} seeds = "
                       f"{runs} runs to T = {', '.join(f'{t:g}' for t in spec['times'])}; "
                       f"rows are saved to {os.path.join(store.out, 'phase.zarr')} as they "
                       f"finish (re-run the same command to resume)", err=True)
        written = {}

        def finish(ds):  # under the store's lock: no second writer between
            written["nc"] = write_netcdf(ds, os.path.join(store.out, "phase.nc"))
            png = plot_phase(ds, os.path.join(store.out, "phase.png"))
            made = set()
            if ds.sizes["steps"] > 1:
                for k, t in enumerate(ds.steps.values):
                    made.add(plot_phase(ds, os.path.join(store.out, f"phase_T={t:g}.png"), k))
                if "mu_star" in ds and np.isfinite(ds.mu_star.values).any():
                    made.add(plot_phase_times(ds, os.path.join(store.out, "phase_boundaries.png")))
                    png += ", " + os.path.join(store.out, "phase_boundaries.png")
            import glob  # an earlier sweep's figures (other times) would look like ours
            for old in glob.glob(os.path.join(glob.escape(store.out), "phase_T=*.png")) + \
                    glob.glob(os.path.join(glob.escape(store.out), "phase_boundaries.png")):
                if os.path.realpath(old) not in {os.path.realpath(p) for p in made} \
                        and os.path.isfile(old) and not os.path.islink(old):
                    os.unlink(old)
            written["png"] = png

        with progress_bar(len(x_axis[1]), f"dyn phase {x_axis[0]} x {y_axis[0]}",
                          quiet) as advance:
            ds = run_phase(spec, store.out, store.overwrite, cluster.scheduler,
                           cluster.dask_workers, advance, finish)
        nc, png = written["nc"], written["png"]
    click.echo(f"dyn phase: {x_axis[0]} ({len(x_axis[1])}) x {y_axis[0]} ({len(y_axis[1])}) x "
               f"{seeds} seeds = {ds.test_error.size} runs, level={run.level}, sampler={sampler}"
               f"{', precision=float32' if run.precision == 'float32' else ''}; "
               f"{time.perf_counter() - t0:.1f} s")
    if "mu_star" in ds:
        other = ds.mu_star.dims[0]
        vals = ds[other].values
        pick = np.unique(np.linspace(0, len(vals) - 1, min(8, len(vals))).astype(int))
        for k, t in enumerate(ds.steps.values):
            click.echo(f"  mu* (test error = {threshold:g}, T = {t:g}) at " + "  ".join(
                f"{other}={vals[i]:.3g}: {float(ds.mu_star[i, k]):.3g}" for i in pick))
    click.echo(f"  not fitted (train error > 0) at {int((ds.fitted == 0).sum())} of "
               f"{ds.fitted.size} grid points")
    n_div = int(ds.attrs.get("n_diverged", 0))
    if n_div:
        click.echo(f"  WARNING: {n_div} runs diverged (test error NaN in phase.nc, counted as "
                   f"chance in the mean); lower --eta")
    n_budget = int(ds.attrs.get("n_budget", 0))
    if n_budget:
        click.echo(f"  WARNING: {n_budget} runs spent the step budget of the normalised flow "
                   f"before their time (the loss is not decaying; test error NaN in phase.nc, "
                   f"counted as chance in the mean); ask for earlier --times or raise --eta")
    n_zero = int(ds.attrs.get("n_zero_output", 0))
    if n_zero:
        from dynamics.boundary import ZERO_OUTPUT_WHY
        click.echo(f"  WARNING: {n_zero} runs (times counted apart) have {ZERO_OUTPUT_WHY}")
    n_blank = int(ds.attrs.get("mu_star_not_reported", 0))
    if n_blank:
        click.echo(f"  WARNING: mu* not reported (NaN) at {n_blank} of {ds.mu_star.size} "
                   f"(axis value, time) points: runs counted as chance ("
                   + ("diverged" if not n_budget else "out of the step budget" if not n_div
                      else "diverged or out of the step budget")
                   + ") sit at the ||mu|| bracketing the crossing, which they made; "
                   + ("lower --eta" if not n_budget else "ask for earlier --times"
                      if not n_div else "lower --eta or ask for earlier --times"))
    click.echo(f"  wrote {nc} and {png}")


# ---------------------------------------------------------------- theory
@click.command()
@model_options()
@click.option("--level", type=click.Choice(ALL_LEVELS), default="exact", show_default=True)
@click.option("--sampler", type=click.Choice(SAMPLERS), default="wishart", show_default=True)
@click.option("--tol", type=FiniteFloatRange(0.0, 0.5, min_open=True, max_open=True),
              default=0.1, show_default=True,
              help="stage 1 ends when max_i |l'_i + 1/2| exceeds this, in (0, 0.5)")
@click.option("--formulas/--no-formulas", default=True, show_default=True,
              help="print the derived formulas")
@click.option("--latex", is_flag=True, help="print formulas as LaTeX instead of ASCII art")
@click.option("--fit-laws", is_flag=True,
              help="measure boundaries with the solver and fit the laws of docs/theory.md#mechanisms-and-laws per regime")
@seeds_option("seeds per boundary (--fit-laws)")
@click.option("--figures", "fig_dir", callback=output_path("dir"), default=None,
              help="write ratio and v-change figures for v0 in {1e-3, 1e-2, 1e-1, 1} here")
@click.option("--quiet", is_flag=True, help="no progress bar")
@click.option("--limit", "limit_law", is_flag=True,
              help="the idealised max-margin program at t = inf (sympy) against the "
                   "measured limit boundary mu*(inf) (level exact, --seeds seeds)")
@pack("run", "level", "sampler")
@pack("report", "tol", "formulas", "latex")
def theory(run, report, fit_laws, seeds, fig_dir, quiet, limit_law, **kwargs):
    """Derived mechanisms (sympy) against the measured dynamics."""
    from dynamics.spec import RunSpec
    from dynamics.theory import measure, symbolic

    from . import laws
    from .runs import run_one

    level, sampler = run.level, run.sampler
    formulas = report.formulas
    params = build_params(kwargs, level=level)
    refuse_sampler_of_level(level, sampler)
    ctx = click.get_current_context()
    if not (fit_laws or limit_law):
        refuse_unused(ctx, "seeds", "--seeds", "without --fit-laws or --limit (the seeds "
                      "of their boundaries; the report itself is one run, --seed)")
    if not formulas:
        refuse_unused(ctx, "latex", "--latex", "with --no-formulas (it prints the "
                      "formulas as LaTeX)")
    reduced_level = "exact" if level == "full" else level
    with cli_errors():
        off = [k for k in ("activation", "noise_model", "signal")
               if getattr(params, k) != SPEC_OF[k].default]
        if off:
            raise ParamError(off[0], getattr(params, off[0]), "dyn theory derives the "
                             "paper's ReLU theory (docs/theory.md#mechanisms-and-laws); the family runs with dyn "
                             "simulate / compare / solve")
        if params.optimizer != "gd":  # its predicted columns are plain GD's
            raise ParamError("optimizer", params.optimizer, "dyn theory predicts plain "
                             "GD (docs/theory.md#mechanisms-and-laws); measure other optimizers with dyn simulate / "
                             "compare / solve")
        sampler = sampler_for(level, sampler)
        if fit_laws and params.depth == 1:  # its grids, checked before anything is printed
            from .solve import check_grid
            for field, grid in (("d", D_GRID), ("n", N_GRID)):
                try:
                    check_grid(params, "fit_laws", field, grid, sampler)
                except ParamError as exc:
                    raise ParamError("fit_laws", f"{field}={exc.value} of its {field} grid "
                                     f"{list(grid)}", exc.allowed) from None
        if formulas:
            click.echo("derived formulas (sympy; alpha = eta c/(2n), beta = eta_v c/(2n)):")
            for name, f in symbolic.formulas().items():
                body = f["latex"] if report.latex else f["text"]
                sep = " " if report.latex or "\n" not in body else "\n"
                click.echo(f"- {name}:{sep}{body}")
            click.echo("")
        if params.depth > 1 and (fit_laws or fig_dir):
            raise click.UsageError(f"--fit-laws and --figures use the two-layer theory "
                                   f"(docs/theory.md#mechanisms-and-laws) and need --depth 1 (got --depth "
                                   f"{params.depth}); without them dyn theory reports the "
                                   f"per-layer mechanisms")
        if params.depth > 1 and formulas:
            click.echo("(the derived formulas are the two-layer theory of docs/theory.md#mechanisms-and-laws; at depth "
                       f"{params.depth} only per-layer mechanisms are measured)")
            formulas = False
        with native_signals():
            traj = run_one(params, level, sampler)
        if params.depth > 1:
            click.echo(laws.format_layers(measure.layer_summary(traj)))
            return
        click.echo(laws.format_report(measure.summarize(traj, report.tol)))
        if fit_laws:
            with progress_bar(laws.regime_points(params), "fitting laws",
                              quiet) as advance, native_signals():
                fits = laws.fit_regimes(RunSpec(params, reduced_level, sampler, seeds),
                                        progress=advance)
            click.echo("")
            click.echo(f"conditions: laws of docs/theory.md#mechanisms-and-laws fitted to measured boundaries (tau = {TAU:g})")
            click.echo(laws.format_fits(fits))
        if limit_law:
            click.echo("")
            click.echo(laws.format_limit_law(params, seeds, sampler))
        if fig_dir:
            from .theory_plots import plot_ratio_agreement, plot_ratio_vs_step, plot_v_change
            with native_signals():
                trajs = {v: run_one(params.replace(v0=v), reduced_level, sampler)
                         for v in (1e-3, 1e-2, 1e-1, 1.0)}
            for fn, name in ((plot_ratio_vs_step, "noise_ratio_vs_step.png"),
                             (plot_ratio_agreement, "noise_ratio_agreement.png"),
                             (plot_v_change, "v_change_vs_step.png")):
                click.echo(f"wrote {fn(trajs, os.path.join(fig_dir, name))}")
