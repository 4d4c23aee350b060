"""Model parameters (docs/theory.md#data, #network-and-training): one table, one frozen validated dataclass.

Each parameter is declared once in ``PARAMS`` (name, CLI flag, type and range,
default, LaTeX label, CF long_name/units, whether it changes the data
realisation, whether it can be a sweep axis).  Validation here, CLI options and
phase axes (``compare.cli``), figure captions and netCDF attributes
(``compare``) are all generated from it.  ``to_attrs``/``from_attrs`` give a
lossless round trip through netCDF attributes (flat scalars plus one JSON string).
"""
from __future__ import annotations

import dataclasses
import json
import math
import numbers

import numpy as np
from dataclasses import dataclass, fields
from typing import Optional

# The levels and what each supports: dynamics.levels.LEVEL.  PAPER_LEVELS are specialised
# to the paper's model (signal e_1, projected noise); "general"
# (docs/theory.md#general-reduction, dynamics.general) takes any activation, noise model,
# signal and data; LEVELS are the reduced ones; "full" is the weight-space network.
from .levels import ALL_LEVELS, LEVELS, PAPER_LEVELS  # noqa: E402,F401
SAMPLERS = ("data", "wishart")
# Precision of the sweep kernels (dyn phase --precision): float64 everywhere else.
PRECISIONS = ("float64", "float32")

# Grids and thresholds, defined once.
D_GRID = (500, 1000, 2000, 4000, 8000, 16000, 32000, 64000)   # dyn solve scaling in d
N_GRID = (10, 20, 40, 80, 160)                                 # dyn solve scaling in n
TAU = 0.25                  # headline threshold of the clean test error (docs/theory.md#phase-boundary)
TRANSITION_TAUS = (0.1, 0.4)  # crossings reported for the width of the transition
TAU_RANGE = (0.0, 0.5)      # thresholds must lie strictly inside (chance = 0.5)

# Divergence policy (one for every level and command): a run diverges at the
# first step where an output is non-finite, the loss exceeds LOSS_MAX, or a
# parameter exceeds THETA_MAX in absolute value.
LOSS_MAX = 1e6
THETA_MAX = 1e100


class ParamError(ValueError):
    """Invalid user-facing parameter; ``param`` names it (for CLI mapping)."""

    def __init__(self, param: str, value, allowed: str):
        self.param = param
        self.value = value
        self.allowed = allowed
        super().__init__(f"{param}={value!r} is invalid: {allowed}")


@dataclass(frozen=True)
class ParamSpec:
    """Declaration of one model parameter (the single source for it).

    kind: int, float or str; lo/hi: bounds (None = unbounded), lo_open/hi_open
    whether they are excluded; label: LaTeX for figures; long_name/units: CF
    attributes; data: True if it changes the data realisation (statistics);
    axis: True if ``dyn phase`` can sweep it (axis name = flag without dashes).
    """

    name: str
    flag: str
    kind: type
    default: object
    help: str
    lo: float | None = None
    hi: float | None = None
    lo_open: bool = True
    hi_open: bool = False
    label: str = ""
    long_name: str = ""
    units: str = "1"
    data: bool = False
    axis: bool = False

    @property
    def axis_name(self) -> str:
        return self.flag.lstrip("-")

    def range_text(self) -> str:
        if self.kind in (str, bool):
            return ""
        left = "(" if self.lo_open else "["
        right = ")" if self.hi_open or self.hi is None else "]"
        lo = "-inf" if self.lo is None else f"{self.lo:g}"
        hi = "inf" if self.hi is None else f"{self.hi:g}"
        return f"{left}{lo}, {hi}{right}"

    def check(self, value):
        """Validated value of this parameter (ParamError otherwise)."""
        if self.kind is bool:
            if isinstance(value, (int, np.integer)) and value in (0, 1):
                return bool(value)  # netCDF attributes store booleans as 1/0
            if not isinstance(value, (bool, np.bool_)):
                raise ParamError(self.name, value, "must be True or False (or 1/0)")
            return bool(value)
        if self.kind is int:
            return _check_int(self.name, value, self.lo, self.hi)
        if self.kind is float:
            return _check_float(self.name, value, self.lo, self.hi, self.lo_open, self.hi_open)
        return value


