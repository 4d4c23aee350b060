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
import math  # noqa: E402
import signal  # noqa: E402
import sys  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402

import click  # noqa: E402

try:
    import numba.core.event
except ValueError as _exc:  # NUMBA_NUM_THREADS <= 0: numba refuses at import (a traceback)
    if "NUMBA_NUM_THREADS" not in os.environ:
        raise
    sys.exit(f"Error: NUMBA_NUM_THREADS={os.environ['NUMBA_NUM_THREADS']!r} is invalid: "
             f"must be a positive integer, or unset for one thread per core ({_exc})")
import numpy as np
from click.core import ParameterSource

from dynamics.params import (ALL_LEVELS, AXES, D_GRID, FLAG_OF, LEVELS, N_GRID, PARAMS,
                             PRECISIONS, SAMPLERS, SPEC_OF, TAU, Params, ParamError)

# Flags of options that are not model parameters (for error messages).
OPTION_FLAGS = {**FLAG_OF, "record_every": "--record-every", "level": "--level",
                "sampler": "--sampler", "seeds": "--seeds", "threshold": "--threshold",
                "verify_seeds": "--verify-seeds", "tol": "--tol", "x": "--x", "y": "--y",
                "fit_laws": "--fit-laws",
                "dask_workers": "--dask-workers", "d_grid": "--d-grid", "n_grid": "--n-grid",
                "times": "--times", "out": "--out", "data": "--data",
                "integrator": "--integrator", "precision": "--precision"}


def click_type(spec):
    """click type of a parameter declaration (range checked by click)."""
    if spec.kind is int:
        return click.IntRange(spec.lo, spec.hi)
    if spec.kind is float:
        return click.FloatRange(spec.lo, spec.hi, min_open=spec.lo_open,
                                max_open=spec.hi_open and spec.hi is not None)
    return str


def model_options(skip=(), refuse=None):
    """Decorator adding one option per model parameter (from ``PARAMS``).

    skip: parameters the command declares itself; refuse: {name: reason} for
    parameters the command does not use; giving one is an error saying why.
    """
    refuse = refuse or {}

    def deco(func):
        for spec in reversed(PARAMS):
            if spec.name in skip:
                continue
            if spec.name in refuse:
                func = click.option(spec.flag, spec.name, hidden=True, default=None,
                                    callback=_refuse(refuse[spec.name]),
                                    expose_value=False)(func)
                continue
            rng = spec.range_text()
            if spec.kind is bool:
                func = click.option(f"{spec.flag}/--no-{spec.flag[2:]}", spec.name,
                                    default=spec.default, show_default=True,
                                    help=spec.help)(func)
                continue
            func = click.option(spec.flag, spec.name, type=click_type(spec),
                                default=spec.default, show_default=spec.default is not None,
                                help=spec.help + (f" {rng}" if rng else ""))(func)
        return func
    return deco


def _refuse(reason):
    def callback(ctx, param, value):
        if value is not None:
            raise click.UsageError(f"{param.opts[0]} is not used by dyn {ctx.info_name}: "
                                   f"{reason}", ctx)
    return callback


def build_params(kwargs, swept=(), level=None) -> Params:
    """Params from CLI keyword arguments (pops them); BadParameter on error,
    also for a given option that would have no effect or contradicts
    ``level`` (``swept``: parameter names a phase axis varies)."""
    values = {k: kwargs.pop(k) for k in list(kwargs) if k in SPEC_OF}
    with cli_errors():
        params = Params(**values)
    fixed = level == "fixed-output"
    if fixed and params.train_v and (click.get_current_context().get_parameter_source(
            "train_v") == ParameterSource.COMMANDLINE):
        raise click.BadParameter("--level fixed-output freezes the output layer at v0; "
                                 "drop --train-v", param_hint="--train-v")
    if params.sigma_u is not None and params.depth == 1 and "depth" not in swept:
        raise click.BadParameter(f"{params.sigma_u:g}: the upper layers U exist only at "
                                 f"--depth >= 2 (got --depth 1)", param_hint="--sigma-u")
    if params.eta_v is not None and (fixed or not params.train_v):
        why = "--level fixed-output freezes it at v0" if fixed else "--no-train-v"
        raise click.BadParameter(f"{params.eta_v:g}: the output layer is frozen ({why}); "
                                 f"drop one of them", param_hint="--eta-v")
    return params


