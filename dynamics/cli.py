"""The ``dyn`` command line: a thin click layer over the library.

Every subcommand builds a validated ``Params`` and calls library functions;
bad input becomes a one-line click error naming the option (no traceback).
"""
from __future__ import annotations

import contextlib
import sys
import time

import click
import numpy as np

from .params import LEVELS, NOISE_HELP, OPTIMIZER_HELP, SAMPLERS, Params, ParamError

# Params field -> (CLI flag, type, help)
MODEL_OPTIONS = {
    "n": ("--n", int, "training samples n (>= 2)"),
    "d": ("--d", int, "input dimension d (>= 2)"),
    "m": ("--m", int, "filters per class m (>= 1)"),
    "sigma_0": ("--sigma0", float, "std of initial filters sigma_0 (> 0)"),
    "sigma_p": ("--sigmap", float, "noise std sigma_p (> 0)"),
    "mu_norm": ("--mu", float, "signal strength ||mu|| (> 0)"),
    "v0": ("--v0", float, "initial output weight v0 (> 0)"),
    "eta": ("--eta", float, "learning rate of W (> 0)"),
    "eta_v": ("--eta-v", float, "learning rate of V (> 0; default: eta)"),
    "steps": ("--steps", int, "gradient-descent steps T (>= 1)"),
    "c": ("--c", float, "output scale c in F_j = c sum ... (> 0)"),
    "flip": ("--flip", float, "label-flip probability, in [0, 0.5)"),
    "seed": ("--seed", int, "master random seed (>= 0)"),
    "n_test": ("--n-test", int, "test points / Gaussian test draws (>= 1)"),
    "noise": ("--noise", str, "noise law: " + NOISE_HELP + " (non-gaussian needs sampler data)"),
    "optimizer": ("--optimizer", str, "update rule: " + OPTIMIZER_HELP),
}
FLAG_OF = {name: spec[0] for name, spec in MODEL_OPTIONS.items()}
FLAG_OF.update(record_every="--record-every", level="--level", sampler="--sampler",
               seeds="--seeds", threshold="--threshold", verify_seeds="--verify-seeds",
               tol="--tol", x="--x", y="--y", dask_workers="--dask-workers")


def model_options(skip=()):
    """Decorator adding one option per model parameter (defaults from Params)."""
    defaults = Params()

    def deco(func):
        for name, (flag, typ, help_) in reversed(list(MODEL_OPTIONS.items())):
            if name in skip:
                continue
            default = getattr(defaults, name)
            func = click.option(flag, name, type=typ, default=default,
                                show_default=default is not None, help=help_)(func)
        return func
    return deco


def build_params(kwargs) -> Params:
    """Params from CLI keyword arguments (pops them); BadParameter on error."""
    values = {k: kwargs.pop(k) for k in list(kwargs) if k in MODEL_OPTIONS}
    with cli_errors():
        return Params(**values)


@contextlib.contextmanager
def cli_errors():
    """Turn library errors into one-line click errors."""
    try:
        yield
    except ParamError as exc:
        flag = FLAG_OF.get(exc.param, exc.param)
        raise click.BadParameter(f"{exc.value!r}: {exc.allowed}", param_hint=flag) from None
    except (FloatingPointError, MemoryError, ValueError, OSError) as exc:
        raise click.ClickException(str(exc)) from None


def echo_kv(rows):
    width = max(len(k) for k, _ in rows)
    for key, val in rows:
        click.echo(f"  {key:<{width}}  {val}")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="dyn")
def main():
    """dyn: reduced and full dynamics of benign overfitting in two-layer ReLU
    CNNs with a trainable output layer (arXiv 2410.19139)."""


@main.command()
@model_options()
@click.option("--level", type=click.Choice(LEVELS + ("full",)), default="exact",
              show_default=True, help="model level ('full' = weight-space network)")
@click.option("--sampler", type=click.Choice(SAMPLERS), default="wishart",
              show_default=True, help="statistics sampler (full implies data)")
@click.option("--record-every", type=int, default=1, show_default=True,
              help="record the state every k steps (and at T)")
@click.option("--out", type=click.Path(dir_okay=False), default=None,
              help="write the trajectory to this netCDF file")
