"""The ``dyn`` command line: a thin click layer on top of everything.

Options of the model parameters are generated from ``dynamics.params.PARAMS``
(click ``IntRange``/``FloatRange`` give the standard one-line error naming the
option); every subcommand builds a validated ``Params`` and calls library
functions; library errors become one-line click errors (no traceback).
Nothing imports this module.
"""
from __future__ import annotations

import _signal  # the C module, loaded with the interpreter (``signal`` takes ~1 ms more)
import os


def _stop_while_loading(signum, frame):
    """SIGINT/SIGTERM while dyn loads its modules (numba, numpy, click: ~0.5 s,
    before any command runs or writes): one line and exit 128 + signum.  A
    KeyboardInterrupt here would print a traceback from inside an import."""
    name = {_signal.SIGINT: "SIGINT", _signal.SIGTERM: "SIGTERM"}.get(signum, str(signum))
    os.write(2, f"dyn: stopped by {name}\n".encode())
    os._exit(128 + signum)


# Installed first thing, for the imports below only (restored at the end of this
# module, so a process that imports the CLI, such as a test run, keeps its own
# handlers).  Before this line (the interpreter starting, site-packages, the
# first ~50 ms) a Ctrl-C is Python's own: docs/guide/reliability.md.
_LOADING = {}
for _sig in (_signal.SIGINT, _signal.SIGTERM):
    try:
        if _signal.getsignal(_sig) != _signal.SIG_IGN:  # an ignored signal stays so
            _LOADING[_sig] = _signal.signal(_sig, _stop_while_loading)
    except ValueError:  # imported outside the main thread: no handlers to set
        break

import contextlib  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

try:  # numba first: everything below imports it (dynamics/__init__.py)
    import numba  # noqa: F401
except ValueError as _exc:  # NUMBA_NUM_THREADS <= 0: numba refuses at import (a traceback)
    if "NUMBA_NUM_THREADS" not in os.environ:
        raise
    sys.exit(f"Error: NUMBA_NUM_THREADS={os.environ['NUMBA_NUM_THREADS']!r} is invalid: "
             f"must be a positive integer, or unset for one thread per core ({_exc})")

import click  # noqa: E402
import numpy as np  # noqa: E402

from dynamics.params import (ALL_LEVELS, D_GRID, LEVELS, N_GRID, SAMPLERS,  # noqa: E402
                             SPEC_OF)

from .cli_common import (FiniteFloatRange, parse_int_list, output_path, signal_exit,  # noqa: E402
                         parse_times, build_params, cli_errors, click_type, data_option, echo_kv,
                         family_data, file_sizes, model_options, native_signals, out_option,
                         pack, progress_bar, refuse_record_every_with_flow,
                         refuse_sampler_of_level, refuse_unused, seeds_option,
                         threshold_option)
from .cli_sweeps import phase, theory  # noqa: E402

__all__ = ["main", "native_signals"]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="dyn")
def main():
    """dyn: reduced and full dynamics of benign overfitting in two-layer ReLU
    CNNs with a trainable output layer (arXiv 2410.19139)."""
    click.get_current_context().with_resource(signal_exit())


# ---------------------------------------------------------------- simulate
@main.command()
@model_options()
@click.option("--level", type=click.Choice(ALL_LEVELS), default="exact",
              show_default=True, help="model level ('full' = weight-space network)")
@click.option("--sampler", type=click.Choice(SAMPLERS), default="wishart",
              show_default=True, help="statistics sampler (level full: data only)")
@click.option("--record-every", type=click.IntRange(1), default=1, show_default=True,
              help="record the state every k steps (and at T)")
@click.option("--integrator", type=click.Choice(("gd", "flow")), default="gd",
              show_default=True, help="GD, or the normalised gradient-flow scheme "
                                      "recorded at --times")
@click.option("--times", default=None, callback=parse_times,
              help="with --integrator flow: record times in GD steps, 'inf' = the limit "
                   "(reduced levels); default: --steps")