NOISE_HELP = ("gaussian | ar1:KAPPA (|KAPPA| < 1) | spiked:K,BETA (K >= 1, BETA > 0) | "
              "rademacher | student-t:NU (NU > 2)")
ACTIVATION_HELP = "relu | relu^Q (Q > 1, e.g. relu^3) | leaky:ALPHA (0 < ALPHA < 1)"
NOISE_MODELS = ("projected", "isotropic")
SIGNALS = ("e1", "random")
OPTIMIZER_HELP = ("gd | momentum:BETA (0 <= BETA < 1) | adam[:B1,B2,EPS] | sign "
                  "(adam and sign only with --level full)")

_P = ParamSpec
SCALE_MIN = 1e-30  # smallest scale (sigma, ||mu||, v0, eta, c): below it products underflow
PARAMS = (
    _P("n", "--n", int, 20, "training samples n", 2, 100_000, False, False,
       "$n$", "number of training samples", data=True, axis=True),
    _P("d", "--d", int, 1000, "input dimension d", 2, 10**12, False, False,
       "$d$", "input dimension", data=True, axis=True),
    _P("m", "--m", int, 20, "filters per class m", 1, 100_000, False, False,
       "$m$", "filters per class", data=True, axis=True),
    _P("sigma_0", "--sigma0", float, 0.01, "std of the initial filters sigma_0", SCALE_MIN, 1e3,
       False,
       label=r"$\sigma_0$", long_name="std of the initial filters", data=True, axis=True),
    _P("sigma_p", "--sigmap", float, 1.0, "noise std sigma_p", SCALE_MIN, 1e3, False,
       label=r"$\sigma_p$", long_name="noise standard deviation", data=True, axis=True),
    _P("mu_norm", "--mu", float, 5.0, "signal strength ||mu||", SCALE_MIN, 1e6, False,
       label=r"$\|\mu\|$", long_name="signal strength", axis=True),
    _P("v0", "--v0", float, 0.001, "initial output weight v0 (all entries)", SCALE_MIN, 1e6, False,
       label="$v_0$", long_name="initial output-layer weight", axis=True),
    _P("eta", "--eta", float, 0.01, "learning rate of W", SCALE_MIN, 1e6, False,
       label=r"$\eta$", long_name="learning rate of the first layer", axis=True),
    _P("eta_v", "--eta-v", float, None, "learning rate of V (default: eta)", SCALE_MIN, 1e6, False,
       label=r"$\eta_v$", long_name="learning rate of the output layer"),
    _P("steps", "--steps", int, 200, "gradient-descent steps T", 1, 10**9, False, False,
       "$T$", "number of gradient-descent steps", axis=False),
    _P("c", "--c", float, 1.0, "output scale c in F_j = c sum ...", SCALE_MIN, 1e6, False,
       label="$c$", long_name="output scale"),
    _P("flip", "--flip", float, 0.0, "label-flip probability", 0.0, 0.5, False, True,
       label="flip", long_name="label-flip probability", data=True),
    _P("seed", "--seed", int, 0, "master random seed", 0, 2**63 - 1, False, False,
       "seed", "master random seed", data=True),
    _P("n_test", "--n-test", int, 1000, "test points / Gaussian test draws", 1, 10**7,
       False, False, r"$n_\mathrm{test}$", "number of test points", data=True),
    _P("noise", "--noise", str, "gaussian", "noise law: " + NOISE_HELP +
       " (non-gaussian needs sampler data)", label="noise", long_name="noise law", data=True),
    _P("optimizer", "--optimizer", str, "gd", "update rule: " + OPTIMIZER_HELP,
       label="optimizer", long_name="update rule"),
    _P("depth", "--depth", int, 1, "hidden layers L per class (1: the paper's network; "
       "L >= 2 adds L-1 trained m x m layers U, docs/theory.md#depth)", 1, 16, False, False,
       "$L$", "number of hidden layers", data=True, axis=True),
    _P("activation", "--activation", str, "relu", "activation sigma: " + ACTIVATION_HELP +
       " (not relu: depth 1 only; every level)", label="activation", long_name="activation"),
    _P("noise_model", "--noise-model", str, "projected", "projected: xi orthogonal to mu "
       "(the paper); isotropic: xi keeps its component along mu (Cao et al. 2022; "
       "--level general or full)", label="noise model", long_name="noise model", data=True),
    _P("signal", "--signal", str, "e1", "signal direction: e1, or random (uniform on the "
       "sphere, independent of the rest; sampler data; --level general or full)",
       label="signal", long_name="signal direction", data=True),
    _P("train_v", "--train-v", bool, True, "train the output layer v (--no-train-v: frozen "
       "at v0, the fixed-output model of Kou et al. 2023 / Cao et al. 2022)",
       label="train v", long_name="output layer trained"),
    _P("sigma_u", "--sigma-u", float, None, "std of the initial upper layers U "
       "(default sqrt(2/m); only used with --depth >= 2)", SCALE_MIN, 1e3, False,
       label=r"$\sigma_u$", long_name="std of the initial upper hidden layers", data=True),
)
SPEC_OF = {p.name: p for p in PARAMS}
AXES = {p.axis_name: p for p in PARAMS if p.axis}   # phase-axis name -> spec
FLAG_OF = {p.name: p.flag for p in PARAMS}


