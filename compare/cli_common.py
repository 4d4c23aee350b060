"""Shared pieces of the ``dyn`` command line (``compare/cli.py`` and
``compare/cli_sweeps.py``): options generated from ``dynamics.params.PARAMS``,
library errors as one-line click errors, signal handling, progress bars, the
Numba compile notice, and the option callbacks several commands use.
Only the CLI modules import this one.
"""
from __future__ import annotations

import contextlib
import functools
import math
import signal
import sys
import threading
import types

import click

import numba.core.event
from click.core import ParameterSource

from dynamics.files import STOP_SIGNALS as _SIGNALLED  # signals received during this
# command (see signal_exit); atomic_target reads it
from dynamics.levels import DATA_FILE_LEVELS, LEVEL, sampler_for
from dynamics.params import FLAG_OF, PARAMS, SPEC_OF, TAU, Params, ParamError


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


def pack(name, *fields):
    """Decorator (put it directly above the command's ``def``): the click
    parameters ``fields`` reach the command as one namespace argument
    ``name`` (``name.field``), so that options that belong together travel
    together (the run's level, sampler and times; an output and its flags)."""
    def deco(func):
        @functools.wraps(func)
        def command(*args, **kwargs):
            kwargs[name] = types.SimpleNamespace(**{f: kwargs.pop(f) for f in fields})
            return func(*args, **kwargs)
        return command
    return deco


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
    fixed = level is not None and not LEVEL[level].trains_v
    if fixed and params.train_v and (click.get_current_context().get_parameter_source(
            "train_v") == ParameterSource.COMMANDLINE):
        raise click.BadParameter(f"--level {level} freezes the output layer at v0; "
                                 "drop --train-v", param_hint="--train-v")
    if params.sigma_u is not None and params.depth == 1 and "depth" not in swept:
        raise click.BadParameter(f"{params.sigma_u:g}: the upper layers U exist only at "
                                 f"--depth >= 2 (got --depth 1)", param_hint="--sigma-u")
    if params.eta_v is not None and (fixed or not params.train_v):
        why = f"--level {level} freezes it at v0" if fixed else "--no-train-v"
        raise click.BadParameter(f"{params.eta_v:g}: the output layer is frozen ({why}); "
                                 f"drop one of them", param_hint="--eta-v")
    return params


def refuse_unused(ctx, name, flag, why):
    """UsageError when option ``name`` was given on the command line but has no effect."""
    if ctx.get_parameter_source(name) == ParameterSource.COMMANDLINE:
        raise click.UsageError(f"{flag} has no effect {why}", ctx)


def refuse_sampler_of_level(level, sampler):
    """A level with its own sampler (``levels.LEVEL[level].samplers``: level
    full trains the network on data vectors, sampler data) refuses another
    --sampler given on the command line."""
    if sampler_for(level, sampler) != sampler:
        refuse_unused(click.get_current_context(), "sampler", f"--sampler {sampler}",
                      f"with --level {level} ({LEVEL[level].describes} runs with "
                      f"sampler {sampler_for(level, sampler)})")


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


def _terminate(signum, frame):
    """SIGINT and SIGTERM: remember the signal, then unwind like Ctrl-C (every
    cleanup runs: temp files).  Remembered, because a KeyboardInterrupt raised
    inside a destructor is only printed ("Exception ignored in ...") and the
    command would otherwise go on and exit 0."""
    _SIGNALLED.append(signum)
    raise KeyboardInterrupt


@contextlib.contextmanager
def signal_exit():
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


def output_path(kind):
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
    return click.option("--out", "out", default=default, callback=output_path(kind),
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


def parse_times(ctx, param, value):
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
                levels=DATA_FILE_LEVELS):
    """The PatchData of a run of the model family (docs/theory.md#general-reduction), or None for the
    paper's specialised path: a loaded --data file, the paper's family drawn
    for level full when params leave the paper's model, else None.  Refuses
    combinations that would silently ignore an option; ``levels``: the levels
    of the command that run the family."""
    from dynamics.datafile import check_file_params, load_npz
    from dynamics.general import model_data
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
    from dynamics.datafile import check_data_path, npz_shapes
    ctx = click.get_current_context()
    with cli_errors():
        xs = npz_shapes(check_data_path(data)).get("x", ((),))[0]
        if len(xs) != 3:
            return params  # load_npz names the problem
        given = {k for k in ("n", "d")
                 if ctx.get_parameter_source(k) == ParameterSource.COMMANDLINE}
        return params.replace(**{k: int(v) for k, v in (("n", xs[0]), ("d", xs[2]))
                                 if k not in given})


def parse_int_list(ctx, param, value):
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