@data_option()
@out_option("file", None, "write the trajectory to this netCDF file")
def simulate(level, sampler, record_every, integrator, times, data, out, **kwargs):
    """Train one configuration and print a summary."""
    from .dataset import trajectory_dataset, write_netcdf
    from .runs import run_one

    params = build_params(kwargs, level=level)
    refuse_record_every_with_flow(integrator)
    refuse_sampler_of_level(level, sampler)
    ctx = click.get_current_context()
    if data is not None:
        refuse_unused(ctx, "sampler", "--sampler", "with --data (the run uses the file's "
                      "vectors)")
    if times is not None and integrator != "flow":
        raise click.UsageError("--times needs --integrator flow (GD records with "
                               "--record-every)")
    if times is not None:
        refuse_unused(ctx, "steps", "--steps", "with --times (the flow runs to the last "
                      "of --times; --steps is only their default)")
    with cli_errors():
        params = file_sizes(params, data)
        patches = family_data(params, level, data, integrator)
        if integrator == "flow":
            times = [params.steps] if times is None else times
        with native_signals():
            traj = run_one(params, level, sampler, record_every=record_every,
                           integrator=integrator, times=times, patches=patches)
        if traj.layout == "patches":
            click.echo(f"dyn simulate: level={traj.level} data={traj.source} "
                       f"sampler={traj.sampler} {params.caption(swept=traj.unused)}")
            rows = [("final loss", f"{traj.loss[-1]:.6g}"),
                    ("train error", f"{traj.train_error[-1]:.4f}"),
                    ("test error (clean)", f"{traj.test_error:.4f}"
                     if np.isfinite(traj.test_error) else "n/a (no test points in the data)")]
            if "rank" in traj.extra:
                rows.append(("patch basis rank K", str(traj.extra["rank"])))
            echo_kv(rows + [("wall time", f"{traj.wall_time:.3f} s")])
            if out:
                write_netcdf(trajectory_dataset(traj), out)
                click.echo(f"  wrote {out}")
            return
        flow = (", flow to t = " + ",".join(f"{t:g}" for t in times)
                if integrator == "flow" else "")  # then --steps is not the horizon
        click.echo(f"dyn simulate: level={traj.level} sampler={traj.sampler} "
                   f"{params.caption(swept=('steps',) if flow else ())}{flow}")
        rows = [("final loss", f"{traj.loss[-1]:.6g}"),
                ("train error", f"{traj.train_error[-1]:.4f}"),
                ("test error (clean)", f"{traj.test_error:.4f}")]
        if params.flip > 0:
            rows.append(("test error (noisy labels)", f"{traj.test_error_noisy:.4f}"))
        if "out_of_span" in traj.extra:
            rows.append(("max out-of-span ||W-W0||", f"{traj.extra['out_of_span'].max():.3e}"))
        if "flow" in traj.extra:
            rows.append(("flow", ", ".join(f"{k}={v:g}" for k, v in traj.extra["flow"].items())))
        if "limit" in traj.extra:  # t = inf: the certified program (dynamics.limit)
            lim = traj.extra["limit"]
            rows[2] = ("test error at the limit", f"{traj.test_error:.4f} (ties f = 0 count 1/2; "
                       f"tie fraction {lim['ties']:.3f})")
            rows.append(("limit", ("certified stationary" if lim["certified"] == 1.0 else
                                   f"NOT certified ({lim['reason']})")
                         + f"; pattern from t = {lim['t_pattern']:g}, {lim['flips']:g} repair "
                           f"moves, OPT {lim['opt_pattern']:.6g} -> {lim['opt']:.6g}"))
            rows.append(("limit vs flow", f"margin ratio {lim['margin_ratio']:.4f}, output "
                         f"cosine {lim['cosine']:.4f}; kappa +1/-1 = {lim['kappa_pos']:.3f}/"
                         f"{lim['kappa_neg']:.3f}"))
        echo_kv(rows + [("wall time", f"{traj.wall_time:.3f} s")])
        if out:
            write_netcdf(trajectory_dataset(traj), out)
            click.echo(f"  wrote {out}")