def _check_int(name, value, lo, hi=None):
    integral = isinstance(value, numbers.Integral) or (
        isinstance(value, float) and value.is_integer()
    )
    if isinstance(value, (bool, np.bool_)) or not integral:
        raise ParamError(name, value, f"must be an integer >= {lo}")
    value = int(value)
    if value < lo or (hi is not None and value > hi):
        rng = f">= {lo}" if hi is None else f"in [{lo}, {hi}]"
        raise ParamError(name, value, f"must be an integer {rng}")
    return value


def _check_float(name, value, lo=None, hi=None, lo_open=True, hi_open=True):
    if isinstance(value, (bool, np.bool_, str, bytes)):
        raise ParamError(name, value, "must be a real number")
    try:
        x = float(value)
    except (TypeError, ValueError, OverflowError):
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


def check_threshold(tau, name="threshold", n_test=None) -> float:
    """A test-error threshold strictly inside (0, 0.5); with ``n_test``, also
    at least the test error's resolution 1/n_test (below it the crossing only
    marks where the finite test set first shows no error)."""
    tau = _check_float(name, tau, *TAU_RANGE)
    if n_test is not None and tau < 1.0 / n_test:
        raise ParamError(name, tau, f"at least the test-error resolution 1/n_test = "
                         f"{1.0 / n_test:g} (raise --n-test or the threshold)")
    return tau


def check_count(name, value, lo=1, hi=None) -> int:
    """An integer count such as --seeds (>= lo)."""
    return _check_int(name, value, lo, hi)


