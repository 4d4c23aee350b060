"""The parameter table (dynamics.params.PARAMS) and everything generated from it.

Hypothesis draws values from each ``ParamSpec``'s declared range: valid ones
round-trip through netCDF attributes; invalid ones (below lo, above hi, NaN,
inf, bool, wrong type) raise ``ParamError`` naming the field, and the
generated click option refuses the same values (exit code 2, flag named).
"""
import os
import tempfile

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from compare.cli import main
from compare.dataset import global_attrs, read_netcdf, write_netcdf
from dynamics.params import (AXES, D_GRID, LOSS_MAX, N_GRID, PARAMS, SPEC_OF, TAU, THETA_MAX,
                             TRANSITION_TAUS, Params, ParamError, check_count,
                             check_threshold)

SETTINGS = settings(max_examples=50, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow])
NUMERIC = [p for p in PARAMS if p.kind in (int, float)]
IDS = [p.name for p in NUMERIC]


# ---------------------------------------------------------------- strategies
def valid_number(spec):
    """Values inside the declared range of a numeric spec."""
    if spec.kind is int:
        lo = None if spec.lo is None else int(spec.lo) + (1 if spec.lo_open else 0)
        hi = None if spec.hi is None else int(spec.hi) - (1 if spec.hi_open else 0)
        return st.integers(lo, hi)
    return st.floats(spec.lo, spec.hi, exclude_min=spec.lo_open and spec.lo is not None,
                     exclude_max=spec.hi_open and spec.hi is not None,
                     allow_nan=False, allow_infinity=False)


def _float_text(x):
    return repr(float(x))


NOISES = st.one_of(
    st.sampled_from(["gaussian", "rademacher"]),
    st.floats(-1, 1, exclude_min=True, exclude_max=True).map(lambda k: f"ar1:{_float_text(k)}"),
    st.tuples(st.integers(1, 50), st.floats(0, 1e6, exclude_min=True)).map(
        lambda kb: f"spiked:{kb[0]},{_float_text(kb[1])}"),
    st.floats(2, 1e6, exclude_min=True).map(lambda nu: f"student-t:{_float_text(nu)}"),
)
OPTIMIZERS = st.one_of(
    st.sampled_from(["gd", "sign", "adam"]),
    st.floats(0, 1, exclude_max=True).map(lambda b: f"momentum:{_float_text(b)}"),
    st.tuples(st.floats(0, 1, exclude_max=True), st.floats(0, 1, exclude_max=True),
              st.floats(0, 1, exclude_min=True)).map(
        lambda a: "adam:" + ",".join(_float_text(x) for x in a)),
)


def valid_value(spec):
    if spec.name == "noise":
        return NOISES
    if spec.name == "optimizer":
        return OPTIMIZERS
    if spec.name == "activation":
        return st.sampled_from(["relu", "relu^3", "relu^1.5", "leaky:0.1", "leaky:0.01"])
    if spec.name == "noise_model":
        return st.sampled_from(["projected", "isotropic"])
    if spec.name == "signal":
        return st.sampled_from(["e1", "random"])
    if spec.kind is bool:
        return st.booleans()
    strat = valid_number(spec)
    return st.one_of(st.none(), strat) if spec.default is None else strat


ALL_VALID = st.fixed_dictionaries({p.name: valid_value(p) for p in PARAMS})


def below(spec):
    if spec.kind is int:
        return st.integers(max_value=int(spec.lo) - (0 if spec.lo_open else 1))
    bad = (lambda x: x <= spec.lo) if spec.lo_open else (lambda x: x < spec.lo)
    return st.floats(max_value=spec.lo, allow_nan=False, allow_infinity=False).filter(bad)


def above(spec):
    if spec.kind is int:
        return st.integers(min_value=int(spec.hi) + (0 if spec.hi_open else 1))
    bad = (lambda x: x >= spec.hi) if spec.hi_open else (lambda x: x > spec.hi)
    return st.floats(min_value=spec.hi, allow_nan=False, allow_infinity=False).filter(bad)


def _not_a_number_text(s):
    try:
        float(s)
    except (TypeError, ValueError):
        return True
    return False


