"""RunSpec: one validated description of a set of runs (dynamics.spec)."""
import json
import math

import numpy as np
import pytest

from dynamics import ParamError, Params, RunSpec


def test_defaults_and_derived_values():
    spec = RunSpec(Params(seed=7))
    assert (spec.level, spec.sampler, spec.integrator, spec.precision) == \
        ("exact", "wishart", "gd", "float64")
    assert spec.n_seeds == 8 and spec.times is None
    np.testing.assert_array_equal(spec.seed_values, 7 + np.arange(8))
    assert spec.checkpoints == (float(Params().steps),)
    explicit = RunSpec(Params(), seeds=[3, 11, 5])
    assert explicit.seeds == (3, 11, 5) and explicit.n_seeds == 3
    np.testing.assert_array_equal(explicit.seed_values, [3, 11, 5])


def test_times_are_normalised_once():
    spec = RunSpec(Params(), times=[20, 200, math.inf])
    assert spec.times == (20.0, 200.0, math.inf)
    assert spec.checkpoints == spec.times
    flow = RunSpec(Params(), times=[2.5, 30.0], integrator="flow")  # flow time: not integers
    assert flow.times == (2.5, 30.0)


@pytest.mark.parametrize("kwargs,param", [
    (dict(level="foo"), "level"),
    (dict(sampler="gauss"), "sampler"),
    (dict(integrator="rk4"), "integrator"),
    (dict(precision="float16"), "precision"),
    (dict(seeds=0), "seeds"),
    (dict(seeds=2.5), "seeds"),
    (dict(seeds=[]), "seeds"),
    (dict(seeds="8"), "seeds"),
    (dict(seeds=[1, -2]), "seeds"),
    (dict(times="200"), "times"),
    (dict(times=[200, 100]), "times"),
    (dict(times=[20.5]), "times"),
    (dict(times=[200, math.inf], level="orthogonal"), "times"),      # no limit program
    (dict(integrator="flow", level="general"), "integrator"),        # level cannot
    (dict(precision="float32", level="full"), "precision"),
])
def test_refusals_name_the_option(kwargs, param):
    with pytest.raises(ParamError) as exc:
        RunSpec(Params(), **kwargs)
    assert exc.value.param == param, exc.value


def test_params_must_be_params():
    for bad in (None, {"d": 100}):
        with pytest.raises(ParamError) as exc:
            RunSpec(bad)
        assert exc.value.param == "params"


def test_frozen_and_replace_validates_again():
    spec = RunSpec(Params(), seeds=4)
    with pytest.raises(AttributeError):
        spec.level = "full"
    other = spec.replace(level="orthogonal", times=[10, 20])
    assert other.level == "orthogonal" and other.times == (10.0, 20.0) and spec.level == "exact"
    with pytest.raises(ParamError):
        spec.replace(times=[math.inf], level="orthogonal")


def test_to_dict_is_plain_json():
    spec = RunSpec(Params(v0=0.1), "exact", "data", [1, 2], [200, math.inf])
    d = spec.to_dict()
    assert RunSpec(Params(**d["params"]), d["level"], d["sampler"], d["seeds"], d["times"],
                   d["integrator"], d["precision"]) == spec
    json.dumps({k: v for k, v in d.items() if k != "times"}, allow_nan=False)


def test_phase_spec_keeps_its_fingerprint_layout():
    """Stores written before RunSpec existed are resumed: the sweep spec has
    the same keys and values."""
    from compare.phase import make_spec, parse_axis
    x, y = parse_axis("v0=0.01..1:2"), parse_axis("mu=0.5..20:3")
    spec = make_spec(RunSpec(Params(), "exact", "wishart", 2, [200, 2000]), x, y, tau=0.25)
    assert set(spec) == {"params", "x", "y", "n_seeds", "level", "sampler", "tau", "times",
                         "version"}
    assert spec["n_seeds"] == 2 and spec["times"] == [200.0, 2000.0]
    with pytest.raises(ParamError) as exc:
        make_spec(RunSpec(Params(), seeds=[1, 2]), x, y, tau=0.25)
    assert exc.value.param == "seeds"