class _ParamsMethods:
    """Methods of ``Params`` (its fields are generated from ``PARAMS``)."""

    def __post_init__(self):
        for spec in PARAMS:
            value = getattr(self, spec.name)
            if value is None and spec.default is None:
                continue
            object.__setattr__(self, spec.name, spec.check(value))  # frozen
        object.__setattr__(self, "noise", format_spec(parse_noise(self.noise)))
        object.__setattr__(self, "optimizer", format_spec(parse_optimizer(self.optimizer)))
        object.__setattr__(self, "activation", format_activation(
            parse_activation(self.activation)))
        check_choice("noise_model", self.noise_model, NOISE_MODELS)
        check_choice("signal", self.signal, SIGNALS)

    @property
    def activation_spec(self) -> tuple:
        """(kind, args) of the activation: ('relu', ()), ('relu^', (q,)),
        ('leaky', (alpha,))."""
        return parse_activation(self.activation)

    @property
    def paper_model(self) -> bool:
        """True for the paper's model (ReLU, signal e_1, projected noise), the
        model of the specialised levels (PAPER_LEVELS)."""
        return (self.activation == "relu" and self.noise_model == "projected"
                and self.signal == "e1")

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

    @property
    def sigma_u_eff(self) -> float:
        """Std of the initial upper layers U (sigma_u, or sqrt(2/m) when unset)."""
        return math.sqrt(2.0 / self.m) if self.sigma_u is None else self.sigma_u

    def effective(self, name: str):
        """The value in use: ``eta_v_eff``/``sigma_u_eff`` for the parameters
        whose None means a default, else the field itself."""
        return getattr(self, name + "_eff") if name in ("eta_v", "sigma_u") else \
            getattr(self, name)

    def replace(self, **changes) -> "Params":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    def to_attrs(self) -> dict:
        """Flat netCDF-safe attributes (no None/bool) plus ``params_json``."""
        attrs = {f.name: getattr(self, f.name) for f in fields(self)}
        attrs.update({k: self.effective(k) for k in ("eta_v", "sigma_u")})
        attrs.update({k: int(v) for k, v in attrs.items() if isinstance(v, bool)})
        attrs["params_json"] = self.to_json()
        return attrs

    @classmethod
    def from_attrs(cls, attrs) -> "Params":
        """Inverse of ``to_attrs`` (reads the JSON string, lossless)."""
        if "params_json" not in attrs:
            raise ValueError("attributes hold no 'params_json': not a dyn output")
        return cls(**json.loads(attrs["params_json"]))

    def caption(self, swept=()) -> str:
        """One-line parameter summary for figures; ``swept`` names are left out."""
        keys = ("n", "d", "m", "mu_norm", "v0", "sigma_0", "eta", "c", "steps", "flip", "seed")
        keys += ("depth", "sigma_u") if self.depth > 1 else ()
        keys += tuple(k for k in ("eta_v", "noise", "optimizer", "activation", "noise_model",
                                  "signal", "train_v")
                      if getattr(self, k) != SPEC_OF[k].default)
        short = {"mu_norm": "||mu||", "sigma_0": "sigma0", "steps": "T", "depth": "L"}
        value = {"sigma_u": self.sigma_u_eff}
        return ", ".join(f"{short.get(k, k)}={value.get(k, getattr(self, k)):.3g}"
                         if SPEC_OF[k].kind is float else f"{short.get(k, k)}={getattr(self, k)}"
                         for k in keys if k not in swept and SPEC_OF[k].axis_name not in swept)


Params = dataclasses.make_dataclass(
    "Params",
    [(p.name, Optional[p.kind] if p.default is None else p.kind,
      dataclasses.field(default=p.default)) for p in PARAMS],
    bases=(_ParamsMethods,), frozen=True)
Params.__module__ = __name__
Params.__doc__ = (
    "All model and training parameters, validated on construction.\n\n"
    "Fields, defaults and ranges come from ``PARAMS`` (one ``ParamSpec`` each; "
    "docs/reference/parameters.md).\n\nParameters\n----------\n"
    + "\n".join(f"{p.name} : {getattr(p.kind, '__name__', p.kind)}, default "
                 f"{p.default!r}\n    ``{p.help}`` {p.range_text()}" for p in PARAMS)
    + "\n\nRaises\n------\nParamError\n    A value of the wrong type or out of its "
      "range (``param`` names the field).\n\nExamples\n--------\n"
      ">>> Params(mu_norm=8.0, v0=1e-3).replace(d=10_000).d\n10000\n")


def _spec_args(name, text, kind, raw, count):
    parts = [x for x in raw.split(",")] if raw else []
    if len(parts) not in count:
        raise ParamError(name, text, f"'{kind}' takes {' or '.join(map(str, count))} "
                         f"comma-separated numbers")
    try:
        vals = tuple(float(x) for x in parts)
    except ValueError:
        raise ParamError(name, text, f"arguments of '{kind}' must be numbers") from None
    if not all(math.isfinite(v) for v in vals):
        raise ParamError(name, text, f"arguments of '{kind}' must be finite numbers")
    return vals


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


