"""Model parameters (SPEC sections 1-2): one frozen, validated dataclass.

A parameter set flows one way: CLI options -> ``Params`` (validated once here)
-> sampler -> kernel -> Dataset.  ``to_attrs``/``from_attrs`` give a lossless
round trip through netCDF attributes (flat scalars plus one JSON string).
"""
from __future__ import annotations

import dataclasses
import json
import math
import numbers
from dataclasses import dataclass, fields
from typing import Optional

LEVELS = ("exact", "orthogonal", "fixed-output")
SAMPLERS = ("data", "wishart")


class ParamError(ValueError):
    """Invalid user-facing parameter; ``param`` names it (for CLI mapping)."""

    def __init__(self, param: str, value, allowed: str):
        self.param = param
        self.value = value
        self.allowed = allowed
        super().__init__(f"{param}={value!r} is invalid: {allowed}")


def _check_int(name, value, lo, hi=None):
    integral = isinstance(value, numbers.Integral) or (
        isinstance(value, float) and value.is_integer()
    )
    if isinstance(value, bool) or not integral:
        raise ParamError(name, value, f"must be an integer >= {lo}")
    value = int(value)
    if value < lo or (hi is not None and value > hi):
        rng = f">= {lo}" if hi is None else f"in [{lo}, {hi}]"
        raise ParamError(name, value, f"must be an integer {rng}")
    return value


def _check_float(name, value, lo=None, hi=None, lo_open=True, hi_open=True):
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise ParamError(name, value, "must be a real number") from None
    if isinstance(value, bool) or not math.isfinite(x):
        raise ParamError(name, value, "must be a finite real number")
    lo_bad = lo is not None and (x <= lo if lo_open else x < lo)
    hi_bad = hi is not None and (x >= hi if hi_open else x > hi)
    if lo_bad or hi_bad:
        left = "(" if lo_open else "["
        right = ")" if hi_open else "]"
        lo_s = "-inf" if lo is None else f"{lo:g}"
        hi_s = "inf" if hi is None else f"{hi:g}"
        raise ParamError(name, value, f"must be in {left}{lo_s}, {hi_s}{right}")
    return x


@dataclass(frozen=True)
class Params:
    """All model and training parameters.

    n: training samples; d: input dimension; m: filters per class;
    sigma_0: std of the initial filters; sigma_p: noise std; mu_norm: ||mu||;
    v0: initial output weight (all entries); eta: step of W; eta_v: step of V
    (None means eta); steps: GD steps T; c: output scale (F_j = c sum ...);
    flip: label-flip probability; seed: master seed; n_test: test points;
    noise: noise law (``parse_noise``); optimizer: update rule
    (``parse_optimizer``).
    """

    n: int = 20
    d: int = 1000
    m: int = 20
    sigma_0: float = 0.01
    sigma_p: float = 1.0
    mu_norm: float = 5.0
    v0: float = 0.001
    eta: float = 0.01
    eta_v: Optional[float] = None
    steps: int = 200
    c: float = 1.0
    flip: float = 0.0
    seed: int = 0
    n_test: int = 1000
    noise: str = "gaussian"
    optimizer: str = "gd"

    def __post_init__(self):
        set_ = lambda k, v: object.__setattr__(self, k, v)  # noqa: E731 (frozen)
        set_("n", _check_int("n", self.n, 2, 100_000))
        set_("d", _check_int("d", self.d, 2, 10**12))
        set_("m", _check_int("m", self.m, 1, 100_000))
        set_("sigma_0", _check_float("sigma_0", self.sigma_0, 0.0))
        set_("sigma_p", _check_float("sigma_p", self.sigma_p, 0.0))
        set_("mu_norm", _check_float("mu_norm", self.mu_norm, 0.0))
        set_("v0", _check_float("v0", self.v0, 0.0))
        set_("eta", _check_float("eta", self.eta, 0.0))
        if self.eta_v is not None:
            set_("eta_v", _check_float("eta_v", self.eta_v, 0.0))
        set_("steps", _check_int("steps", self.steps, 1, 10**8))
        set_("c", _check_float("c", self.c, 0.0))
        set_("flip", _check_float("flip", self.flip, 0.0, 0.5, lo_open=False))
        set_("seed", _check_int("seed", self.seed, 0, 2**63 - 1))
        set_("n_test", _check_int("n_test", self.n_test, 1, 10**8))
        set_("noise", format_spec(parse_noise(self.noise)))
        set_("optimizer", format_spec(parse_optimizer(self.optimizer)))

    @property
    def noise_spec(self) -> tuple:
        """(kind, args) of the noise law."""
        return parse_noise(self.noise)

    @property
    def optimizer_spec(self) -> tuple:
        """(kind, args) of the optimizer."""
        return parse_optimizer(self.optimizer)

    @property
    def eta_v_eff(self) -> float:
        """Step size of the output layer (eta_v, or eta when unset)."""
        return self.eta if self.eta_v is None else self.eta_v

    def replace(self, **changes) -> "Params":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    def to_attrs(self) -> dict:
        """Flat netCDF-safe attributes (no None/bool) plus ``params_json``."""
        attrs = {}
        for f in fields(self):
            val = getattr(self, f.name)
            if f.name == "eta_v":
                val = self.eta_v_eff
            attrs[f.name] = val
        attrs["params_json"] = self.to_json()
        return attrs

    @classmethod
    def from_attrs(cls, attrs) -> "Params":
        """Inverse of ``to_attrs`` (reads the JSON string, lossless)."""
        if "params_json" not in attrs:
            raise ValueError("attributes hold no 'params_json': not a dyn output")
        return cls(**json.loads(attrs["params_json"]))