def simulate(level, sampler, record_every, out, **kwargs):
    """Train one configuration and print a summary."""
    from compare.dataset import trajectory_dataset, write_netcdf
    from .run import record_steps, simulate as run_reduced

    params = build_params(kwargs)
    with cli_errors():
        record_steps(params.steps, record_every)
        if level == "full":
            if sampler != "data":
                click.echo("note: level 'full' uses sampler 'data'", err=True)
            from fullsim import simulate_full
            traj = simulate_full(params, record_every=record_every)
        else:
            traj = run_reduced(params, level, sampler, record_every)
        click.echo(f"dyn simulate: level={traj.level} sampler={traj.sampler} "
                   f"n={params.n} d={params.d} m={params.m} ||mu||={params.mu_norm:g} "
                   f"v0={params.v0:g} c={params.c:g} T={params.steps} seed={params.seed} "
                   f"flip={params.flip:g} noise={params.noise} optimizer={params.optimizer}")
        rows = [("final loss", f"{traj.loss[-1]:.6g}"),
                ("train error", f"{traj.train_error[-1]:.4f}"),
                ("test error (clean)", f"{traj.test_error:.4f}")]
        if params.flip > 0:
            rows.append(("test error (noisy labels)", f"{traj.test_error_noisy:.4f}"))
        if "out_of_span" in traj.extra:
            rows.append(("max out-of-span ||W-W0||", f"{traj.extra['out_of_span'].max():.3e}"))
        echo_kv(rows + [
                        ("wall time", f"{traj.wall_time:.3f} s")])
        if out:
            write_netcdf(trajectory_dataset(traj), out)
            click.echo(f"  wrote {out}")


def _int_list(name):
    """click callback: comma-separated integers >= 2, or 'none' (no grid)."""
    def parse(ctx, param, value):
        if value is None:
            return None
        if str(value).strip().lower() == "none":
            return ()
        try:
            vals = tuple(int(x) for x in str(value).split(",") if x.strip())
        except ValueError:
            raise click.BadParameter(f"{value!r}: expected comma-separated integers",
                                     param_hint=name) from None
        if not vals or min(vals) < 2:
            raise click.BadParameter(f"{value!r}: need integers >= 2", param_hint=name)
        return vals
    return parse


@contextlib.contextmanager
def progress_bar(length, label, quiet):
    """click progress bar with ETA on stderr; yields an ``advance(k)`` callable."""
    if quiet:
        yield None
        return
    with click.progressbar(length=length, label=label, show_eta=True, show_pos=True,
                           file=sys.stderr) as bar:
        yield bar.update


@main.command()
@model_options(skip=("v0",))
@click.option("--v0", "v0s", type=float, multiple=True, default=(Params().v0,),
              show_default=True, help="initial output weight(s); repeat for several")
@click.option("--seeds", type=int, default=8, show_default=True, help="seeds per grid point (>= 1)")
@click.option("--threshold", type=float, default=0.25, show_default=True,
              help="test-error threshold tau defining ||mu||*, in (0, 0.5)")
@click.option("--level", type=click.Choice(LEVELS + ("full",)), default="exact", show_default=True,
              help="model level of the solver ('full' trains the real network: slow, exact "
                   "for every optimizer)")
@click.option("--sampler", type=click.Choice(SAMPLERS), default="wishart", show_default=True,
              help="statistics sampler (non-gaussian noise and level full need 'data')")
@click.option("--d-grid", default="500,1000,2000,4000,8000,16000,32000,64000",
              show_default=True, callback=_int_list("--d-grid"),
              help="d values for the scaling fit ('none' to skip)")
@click.option("--n-grid", default="10,20,40,80,160", show_default=True,
              callback=_int_list("--n-grid"), help="n values for the scaling fit ('none' to skip)")
@click.option("--verify/--no-verify", default=True, show_default=True,
              help="check against the full network at mu*/2, mu*, 2mu*")
@click.option("--verify-seeds", type=int, default=3, show_default=True,
              help="seeds for the full-network check")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default="dyn-out",
              show_default=True, help="output folder (solve.nc and PNG figures)")
@click.option("--quiet", is_flag=True, help="no progress bar")
def solve(v0s, seeds, threshold, level, sampler, d_grid, n_grid, verify, verify_seeds,
          out_dir, quiet, **kwargs):
    """Phase boundary ||mu||* for each v0, its d and n scaling, and a check
    of the reduction against the full network."""
    from compare.solve import format_summary, solve as run_solve, to_dataset, work_units, write_outputs

    params = build_params(kwargs)
    t0 = time.perf_counter()
    with cli_errors():
        for v0 in v0s:
            Params(v0=v0)  # validate every --v0
        if seeds < 1:
            raise ParamError("seeds", seeds, "must be an integer >= 1")
        if verify_seeds < 1:
            raise ParamError("verify_seeds", verify_seeds, "must be an integer >= 1")
        if not 0.0 < threshold < 0.5:
            raise ParamError("threshold", threshold, "must be in (0, 0.5)")
        units = work_units(len(v0s), d_grid, n_grid, verify, verify_seeds)
        with progress_bar(units, "dyn solve", quiet) as advance:
            results = run_solve(params, v0s, level, sampler, seeds, threshold, d_grid,
                                n_grid, verify, verify_seeds, progress=advance)
        ds = to_dataset(results, params, level, sampler, seeds, threshold, d_grid, n_grid)
        paths = write_outputs(results, ds, out_dir, d_grid, n_grid)
    click.echo(format_summary(results, threshold))
    click.echo(f"wrote {len(paths)} files to {out_dir}/ (solve.nc + figures); "
               f"total {time.perf_counter() - t0:.1f} s")