def parse_activation(text) -> tuple:
    """'relu', 'relu^Q' (Q > 1), 'leaky:ALPHA' (0 < ALPHA < 1) -> (kind, args)."""
    if not isinstance(text, str):
        raise ParamError("activation", text, f"must be one of {ACTIVATION_HELP}")
    t = text.strip().lower()
    if t == "relu":
        return ("relu", ())
    if t.startswith("relu^"):
        try:
            q = float(t[5:])
        except ValueError:
            raise ParamError("activation", text, "relu^Q needs a number Q > 1") from None
        if not (math.isfinite(q) and 1.0 < q <= 16.0):
            raise ParamError("activation", text, "relu^Q needs 1 < Q <= 16")
        return ("relu^", (q,))
    if t == "leaky" or t.startswith("leaky:"):
        (alpha,) = _spec_args("activation", text, "leaky", t.partition(":")[2], (1,))
        if not 0.0 < alpha < 1.0:
            raise ParamError("activation", text, "leaky:ALPHA needs 0 < ALPHA < 1")
        return ("leaky", (alpha,))
    raise ParamError("activation", text, f"must be one of {ACTIVATION_HELP}")


def format_activation(spec) -> str:
    """Canonical text of a parsed activation ('relu^3', 'leaky:0.1')."""
    kind, args = spec
    if kind == "relu^":  # exact: relu^2.5000001 is not relu^2.5
        q = float(args[0])
        return f"relu^{q:g}" if float(f"{q:g}") == q else f"relu^{q!r}"
    return kind if not args else f"{kind}:{args[0]!r}"


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
    if not isinstance(value, str) or value not in allowed:
        raise ParamError(name, value, f"must be one of {', '.join(allowed)}")
    return value


def check_params(params) -> "Params":
    """The ``params`` argument of an API entry must be a ``Params`` (not None, not a
    dict): one ParamError naming it instead of an AttributeError deep inside."""
    if not isinstance(params, Params):
        raise ParamError("params", params if params is None or isinstance(
            params, (int, float, str)) else type(params).__name__,
            "must be a dynamics.Params, e.g. Params(d=1000, n=20)")
    return params


def check_record_every(record_every, steps: int) -> int:
    """The one validator of the recording interval k (``--record-every``; every
    API entry that records a trajectory): an integer in [1, steps] (bools,
    non-integral floats such as 2.5, and values past T are refused; k = T records
    only the start and the end).  Returns it as a Python int, so kernels never
    see a float or an integer past int64."""
    steps = int(steps)
    integral = isinstance(value := record_every, (numbers.Integral, np.integer)) or (
        isinstance(value, (float, np.floating)) and math.isfinite(value)
        and float(value).is_integer())
    if isinstance(value, (bool, np.bool_)) or not integral or not 1 <= value <= steps:
        raise ParamError("record_every", record_every,
                         f"must be an integer in [1, {steps}] (at most --steps; "
                         f"k = --steps records only the start and the end)")
    return int(value)


def record_count(steps: int, record_every: int) -> int:
    """Number of recorded states of ``record_steps`` (0, k, 2k, ... and T),
    computed without allocating them (memory checks come first)."""
    k = int(record_every)
    return int(steps) // k + 1 + (int(steps) % k != 0)


def check_int_values(name: str, values, lo: int = 1) -> list:
    """A list of integers >= lo (e.g. the d/n grids of ``solve``): a string, a
    non-integral float (2000.5) or a bool is refused, never truncated."""
    if isinstance(values, (str, bytes)) or not hasattr(values, "__iter__"):
        raise ParamError(name, values, "must be a list of integers (or empty)")
    out = []
    for x in values:
        out.append(_check_int(name, x, lo))
    return out
