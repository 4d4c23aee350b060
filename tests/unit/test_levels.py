"""The level table (dynamics/levels.py): what each level supports, read by
every validator; adding a paper-kind level is one entry."""
import dataclasses

import numpy as np
import pytest

from dynamics import Params, simulate
from dynamics.levels import (ALL_LEVELS, LEVEL, LEVELS, NETWORK, PAPER, PAPER_LEVELS, Level,
                             level_of, sampler_for, validate)
from dynamics.params import ParamError
from dynamics.run import kernel_config, trains_v

SMALL = dict(n=8, d=120, m=3, steps=30, n_test=200, mu_norm=4.0, v0=0.3)


def test_table_names_and_kinds():
    assert ALL_LEVELS == tuple(LEVEL) and set(PAPER_LEVELS) < set(LEVELS) < set(ALL_LEVELS)
    assert [k for k in ALL_LEVELS if not LEVEL[k].reduced] == ["full"]
    assert all(LEVEL[k].kind == PAPER for k in PAPER_LEVELS)
    assert LEVEL["full"].kind == NETWORK and sampler_for("full", "wishart") == "data"
    assert sampler_for("exact", "wishart") == "wishart"


@pytest.mark.parametrize("level", PAPER_LEVELS)
def test_kernel_config_reads_the_table(level):
    cfg = kernel_config(Params(**SMALL), level)
    assert cfg.use_gram == LEVEL[level].use_gram
    assert cfg.train_v == LEVEL[level].trains_v == trains_v(Params(**SMALL), level)
    assert not kernel_config(Params(train_v=False, **SMALL), level).train_v


@pytest.mark.parametrize("call, param, text", [
    (lambda p: validate(p, "bogus"), "level", "one of"),
    (lambda p: validate(p, "full", sampler="wishart"), "sampler", "sampler data only"),
    (lambda p: validate(p, "general", integrator="flow"), "integrator", "gd only"),
    (lambda p: validate(p, "full", integrator="flow", sweep=True), "integrator", "in sweeps"),
    (lambda p: validate(p, "orthogonal", times=[200, np.inf]), "times", "level exact"),
    (lambda p: validate(p, "general", precision="float32"), "precision", "float64 only"),
    (lambda p: level_of("nope"), "level", "one of"),
])
def test_validate_refuses_what_the_table_does_not_have(call, param, text):
    with pytest.raises(ParamError) as exc:
        call(Params(**SMALL))
    assert exc.value.param == param and text in exc.value.allowed, exc.value.allowed


def test_validate_accepts_what_the_table_has():
    p = Params(**SMALL)
    assert validate(p, "exact", sampler="wishart", integrator="flow", sweep=True,
                    times=[200, np.inf], precision="float32").name == "exact"
    assert validate(p, "full", sampler="data", integrator="flow").kind == NETWORK


def test_a_new_paper_level_is_one_table_entry(monkeypatch):
    """A paper-kind level that is a combination of the kernels' flags needs
    only its entry: here orthogonal noise with the output layer frozen,
    which must equal level orthogonal with --no-train-v bit for bit."""
    new = dataclasses.replace(LEVEL["orthogonal"], name="orthogonal-frozen", trains_v=False)
    assert isinstance(new, Level)
    monkeypatch.setitem(LEVEL, "orthogonal-frozen", new)
    p = Params(**SMALL)
    a = simulate(p, "orthogonal-frozen", "wishart")
    b = simulate(p.replace(train_v=False), "orthogonal", "wishart")
    for name in ("gamma", "rho", "v", "loss"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    assert a.test_error == b.test_error
    np.testing.assert_array_equal(a.v[-1], a.v[0])  # frozen