def refuse_unused(ctx, name, flag, why):
    """UsageError when option ``name`` was given on the command line but has no effect."""
    if ctx.get_parameter_source(name) == ParameterSource.COMMANDLINE:
        raise click.UsageError(f"{flag} has no effect {why}", ctx)


def refuse_sampler_with_full(level, sampler):
    """--level full trains the network on data vectors: sampler data."""
    if level == "full" and sampler != "data":
        refuse_unused(click.get_current_context(), "sampler", f"--sampler {sampler}",
                      "with --level full (the weight-space network trains on data "
                      "vectors: sampler data)")


def refuse_record_every_with_flow(integrator):
    """dyn simulate / compare: the flow integrator records at fixed times."""
    if integrator == "flow":
        refuse_unused(click.get_current_context(), "record_every", "--record-every",
                      "with --integrator flow (it records at fixed times)")


@contextlib.contextmanager
def cli_errors():
    """Turn library errors into one-line click errors."""
    try:
        yield
    except ParamError as exc:
        flag = OPTION_FLAGS.get(exc.param, exc.param)
        raise click.BadParameter(f"{exc.value!r}: {exc.allowed}", param_hint=flag) from None
    except (FloatingPointError, MemoryError, ValueError, OSError) as exc:
        raise click.ClickException(str(exc).splitlines()[0] if str(exc) else
                                   type(exc).__name__) from None


def echo_kv(rows):
    width = max(len(k) for k, _ in rows)
    for key, val in rows:
        click.echo(f"  {key:<{width}}  {val}")


# signals received during this command (see _signal_exit); atomic_target reads it
from dynamics.files import STOP_SIGNALS as _SIGNALLED  # noqa: E402


def _terminate(signum, frame):
    """SIGINT and SIGTERM: remember the signal, then unwind like Ctrl-C (every
    cleanup runs: temp files).  Remembered, because a KeyboardInterrupt raised
    inside a destructor is only printed ("Exception ignored in ...") and the
    command would otherwise go on and exit 0 (issue 38, item 11)."""
    _SIGNALLED.append(signum)
    raise KeyboardInterrupt


@contextlib.contextmanager
def _signal_exit():
    """One command of dyn: SIGINT/SIGTERM go to ``_terminate`` (unless ignored
    when dyn started); on the way out the old handlers come back and a received
    signal makes the exit status 128 + signum (130 Ctrl-C, 143 SIGTERM) with one
    line on stderr, whatever happened after it.  Output files are written with
    the signals held (``dynamics.files.atomic_target``): a signal never lands
    inside an HDF5 call, where it could leave xarray's lock held (a hang)."""
    _SIGNALLED.clear()
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    for sig, handler in old.items():
        if handler is not signal.SIG_IGN:
            signal.signal(sig, _terminate)
    try:
        yield
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)
        if _SIGNALLED:
            sig = _SIGNALLED[0]
            _SIGNALLED.clear()  # this command is over (a process may run several: tests)
            click.echo(f"dyn: stopped by {signal.Signals(sig).name}", err=True)
            raise SystemExit(128 + sig)


@contextlib.contextmanager
def native_signals():
    """Ctrl-C and SIGTERM end the process at once inside this block.

    Python runs its signal handlers only between bytecodes, so inside one long
    Numba kernel (``dyn simulate --steps 1000000000``) Ctrl-C, SIGTERM and our
    ``_terminate`` would wait for the kernel to return.  Wrap computations
    only, never writes: files are written after the block (atomically), so
    dying here loses the computation, never a result.  (``dyn phase`` does not
    use this: its kernels return per batch of rows, and the finished rows are
    saved on the way out.)"""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    old = {sig: h for sig, h in old.items() if h is not signal.SIG_IGN}  # ignored stays so
    for sig in old:
        signal.signal(sig, signal.SIG_DFL)
    try:
        yield
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)