NOISE_HELP = ("gaussian | ar1:KAPPA (|KAPPA| < 1) | spiked:K,BETA (K >= 1, BETA > 0) | "
              "rademacher | student-t:NU (NU > 2)")
OPTIMIZER_HELP = "gd | momentum:BETA (0 <= BETA < 1) | adam[:B1,B2,EPS] | sign"


def _spec_args(name, text, kind, raw, count):
    parts = [x for x in raw.split(",")] if raw else []
    if len(parts) not in count:
        raise ParamError(name, text, f"'{kind}' takes {' or '.join(map(str, count))} "
                         f"comma-separated numbers")
    try:
        return tuple(float(x) for x in parts)
    except ValueError:
        raise ParamError(name, text, f"arguments of '{kind}' must be numbers") from None


def parse_noise(text) -> tuple:
    """'gaussian', 'ar1:KAPPA', 'spiked:K,BETA', 'rademacher', 'student-t:NU'."""
    if not isinstance(text, str):
        raise ParamError("noise", text, f"must be one of {NOISE_HELP}")
    kind, _, raw = text.strip().partition(":")
    if kind in ("gaussian", "rademacher"):
        _spec_args("noise", text, kind, raw, (0,))
        return (kind, ())
    if kind == "ar1":
        (kappa,) = _spec_args("noise", text, kind, raw, (1,))
        if not -1.0 < kappa < 1.0:
            raise ParamError("noise", text, "ar1 needs -1 < KAPPA < 1")
        return (kind, (kappa,))
    if kind == "spiked":
        k, beta = _spec_args("noise", text, kind, raw, (2,))
        if not (k >= 1 and float(k).is_integer() and beta > 0 and math.isfinite(beta)):
            raise ParamError("noise", text, "spiked needs an integer K >= 1 and BETA > 0")
        return (kind, (int(k), beta))
    if kind == "student-t":
        (nu,) = _spec_args("noise", text, kind, raw, (1,))
        if not (nu > 2 and math.isfinite(nu)):
            raise ParamError("noise", text, "student-t needs NU > 2 (finite variance)")
        return (kind, (nu,))
    raise ParamError("noise", text, f"must be one of {NOISE_HELP}")


def parse_optimizer(text) -> tuple:
    """'gd', 'momentum:BETA', 'adam[:B1,B2,EPS]', 'sign'."""
    if not isinstance(text, str):
        raise ParamError("optimizer", text, f"must be one of {OPTIMIZER_HELP}")
    kind, _, raw = text.strip().partition(":")
    if kind in ("gd", "sign"):
        _spec_args("optimizer", text, kind, raw, (0,))
        return (kind, ())
    if kind == "momentum":
        (beta,) = _spec_args("optimizer", text, kind, raw, (1,))
        if not 0.0 <= beta < 1.0:
            raise ParamError("optimizer", text, "momentum needs 0 <= BETA < 1")
        return (kind, (beta,))
    if kind == "adam":
        args = _spec_args("optimizer", text, kind, raw, (0, 3)) or (0.9, 0.999, 1e-8)
        b1, b2, eps = args
        if not (0 <= b1 < 1 and 0 <= b2 < 1 and eps > 0):
            raise ParamError("optimizer", text, "adam needs 0 <= B1, B2 < 1 and EPS > 0")
        return (kind, args)
    raise ParamError("optimizer", text, f"must be one of {OPTIMIZER_HELP}")


def format_spec(spec) -> str:
    """Canonical string of a parsed (kind, args) spec."""
    kind, args = spec
    if not args:
        return kind
    return kind + ":" + ",".join(str(a) if isinstance(a, int) else repr(float(a)) for a in args)


def check_choice(name: str, value: str, allowed) -> str:
    """Validate a string option such as level or sampler."""
    if value not in allowed:
        raise ParamError(name, value, f"must be one of {', '.join(allowed)}")
    return value