@main.command()
@model_options()
@click.option("--level", type=click.Choice(LEVELS), default="exact", show_default=True,
              help="reduced level to check against the full network")
@click.option("--record-every", type=int, default=1, show_default=True)
@click.option("--tol", type=float, default=1e-6, show_default=True,
              help="relative-error tolerance for 'first step above'")
@click.option("--out", type=click.Path(dir_okay=False), default=None,
              help="netCDF file with both trajectories (dim model) and the metrics")
@click.option("--plots", "plot_dir", type=click.Path(file_okay=False), default=None,
              help="folder for the overlay and relative-error PNGs")
def compare(level, record_every, tol, out, plot_dir, **kwargs):
    """Run a reduced level and the full network on the same data; print metrics."""
    from compare.dataset import combine, write_netcdf
    from compare.metrics import discrepancy, format_metrics
    from compare.verify import run_pair
    from .run import record_steps

    params = build_params(kwargs)
    with cli_errors():
        record_steps(params.steps, record_every)
        if not tol > 0:
            raise ParamError("tol", tol, "must be > 0")
        reduced, full = run_pair(params, level, record_every)
        met = discrepancy(reduced, full, tol)
        click.echo(f"dyn compare: {level} vs full network, sampler data, n={params.n} "
                   f"d={params.d} m={params.m} ||mu||={params.mu_norm:g} v0={params.v0:g} "
                   f"T={params.steps} seed={params.seed} (reduced {reduced.wall_time:.3f} s, "
                   f"full {full.wall_time:.3f} s)")
        click.echo(format_metrics(met))
        if out:
            ds = combine(reduced, full).merge(met.rename(step="metric_step")
                                              .rename_vars(rel_err="rel_err_per_step"))
            write_netcdf(ds, out)
            click.echo(f"wrote {out}")
        if plot_dir:
            from compare.plots import plot_overlay, plot_rel_error
            import os
            for path in (plot_overlay(reduced, full, os.path.join(plot_dir, f"overlay_{level}.png")),
                         plot_rel_error(reduced, full, os.path.join(plot_dir, f"relerr_{level}.png"))):
                click.echo(f"wrote {path}")


@main.command()
@model_options()
@click.option("--x", "x_axis", default="v0=1e-3..10:64", show_default=True,
              help="first axis NAME=LO..HI:K (log-spaced); NAME in v0, mu, d, n, m, sigma0, eta")
@click.option("--y", "y_axis", default="mu=0.5..50:64", show_default=True,
              help="second axis, same syntax")
@click.option("--seeds", type=int, default=8, show_default=True, help="seeds per grid point (>= 1)")
@click.option("--threshold", type=float, default=0.25, show_default=True,
              help="test-error threshold for the mu* curve, in (0, 0.5)")
@click.option("--level", type=click.Choice(LEVELS + ("full",)), default="exact", show_default=True)
@click.option("--sampler", type=click.Choice(SAMPLERS), default="wishart", show_default=True,
              help="statistics sampler (level full always uses data)")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default="dyn-phase",
              show_default=True, help="store folder (resumable) with phase.nc and phase.png")
@click.option("--overwrite", is_flag=True, help="discard an existing store with other settings")
@click.option("--scheduler", default=None, help="dask.distributed scheduler address")
@click.option("--dask-workers", type=int, default=None,
              help="start a local dask cluster with this many worker processes")