WRONG_TYPE = st.one_of(
    st.text(max_size=8).filter(_not_a_number_text),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=2), st.integers(), max_size=1),
    st.complex_numbers(allow_nan=False, allow_infinity=False).filter(lambda z: z.imag != 0),
    st.just(object()),
)


def invalid(spec, category):
    """Invalid values of one category for a numeric spec (None: not applicable)."""
    if category == "below":
        return None if spec.lo is None else below(spec)
    if category == "above":
        return None if spec.hi is None else above(spec)
    if category == "nan":
        return st.sampled_from([float("nan"), -float("nan"), np.float64("nan"),
                                np.float32("nan")])
    if category == "inf":
        return st.sampled_from([float("inf"), -float("inf"), np.float64("inf"),
                                -np.float32("inf")])
    if category == "bool":
        return st.sampled_from([True, False])
    if category == "numpy_bool":
        return st.sampled_from([np.True_, np.False_])
    if category == "wrong_type":
        strat = WRONG_TYPE if spec.default is None else st.one_of(WRONG_TYPE, st.none())
        if spec.kind is int:  # a non-integral number is the wrong type for a count
            strat = st.one_of(strat, st.floats(allow_nan=False, allow_infinity=False)
                              .filter(lambda x: not float(x).is_integer()))
        return strat
    if category == "numeric_string":
        return valid_number(spec).flatmap(lambda x: st.sampled_from([str(x), repr(x)]))
    raise ValueError(category)


def _numeric_invalid(category):
    """(spec, value) over every numeric spec for which ``category`` applies."""
    specs = [p for p in NUMERIC if invalid(p, category) is not None]
    return st.sampled_from(specs).flatmap(lambda p: st.tuples(st.just(p), invalid(p, category)))


CATEGORIES = ["below", "above", "nan", "inf", "bool", "wrong_type",
              "numpy_bool",
              "numeric_string"]


# ---------------------------------------------------------------- round trips
@SETTINGS
@given(values=ALL_VALID)
def test_valid_values_are_kept_and_round_trip_through_attrs(values):
    p = Params(**values)
    for spec in NUMERIC:
        v = values[spec.name]
        got = getattr(p, spec.name)
        if v is None:
            assert got is None
        else:
            assert type(got) is spec.kind and got == v, spec.name
    attrs = p.to_attrs()
    for name, val in attrs.items():  # netCDF-safe: no None, no bool
        assert val is not None and not isinstance(val, bool), name
    for spec in PARAMS:
        expected = p.effective(spec.name)  # None -> the default in use
        assert attrs[spec.name] == expected, spec.name
    back = Params.from_attrs(attrs)
    assert back == p
    assert back.to_attrs() == attrs
    assert Params(**back.to_dict()) == p  # canonical strings are fixed points


@settings(max_examples=8, deadline=None, derandomize=True)
@given(values=ALL_VALID)
def test_params_round_trip_through_a_netcdf_file(values):
    import xarray as xr
    p = Params(**values)
    with tempfile.TemporaryDirectory() as tmp:
        path = write_netcdf(xr.Dataset({"x": ("i", np.arange(3.0))},
                                       attrs=global_attrs(p, title="round trip")),
                            os.path.join(tmp, "p.nc"))
        back = read_netcdf(path)
    assert Params.from_attrs(back.attrs) == p
    for spec in PARAMS:
        expected = p.effective(spec.name)
        got = back.attrs[spec.name]
        if spec.kind is str:
            assert isinstance(got, str) and got == expected, spec.name
        elif spec.kind in (int, bool):  # bool attributes are stored as 0/1
            assert isinstance(got, (int, np.integer)) and int(got) == expected, spec.name
        else:
            assert isinstance(got, (float, np.floating)) and float(got) == expected, spec.name


def test_defaults_are_valid_and_documented():
    p = Params()
    for spec in PARAMS:
        assert getattr(p, spec.name) == spec.default, spec.name
        assert spec.flag.startswith("--") and spec.help and spec.long_name, spec.name
        if spec.kind is not str:
            assert spec.range_text() in Params.__doc__, spec.name
    assert set(SPEC_OF) == {f.name for f in __import__("dataclasses").fields(Params)}