# ---------------------------------------------------------------- solve
@contextlib.contextmanager
def _solve_lock(out):
    """dyn solve's single-writer lock on its --out folder (``OUT/solve.nc.lock``,
    ``compare.locks.PathLock``) for the whole command: a second dyn solve into
    the same folder is refused at once instead of mixing its solve.nc and
    figures with ours.  A folder made here that holds nothing else at the end
    (the run failed before writing) is removed again."""
    from .store import PathLock
    made = not os.path.isdir(out)
    os.makedirs(out, exist_ok=True)
    lock_path = os.path.join(out, "solve.nc.lock")
    try:
        with PathLock(lock_path, f"--out {out}"):
            yield
    finally:
        if made and os.listdir(out) == [os.path.basename(lock_path)]:
            with contextlib.suppress(OSError):
                os.remove(lock_path)
                os.rmdir(out)


@main.command()
@model_options(skip=("v0",), refuse={
    "mu_norm": "it searches over ||mu|| (the boundary ||mu||* is its output); "
               "use dyn simulate for one ||mu||"})
@click.option("--v0", "v0s", type=click_type(SPEC_OF["v0"]), multiple=True,
              default=(SPEC_OF["v0"].default,), show_default=True,
              help="initial output weight(s); repeat for several")
@seeds_option("seeds per grid point")
@threshold_option("test-error threshold tau defining ||mu||*, in (0, 0.5)")
@click.option("--level", type=click.Choice(ALL_LEVELS), default="exact", show_default=True,
              help="model level of the solver ('full' trains the real network: slow, exact "
                   "for every optimizer)")
@click.option("--sampler", type=click.Choice(SAMPLERS), default="wishart", show_default=True,
              help="statistics sampler (non-gaussian noise and level full need 'data')")
@click.option("--d-grid", default=",".join(map(str, D_GRID)), show_default=True,
              callback=parse_int_list, help="d values for the scaling fit ('none' to skip)")
@click.option("--n-grid", default=",".join(map(str, N_GRID)), show_default=True,
              callback=parse_int_list, help="n values for the scaling fit ('none' to skip)")
@click.option("--times", default=None, callback=parse_times,
              help="training times for a mu*-per-time table, comma-separated GD steps, "
                   "'inf' = the limit t -> infinity (e.g. 200,2000,20000,inf); "
                   "default: only --steps")
@click.option("--integrator", type=click.Choice(("gd", "flow")), default="gd",
              show_default=True,
              help="--times as GD steps (inf continues with the normalised flow) or all "
                   "as normalised gradient flow (time eta*T)")
@click.option("--verify/--no-verify", default=True, show_default=True,
              help="check against the full network at mu*/2, mu*, 2mu*")
@click.option("--verify-seeds", type=click.IntRange(1, 100), default=3, show_default=True,
              help="seeds for the full-network check")
@out_option("dir", "dyn-out", "output folder (solve.nc and PNG figures)")
@click.option("--quiet", is_flag=True, help="no progress bar")
@pack("run", "level", "sampler", "times", "integrator")
@pack("grids", "d_grid", "n_grid")
@pack("check", "verify", "verify_seeds")
def solve(v0s, seeds, threshold, run, grids, check, out, quiet, **kwargs):
    """Phase boundary ||mu||* for each v0, its d and n scaling, and a check
    of the reduction against the full network."""
    from dynamics.files import remove_stale_temporaries
    from dynamics.spec import RunSpec
    from .solve import format_summary, remove_stale_figures, solve as run_solve, to_dataset, \
        work_units, write_outputs

    params = build_params(kwargs, level=run.level)
    refuse_sampler_of_level(run.level, run.sampler)
    if not check.verify:
        refuse_unused(click.get_current_context(), "verify_seeds", "--verify-seeds",
                      "with --no-verify")
    t0 = time.perf_counter()
    times = run.times
    if run.integrator == "flow" and times is None:
        times = [params.steps]
    with cli_errors(), _solve_lock(out):
        spec = RunSpec(params, run.level, run.sampler, seeds, times, run.integrator)
        remove_stale_temporaries(out)  # under the lock: no other dyn solve writes here
        units = work_units(len(v0s), grids.d_grid, grids.n_grid, check.verify,
                           check.verify_seeds)
        with progress_bar(units, "dyn solve", quiet) as advance, native_signals():
            results = run_solve(spec, v0s, tau=threshold, d_grid=grids.d_grid,
                                n_grid=grids.n_grid, verify=check.verify,
                                verify_seeds=check.verify_seeds, progress=advance)
        ds = to_dataset(results, spec, threshold, grids.d_grid, grids.n_grid)
        paths = write_outputs(results, ds, out, grids.d_grid, grids.n_grid)
        stale = remove_stale_figures(out, paths)
    click.echo(format_summary(results, threshold))
    if stale:
        click.echo(f"removed {len(stale)} figures of an earlier run in {out}/: "
                   + ", ".join(os.path.basename(p) for p in stale))
    click.echo(f"wrote {len(paths)} files to {out}/ (solve.nc + figures); "
               f"total {time.perf_counter() - t0:.1f} s")