@contextlib.contextmanager
def progress_bar(length, label, quiet):
    """click progress bar with ETA on stderr; yields an ``advance(k)`` callable."""
    if quiet:
        yield None
        return
    with click.progressbar(length=length, label=label, show_eta=True, show_pos=True,
                           file=sys.stderr) as bar:
        yield bar.update


def _output_path(kind):
    """click callback: an output path validated before any computation
    (``compare.dataset.check_output_path``)."""
    def callback(ctx, param, value):
        if value is None:
            return None
        from .dataset import check_output_path  # xarray: only when there is an --out
        try:
            return check_output_path(value, kind)
        except ValueError as exc:
            raise click.BadParameter(str(exc), ctx, param) from None
    return callback


def out_option(kind, default, help_):
    """--out validated before any computation."""
    if kind == "file":
        help_ += ("; an existing file is replaced only if it is a dyn output (anything "
                  "else, or a device/FIFO, is refused)")
    return click.option("--out", "out", default=default, callback=_output_path(kind),
                        show_default=default is not None, help=help_)


def seeds_option(help_):
    return click.option("--seeds", type=click.IntRange(1, 10_000), default=8,
                        show_default=True, help=help_)


class FiniteFloatRange(click.FloatRange):
    """click.FloatRange that also refuses nan and +-inf (nan passes every
    comparison, so FloatRange alone lets it through)."""

    def convert(self, value, param, ctx):
        x = super().convert(value, param, ctx)
        if not math.isfinite(x):
            self.fail(f"{value!r} is not a finite real number.", param, ctx)
        return x


def threshold_option(help_):
    return click.option("--threshold", type=FiniteFloatRange(0.0, 0.5, min_open=True,
                                                             max_open=True),
                        default=TAU, show_default=True, help=help_)


class _CompileNotice(numba.core.event.Listener):
    """Says once per process, on a terminal's stderr, that Numba is compiling
    (a cache miss: the first use of the kernels on this machine or after an
    update; ~1-2 minutes, cached afterwards), so that a first run does not
    look hung.  Cache hits do not fire "numba:compile"."""

    said = False

    def on_start(self, event):
        if not _CompileNotice.said and sys.stderr.isatty():
            _CompileNotice.said = True
            click.echo("dyn: compiling the Numba kernels (first use of this version on this "
                       "machine: 1-2 minutes once, cached afterwards) ...", err=True)

    def on_end(self, event):
        pass


_COMPILE_NOTICE = _CompileNotice()
numba.core.event.register("numba:compile", _COMPILE_NOTICE)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="dyn")
def main():
    """dyn: reduced and full dynamics of benign overfitting in two-layer ReLU
    CNNs with a trainable output layer (arXiv 2410.19139)."""
    click.get_current_context().with_resource(_signal_exit())


def _times(ctx, param, value):
    """click callback: comma-separated GD steps and/or 'inf', ascending."""
    if value is None:
        return None
    from dynamics.run import check_checkpoints
    try:
        vals = [float(x) for x in str(value).split(",") if x.strip()]
        return check_checkpoints(vals, 1).tolist()
    except ParamError as exc:
        raise click.BadParameter(f"{value!r}: {exc.allowed}") from None
    except ValueError:
        raise click.BadParameter(f"{value!r}: expected comma-separated steps or inf, "
                                 "e.g. 200,2000,inf") from None


def data_option():
    return click.option("--data", "data", type=click.Path(dir_okay=False), default=None,
                        help="bring your own data: .npz with x (n, P, d), y; optional w0, "
                             "v0, x_test, y_test (--level general or full)")


def family_data(params: Params, level: str, data, integrator: str = "gd",
                levels=("general", "full")):
    """The PatchData of a run of the model family (docs/theory.md#general-reduction), or None for the
    paper's specialised path: a loaded --data file, the paper's family drawn
    for level full when params leave the paper's model, else None.  Refuses
    combinations that would silently ignore an option; ``levels``: the levels
    of the command that run the family."""
    from dynamics.general import check_file_params, load_npz, model_data
    if level == "general" or data is not None or (level == "full" and not params.paper_model):
        if level not in levels:
            what = "--data" if data is not None else "--noise-model/--signal"
            raise ParamError("level", level, f"{what} needs --level {' or '.join(levels)}")
        if integrator != "gd":
            raise ParamError("integrator", integrator, "the model family runs GD only")
        if data is None:
            return model_data(params, "data") if level == "full" else None
        patches = load_npz(data, params)
        check_file_params(params, patches)
        return patches
    return None