def test_constants():
    assert 0 < TAU < 0.5 and all(0 < t < 0.5 for t in TRANSITION_TAUS)
    assert list(D_GRID) == sorted(D_GRID) and list(N_GRID) == sorted(N_GRID)
    assert LOSS_MAX > 0 and THETA_MAX > LOSS_MAX
    for name, spec in AXES.items():
        assert spec.axis and name == spec.flag.lstrip("-")
    assert {n for n, s in AXES.items() if s.data} >= {"n", "d", "m"}
    assert not any(AXES[n].data for n in ("mu", "v0", "eta"))


# ---------------------------------------------------------------- invalid values
@pytest.mark.parametrize("category", CATEGORIES)
@SETTINGS
@given(data=st.data())
def test_invalid_values_raise_param_error_naming_the_field(category, data):
    spec, value = data.draw(_numeric_invalid(category))
    with pytest.raises(ParamError) as exc:
        Params(**{spec.name: value})
    assert exc.value.param == spec.name
    assert str(exc.value).startswith(f"{spec.name}=")


@SETTINGS
@given(noise=st.one_of(
    st.sampled_from(["", "bogus", "ar1", "ar1:1", "ar1:-1", "ar1:nan", "spiked:2",
                     "spiked:0,1", "spiked:2.5,1", "spiked:2,0", "student-t:2",
                     "student-t:inf", "gaussian:1", "rademacher:0.5"]),
    st.floats(1, 1e9).map(lambda k: f"ar1:{k!r}"),
    st.text(max_size=10).filter(lambda s: s.strip().partition(":")[0] not in
                                ("gaussian", "rademacher", "ar1", "spiked", "student-t"))))
def test_invalid_noise_raises_param_error(noise):
    with pytest.raises(ParamError) as exc:
        Params(noise=noise)
    assert exc.value.param == "noise"


@SETTINGS
@given(opt=st.one_of(
    st.sampled_from(["", "rmsprop", "momentum", "momentum:1", "momentum:-0.1",
                     "momentum:nan", "adam:1,2", "adam:0.9,0.999,0", "adam:1,0.9,1e-8",
                     "gd:0.1", "sign:1"]),
    st.floats(1, 1e9).map(lambda b: f"momentum:{b!r}")))
def test_invalid_optimizer_raises_param_error(opt):
    with pytest.raises(ParamError) as exc:
        Params(optimizer=opt)
    assert exc.value.param == "optimizer"


@pytest.mark.parametrize("kind", [int, float, str, list, dict])
def test_noise_and_optimizer_refuse_non_strings(kind):
    for name in ("noise", "optimizer"):
        with pytest.raises(ParamError) as exc:
            Params(**{name: kind()})
        assert exc.value.param == name


def test_threshold_and_count_checks():
    for tau in (0.0, 0.5, -0.1, 1.0, float("nan"), float("inf"), True, None, [0.2]):
        with pytest.raises(ParamError) as exc:
            check_threshold(tau, "threshold")
        assert exc.value.param == "threshold"
    assert check_threshold(0.25) == 0.25
    for k in (0, -1, 1.5, True, None, "3"):
        with pytest.raises(ParamError) as exc:
            check_count("seeds", k)
        assert exc.value.param == "seeds"
    assert check_count("seeds", 3) == 3 and check_count("seeds", 3.0) == 3
    with pytest.raises(ParamError):
        check_count("seeds", 11, hi=10)


# ---------------------------------------------------------------- CLI options
def cli_text(value):
    """How a user would type ``value`` on the command line."""
    if isinstance(value, (float, np.floating)):
        return repr(float(value))
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    return str(value)


CLI_CATEGORIES = ["below", "above", "nan", "inf", "bool", "wrong_type"]


@pytest.mark.parametrize("spec", NUMERIC, ids=IDS)
@SETTINGS
@given(data=st.data())
def test_click_option_rejects_the_same_values(spec, data):
    from click.testing import CliRunner
    cats = [c for c in CLI_CATEGORIES if invalid(spec, c) is not None]
    category = data.draw(st.sampled_from(cats))
    value = data.draw(invalid(spec, category))
    if category == "wrong_type" and not isinstance(value, (str, float)):
        value = data.draw(st.text(min_size=1, max_size=8).filter(_not_a_number_text))
    text = cli_text(value)
    res = CliRunner().invoke(main, ["simulate", f"{spec.flag}={text}"])
    assert res.exit_code == 2, (text, res.output)
    lines = [ln for ln in res.output.splitlines() if ln.startswith("Error:")]
    assert len(lines) == 1 and spec.flag in lines[0], res.output
    assert "Traceback" not in res.output


