"""The ``dyn`` command line: a thin click layer over the library.

Every subcommand builds a validated ``Params`` and calls library functions;
bad input becomes a one-line click error naming the option (no traceback).
"""
from __future__ import annotations

import contextlib
import functools
import time

import click

from .params import LEVELS, SAMPLERS, Params, ParamError

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
}
FLAG_OF = {name: spec[0] for name, spec in MODEL_OPTIONS.items()}
FLAG_OF.update(record_every="--record-every", level="--level", sampler="--sampler")


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
                   f"v0={params.v0:g} c={params.c:g} T={params.steps} seed={params.seed}")
        echo_kv([("final loss", f"{traj.loss[-1]:.6g}"),
                 ("train error", f"{traj.train_error[-1]:.4f}"),
                 ("test error (clean)", f"{traj.test_error:.4f}"),
                 ("wall time", f"{traj.wall_time:.3f} s")])
        if out:
            write_netcdf(trajectory_dataset(traj), out)
            click.echo(f"  wrote {out}")