def file_sizes(params: Params, data) -> Params:
    """--data: n and d from the file unless given on the command line (a given
    value that differs is refused by check_file_params)."""
    if data is None:
        return params
    from dynamics.general import check_data_path, npz_shapes
    ctx = click.get_current_context()
    with cli_errors():
        xs = npz_shapes(check_data_path(data)).get("x", ((),))[0]
        if len(xs) != 3:
            return params  # load_npz names the problem
        given = {k for k in ("n", "d")
                 if ctx.get_parameter_source(k) == ParameterSource.COMMANDLINE}
        return params.replace(**{k: int(v) for k, v in (("n", xs[0]), ("d", xs[2]))
                                 if k not in given})


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
@click.option("--times", default=None, callback=_times,
              help="with --integrator flow: record times in GD steps, 'inf' = the limit "
                   "(reduced levels); default: --steps")
@data_option()
@out_option("file", None, "write the trajectory to this netCDF file")
def simulate(level, sampler, record_every, integrator, times, data, out, **kwargs):
    """Train one configuration and print a summary."""
    from dynamics.run import simulate as run_reduced, simulate_flow
    from fullsim import simulate_full
    from fullsim.network import simulate_full_flow

    from .dataset import trajectory_dataset, write_netcdf

    params = build_params(kwargs, level=level)
    refuse_record_every_with_flow(integrator)
    refuse_sampler_with_full(level, sampler)
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
        if patches is not None or level == "general":
            from dynamics.general import simulate_general
            from fullsim.patches import simulate_full_patches
            run = simulate_full_patches if level == "full" else simulate_general
            with native_signals():
                traj = run(params, patches, sampler if level == "general" else "data",
                           record_every)
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
        if integrator == "flow":
            times = [params.steps] if times is None else times
            if level == "full" and np.isinf(times[-1]):
                raise ParamError("times", times, "the limit (inf) needs a reduced level")
        with native_signals():
            if integrator == "flow":
                traj = (simulate_full_flow(params, times) if level == "full"
                        else simulate_flow(params, level, sampler, times))
            elif level == "full":
                traj = simulate_full(params, record_every=record_every)
            else:
                traj = run_reduced(params, level, sampler, record_every)
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
def _int_list(ctx, param, value):
    """click callback: comma-separated integers, or 'none' (no grid)."""
    if value is None:
        return None
    if str(value).strip().lower() == "none":
        return ()
    try:
        vals = tuple(int(x) for x in str(value).split(",") if x.strip())
    except ValueError:
        raise click.BadParameter(f"{value!r}: expected comma-separated integers") from None
    if not vals:
        raise click.BadParameter(f"{value!r}: expected comma-separated integers or 'none'")
    if len(vals) > 64:
        raise click.BadParameter(f"{len(vals)} values: at most 64")
    name = {"d_grid": "d", "n_grid": "n"}[param.name]
    for x in vals:
        try:
            SPEC_OF[name].check(x)
        except ParamError as exc:
            raise click.BadParameter(f"value {x}: {exc.allowed}") from None
    return vals