@click.option("--quiet", is_flag=True, help="no progress bar")
def phase(x_axis, y_axis, seeds, threshold, level, sampler, out_dir, overwrite,
          scheduler, dask_workers, quiet, **kwargs):
    """Test-error heatmap over two parameter axes (resumable sweep)."""
    import os
    from compare.phase import make_spec, parse_axis, run_phase
    from compare.dataset import write_netcdf
    from compare.plots import plot_phase

    params = build_params(kwargs)
    t0 = time.perf_counter()
    with cli_errors():
        x = parse_axis(x_axis, "x")
        y = parse_axis(y_axis, "y")
        if x[0] == y[0]:
            raise ParamError("y", y_axis, "must differ from the --x axis")
        if seeds < 1:
            raise ParamError("seeds", seeds, "must be an integer >= 1")
        if not 0.0 < threshold < 0.5:
            raise ParamError("threshold", threshold, "must be in (0, 0.5)")
        if dask_workers is not None and dask_workers < 1:
            raise ParamError("dask_workers", dask_workers, "must be an integer >= 1")
        if level == "full":
            sampler = "data"
        spec = make_spec(params, x, y, seeds, level, sampler, threshold)
        with progress_bar(len(x[1]), f"dyn phase {x[0]} x {y[0]}", quiet) as advance:
            ds = run_phase(spec, out_dir, overwrite, scheduler, dask_workers, advance)
        nc = write_netcdf(ds, os.path.join(out_dir, "phase.nc"))
        png = plot_phase(ds, os.path.join(out_dir, "phase.png"))
    runs = ds.test_error.size
    click.echo(f"dyn phase: {x[0]} ({len(x[1])}) x {y[0]} ({len(y[1])}) x {seeds} seeds = "
               f"{runs} runs, level={level}, sampler={sampler}; {time.perf_counter() - t0:.1f} s")
    if "mu_star" in ds:
        other = ds.mu_star.dims[0]
        vals = ds[other].values
        pick = np.unique(np.linspace(0, len(vals) - 1, min(8, len(vals))).astype(int))
        click.echo(f"  mu* (test error = {threshold:g}) at " + "  ".join(
            f"{other}={vals[i]:.3g}: {float(ds.mu_star[i]):.3g}" for i in pick))
    click.echo(f"  not fitted (train error > 0) at {int((ds.fitted == 0).sum())} of "
               f"{ds.fitted.size} grid points")
    click.echo(f"  wrote {nc} and {png}")


@main.command()
@model_options()
@click.option("--level", type=click.Choice(LEVELS + ("full",)), default="exact", show_default=True)
@click.option("--sampler", type=click.Choice(SAMPLERS), default="wishart", show_default=True)
@click.option("--tol", type=float, default=0.1, show_default=True,
              help="stage 1 ends when max_i |l'_i + 1/2| exceeds this, in (0, 0.5)")
@click.option("--formulas/--no-formulas", default=True, show_default=True,
              help="print the derived formulas")
@click.option("--latex", is_flag=True, help="print formulas as LaTeX instead of ASCII art")
@click.option("--fit-laws", is_flag=True,
              help="measure boundaries with the solver and fit the laws of SPEC 8 per regime")
@click.option("--seeds", type=int, default=8, show_default=True, help="seeds per boundary (--fit-laws)")
@click.option("--figures", "fig_dir", type=click.Path(file_okay=False), default=None,
              help="write ratio and v-change figures for v0 in {1e-3, 1e-2, 1e-1, 1} here")
@click.option("--quiet", is_flag=True, help="no progress bar")
def theory(level, sampler, tol, formulas, latex, fit_laws, seeds, fig_dir, quiet, **kwargs):
    """Derived mechanisms (sympy) against the measured dynamics."""
    from . import theory as th

    params = build_params(kwargs)
    with cli_errors():
        if not 0.0 < tol < 0.5:
            raise ParamError("tol", tol, "must be in (0, 0.5)")
        if seeds < 1:
            raise ParamError("seeds", seeds, "must be an integer >= 1")
        if level == "full":
            sampler = "data"
        if formulas:
            click.echo("derived formulas (sympy; alpha = eta c/(2n), beta = eta_v c/(2n)):")
            for name, f in th.formulas().items():
                body = f["latex"] if latex else f["text"]
                sep = " " if latex or "\n" not in body else "\n"
                click.echo(f"- {name}:{sep}{body}")
            click.echo("")
        if level == "full":
            from fullsim import simulate_full
            traj = simulate_full(params)
        else:
            from .run import simulate as run_reduced
            traj = run_reduced(params, level, sampler, 1)
        click.echo(th.format_report(th.summarize(traj, tol)))
        if fit_laws:
            with progress_bar(th.regime_points(), "fitting laws", quiet) as advance:
                fits = th.fit_regimes(params, seeds, "exact" if level == "full" else level,
                                      sampler, progress=advance)
            click.echo("")
            click.echo("conditions: laws of SPEC 8 fitted to measured boundaries (tau = 0.25)")
            click.echo(th.format_fits(fits))
        if fig_dir:
            import os
            from compare.theory_plots import plot_ratio_agreement, plot_ratio_vs_step, plot_v_change
            from .run import simulate as run_reduced
            trajs = {v: run_reduced(params.replace(v0=v), "exact" if level == "full" else level,
                                    sampler, 1) for v in (1e-3, 1e-2, 1e-1, 1.0)}
            for fn, name in ((plot_ratio_vs_step, "noise_ratio_vs_step.png"),
                             (plot_ratio_agreement, "noise_ratio_agreement.png"),
                             (plot_v_change, "v_change_vs_step.png")):
                click.echo(f"wrote {fn(trajs, os.path.join(fig_dir, name))}")