# ---------------------------------------------------------------- compare
@main.command()
@model_options()
@click.option("--level", type=click.Choice(LEVELS), default="exact", show_default=True,
              help="reduced level to check against the full network ('general': any "
                   "activation / data, docs/theory.md#general-reduction)")
@click.option("--record-every", type=click.IntRange(1), default=1, show_default=True)
@click.option("--integrator", type=click.Choice(("gd", "flow")), default="gd",
              show_default=True, help="GD, or both models under the normalised gradient "
                                      "flow up to --steps (24 log-spaced records)")
@click.option("--tol", type=FiniteFloatRange(0.0, 1.0, min_open=True), default=1e-6,
              show_default=True, help="relative-error tolerance for 'first step above'")
@data_option()
@out_option("file", None, "netCDF file with both trajectories (dim model) and the metrics")
@click.option("--plots", "plot_dir", callback=output_path("dir"), default=None,
              help="folder for the overlay and relative-error PNGs")
def compare(level, record_every, integrator, tol, data, out, plot_dir, **kwargs):
    """Run a reduced level and the full network on the same data; print metrics."""
    from .metrics import discrepancy_fields, format_metrics
    from .verify import run_pair

    params = build_params(kwargs, level=level)
    refuse_record_every_with_flow(integrator)
    with cli_errors():
        params = file_sizes(params, data)
        patches = family_data(params, level, data, integrator, levels=("general",))
        with native_signals():
            reduced, full = run_pair(params, level, record_every, integrator, patches)
        met = discrepancy_fields(reduced, full, tol)
        source = f"data {patches.source}" if patches is not None else "sampler data"
        click.echo(f"dyn compare: {level} vs full network (integrator {integrator}), {source}, "
                   f"{params.caption(swept=getattr(reduced, 'unused', ()))} "
                   f"(reduced {reduced.wall_time:.3f} s, full {full.wall_time:.3f} s)")
        click.echo(format_metrics(met))
        if out:
            import xarray as xr

            from .dataset import combine, write_netcdf
            ds = combine(reduced, full).merge(xr.Dataset(**met).rename(step="metric_step")
                                              .rename_vars(rel_err="rel_err_per_step"))
            ds.attrs["tol"] = tol  # the tolerance of 'first step above'
            write_netcdf(ds, out)
            click.echo(f"wrote {out}")
        if plot_dir:
            from .plots import plot_overlay, plot_rel_error
            for path in (plot_overlay(reduced, full, os.path.join(plot_dir, f"overlay_{level}.png")),
                         plot_rel_error(reduced, full, os.path.join(plot_dir, f"relerr_{level}.png"))):
                click.echo(f"wrote {path}")


main.add_command(phase)
main.add_command(theory)


# dyn is loaded: commands install their own handlers (main: signal_exit)
for _sig, _handler in _LOADING.items():
    _signal.signal(_sig, _handler if _handler is not None else _signal.SIG_DFL)

if __name__ == "__main__":
    main()