@contextlib.contextmanager
def _solve_lock(out):
    """dyn solve's single-writer lock on its --out folder (``OUT/solve.nc.lock``,
    ``compare.store.PathLock``) for the whole command: a second dyn solve into
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
              callback=_int_list, help="d values for the scaling fit ('none' to skip)")
@click.option("--n-grid", default=",".join(map(str, N_GRID)), show_default=True,
              callback=_int_list, help="n values for the scaling fit ('none' to skip)")
@click.option("--times", default=None, callback=_times,
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
def solve(v0s, seeds, threshold, level, sampler, d_grid, n_grid, times, integrator, verify,
          verify_seeds, out, quiet, **kwargs):
    """Phase boundary ||mu||* for each v0, its d and n scaling, and a check
    of the reduction against the full network."""
    from dynamics.files import remove_stale_temporaries
    from .solve import format_summary, remove_stale_figures, solve as run_solve, to_dataset, \
        work_units, write_outputs

    params = build_params(kwargs, level=level)
    refuse_sampler_with_full(level, sampler)
    if not verify:
        refuse_unused(click.get_current_context(), "verify_seeds", "--verify-seeds",
                      "with --no-verify")
    t0 = time.perf_counter()
    if integrator == "flow" and times is None:
        times = [params.steps]
    with cli_errors(), _solve_lock(out):
        remove_stale_temporaries(out)  # under the lock: no other dyn solve writes here
        units = work_units(len(v0s), d_grid, n_grid, verify, verify_seeds)
        with progress_bar(units, "dyn solve", quiet) as advance, native_signals():
            results = run_solve(params, v0s, level, sampler, seeds, threshold, d_grid,
                                n_grid, verify, verify_seeds, progress=advance, times=times,
                                integrator=integrator)
        ds = to_dataset(results, params, level, sampler, seeds, threshold, d_grid, n_grid,
                        integrator, times)
        paths = write_outputs(results, ds, out, d_grid, n_grid)
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
@click.option("--plots", "plot_dir", callback=_output_path("dir"), default=None,
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


@main.command()
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
@click.option("--times", default=None, callback=_times,
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
@click.pass_context
def phase(ctx, x_axis, y_axis, seeds, threshold, level, sampler, times, precision, out,
          overwrite, scheduler, dask_workers, quiet, **kwargs):
    """Test-error heatmap over two parameter axes (resumable sweep)."""
    from .dataset import write_netcdf
    from .phase import make_spec, run_phase
    from .plots import plot_phase, plot_phase_times

    for axis, flag in ((x_axis, "--x"), (y_axis, "--y")):
        name = AXES[axis[0]].name
        if ctx.get_parameter_source(name) == ParameterSource.COMMANDLINE:
            raise click.UsageError(f"{AXES[axis[0]].flag} is swept by {flag} "
                                   f"{axis[0]}=...; give it only once", ctx)
    if x_axis[0] == y_axis[0]:
        raise click.BadParameter(f"{y_axis[0]}: must differ from the --x axis",
                                 param_hint="--y")
    params = build_params(kwargs, swept=(AXES[x_axis[0]].name, AXES[y_axis[0]].name),
                          level=level)
    refuse_sampler_with_full(level, sampler)
    if times is not None:
        refuse_unused(ctx, "steps", "--steps", "with --times (the sweep runs to the "
                      "--times; --steps is only their default)")
    if scheduler and dask_workers:
        raise click.UsageError("--dask-workers has no effect with --scheduler (the "
                               "workers are those of the scheduler's cluster); give one "
                               "of them", ctx)
    t0 = time.perf_counter()
    with cli_errors():
        if level == "full":
            sampler = "data"
        spec = make_spec(params, x_axis, y_axis, seeds, level, sampler, threshold, times,
                         precision)
        runs = len(x_axis[1]) * len(y_axis[1]) * seeds
        if not quiet and runs >= PLAN_RUNS:  # say what a long sweep will do before it starts
            click.echo(f"dyn phase: {len(x_axis[1])} x {len(y_axis[1])} x {seeds} seeds = "
                       f"{runs} runs to T = {', '.join(f'{t:g}' for t in spec['times'])}; "
                       f"rows are saved to {os.path.join(out, 'phase.zarr')} as they "
                       f"finish (re-run the same command to resume)", err=True)
        written = {}

        def finish(ds):  # under the store's lock: no second writer between
            written["nc"] = write_netcdf(ds, os.path.join(out, "phase.nc"))
            png = plot_phase(ds, os.path.join(out, "phase.png"))
            made = set()
            if ds.sizes["steps"] > 1:
                for k, t in enumerate(ds.steps.values):
                    made.add(plot_phase(ds, os.path.join(out, f"phase_T={t:g}.png"), k))
                if "mu_star" in ds and np.isfinite(ds.mu_star.values).any():
                    made.add(plot_phase_times(ds, os.path.join(out, "phase_boundaries.png")))
                    png += ", " + os.path.join(out, "phase_boundaries.png")
            import glob  # an earlier sweep's figures (other times) would look like ours
            for old in glob.glob(os.path.join(glob.escape(out), "phase_T=*.png")) + \
                    glob.glob(os.path.join(glob.escape(out), "phase_boundaries.png")):
                if os.path.realpath(old) not in {os.path.realpath(p) for p in made} \
                        and os.path.isfile(old) and not os.path.islink(old):
                    os.unlink(old)
            written["png"] = png

        with progress_bar(len(x_axis[1]), f"dyn phase {x_axis[0]} x {y_axis[0]}",
                          quiet) as advance:
            ds = run_phase(spec, out, overwrite, scheduler, dask_workers, advance, finish)
        nc, png = written["nc"], written["png"]
    click.echo(f"dyn phase: {x_axis[0]} ({len(x_axis[1])}) x {y_axis[0]} ({len(y_axis[1])}) x "
               f"{seeds} seeds = {ds.test_error.size} runs, level={level}, sampler={sampler}"
               f"{', precision=float32' if precision == 'float32' else ''}; "
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
@main.command()
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
@click.option("--figures", "fig_dir", callback=_output_path("dir"), default=None,
              help="write ratio and v-change figures for v0 in {1e-3, 1e-2, 1e-1, 1} here")
@click.option("--quiet", is_flag=True, help="no progress bar")
@click.option("--limit", "limit_law", is_flag=True,
              help="the idealised max-margin program at t = inf (sympy) against the "
                   "measured limit boundary mu*(inf) (level exact, --seeds seeds)")
def theory(level, sampler, tol, formulas, latex, fit_laws, seeds, fig_dir, quiet, limit_law,
           **kwargs):
    """Derived mechanisms (sympy) against the measured dynamics."""
    from dynamics.run import simulate as run_reduced
    from dynamics.theory import measure, symbolic
    from fullsim import simulate_full

    from . import laws

    params = build_params(kwargs, level=level)
    refuse_sampler_with_full(level, sampler)
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
        if level == "full":
            sampler = "data"
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
                body = f["latex"] if latex else f["text"]
                sep = " " if latex or "\n" not in body else "\n"
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
            traj = (simulate_full(params) if level == "full"
                    else run_reduced(params, level, sampler, 1))
        if params.depth > 1:
            click.echo(laws.format_layers(measure.layer_summary(traj)))
            return
        click.echo(laws.format_report(measure.summarize(traj, tol)))
        if fit_laws:
            with progress_bar(laws.regime_points(params), "fitting laws",
                              quiet) as advance, native_signals():
                fits = laws.fit_regimes(params, seeds, reduced_level, sampler, progress=advance)
            click.echo("")
            click.echo(f"conditions: laws of docs/theory.md#mechanisms-and-laws fitted to measured boundaries (tau = {TAU:g})")
            click.echo(laws.format_fits(fits))
        if limit_law:
            click.echo("")
            click.echo(laws.format_limit_law(params, seeds, sampler))
        if fig_dir:
            from .theory_plots import plot_ratio_agreement, plot_ratio_vs_step, plot_v_change
            with native_signals():
                trajs = {v: run_reduced(params.replace(v0=v), reduced_level, sampler, 1)
                         for v in (1e-3, 1e-2, 1e-1, 1.0)}
            for fn, name in ((plot_ratio_vs_step, "noise_ratio_vs_step.png"),
                             (plot_ratio_agreement, "noise_ratio_agreement.png"),
                             (plot_v_change, "v_change_vs_step.png")):
                click.echo(f"wrote {fn(trajs, os.path.join(fig_dir, name))}")


# dyn is loaded: commands install their own handlers (main: _signal_exit)
for _sig, _handler in _LOADING.items():
    _signal.signal(_sig, _handler if _handler is not None else _signal.SIG_DFL)

if __name__ == "__main__":
    main()