@pytest.mark.parametrize("spec", [p for p in PARAMS if p.kind is str], ids=lambda p: p.name)
@SETTINGS
@given(text=st.sampled_from(["", "bogus", "ar1:1", "spiked:2", "student-t:1", "momentum:1",
                             "adam:1,2", "rmsprop", "gd:1", "gaussian:2"]))
def test_click_string_options_reject_invalid_values(spec, text):
    from click.testing import CliRunner
    try:
        Params(**{spec.name: text})
    except ParamError:
        pass
    else:  # valid for this parameter (e.g. a noise string given to --optimizer)
        return
    res = CliRunner().invoke(main, ["simulate", f"{spec.flag}={text}"])
    assert res.exit_code == 2, (text, res.output)
    lines = [ln for ln in res.output.splitlines() if ln.startswith("Error:")]
    assert len(lines) == 1 and spec.flag in lines[0], res.output


def _options(command):
    return {p.name: p for p in main.commands[command].params}


@pytest.mark.parametrize("command", ["simulate", "compare", "phase", "solve", "theory"])
def test_every_parameter_has_a_generated_option(command):
    opts = _options(command)
    for spec in PARAMS:
        if command == "solve" and spec.name == "v0":
            opt = opts["v0s"]  # several v0 allowed
            assert opt.multiple and spec.flag in opt.opts
            continue
        opt = opts[spec.name]
        assert spec.flag in opt.opts
        if command == "solve" and spec.name == "mu_norm":
            assert opt.hidden  # refused: solve searches over ||mu||
            continue
        assert opt.default == spec.default, spec.name
        if spec.kind is not str:
            assert spec.range_text() in (opt.help or ""), spec.name


@pytest.mark.parametrize("spec", NUMERIC, ids=IDS)
def test_click_range_equals_spec_range(spec):
    """The valid end points are accepted by the option type, just beyond refused."""
    import click
    typ = _options("simulate")[spec.name].type
    inside = [x for x in (spec.lo, spec.hi) if x is not None]
    for x, is_open in ((spec.lo, spec.lo_open), (spec.hi, spec.hi_open)):
        if x is None:
            continue
        value = spec.kind(x)
        if is_open:
            with pytest.raises(click.BadParameter):
                typ.convert(value, None, None)
        else:
            assert typ.convert(value, None, None) == value
            assert Params(**{spec.name: value}) is not None
    assert inside  # every numeric parameter is bounded


# ---------------------------------------------------------------- spec.data
def _stats_equal(a, b):
    return all(np.array_equal(getattr(a, k), getattr(b, k))
               for k in ("w0_e1", "w0_perp_sq", "B", "gram", "yhat", "y", "test_yhat",
                         "test_B", "test_X", "U0"))


CHANGES = {"n": 9, "d": 301, "m": 5, "sigma_0": 0.02, "sigma_p": 1.5, "mu_norm": 7.0,
           "v0": 0.3, "eta": 0.02, "eta_v": 0.05, "steps": 11, "c": 0.5, "flip": 0.3,
           "seed": 1, "n_test": 60, "depth": 2, "sigma_u": 0.5}


@pytest.mark.parametrize("spec", NUMERIC, ids=IDS)
def test_data_flag_says_whether_the_realisation_changes(spec):
    """``ParamSpec.data`` is True exactly when the sampled statistics change."""
    from dynamics import sample_stats
    base = Params(n=8, m=4, d=300, steps=10, n_test=50, depth=3 if spec.name == "sigma_u" else 1)
    other = base.replace(**{spec.name: CHANGES[spec.name]})
    for sampler in ("wishart", "data"):
        a, b = sample_stats(base, sampler), sample_stats(other, sampler)
        same = (all(getattr(a, k).shape == getattr(b, k).shape for k in ("B", "test_B"))
                and _stats_equal(a, b))
        assert same is (not spec.data), (spec.name, sampler)
