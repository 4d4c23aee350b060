"""Hypothesis drives the public API with arbitrary values of every
argument.  Each call must end in a ``ParamError``/``ValueError`` that names
the argument, a ``DivergenceError`` (a valid but extreme parameter), or a
finite, correctly shaped result; never a crash of the interpreter.  The
property runs in a subprocess, so a segfault fails this test instead of
killing the suite."""
import json
import os
import subprocess
import sys
import textwrap

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

SCRIPT = textwrap.dedent(r'''
    import json, math, sys
    import numpy as np
    from hypothesis import HealthCheck, given, settings, strategies as st
    from dynamics import PARAMS, Params, ParamError, DivergenceError, simulate
    from dynamics.general import simulate_general
    from fullsim import simulate_full

    BASE = dict(d=60, n=6, m=3, steps=8, n_test=40)
    SMALL = dict(d=10**9, n=40, m=10, steps=50, n_test=400, depth=3)  # run only below these
    ANY = st.one_of(st.integers(1, 12), st.floats(1e-3, 10.0),  # often valid
                    st.none(), st.booleans(), st.integers(-10**20, 10**20),
                    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=6),
                    st.lists(st.integers(0, 3), max_size=2), st.sampled_from([np.int64(3),
                    np.float64(2.5), "relu", "data", "exact", "wishart", "gaussian", 1e-300]))
    ENTRIES = {
        "simulate": (("level", "sampler", "record_every"), ("exact", "wishart", 2)),
        "simulate_full": (("record_every",), (2,)),
        "simulate_general": (("sampler", "record_every"), ("data", 2)),
    }
    FIELDS = [s.name for s in PARAMS]
    seen = {"ran": 0, "refused": 0, "diverged": 0, "too_big": 0}
    bad = []

    def call(entry, params, args):  # keyword-only arguments by name
        if entry == "simulate":
            return simulate(params, *args[:2], record_every=args[2])
        if entry == "simulate_full":
            return simulate_full(params, record_every=args[0])
        return simulate_general(params, None, *args)

    def check_result(tr, params):
        rec = np.asarray(tr.steps)
        assert rec.ndim == 1 and rec[0] == 0 and rec[-1] == params.steps, rec
        loss = np.asarray(tr.loss)
        assert loss.shape == rec.shape and np.all(np.isfinite(loss)), loss
        err = float(np.asarray(tr.test_error).ravel()[-1])
        assert 0.0 <= err <= 1.0, err

    @settings(max_examples=int(sys.argv[1]), deadline=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    @given(entry=st.sampled_from(sorted(ENTRIES)), data=st.data())
    def prop(entry, data):
        names, valid = ENTRIES[entry]
        which = data.draw(st.sampled_from(("params",) + names), label="argument")
        value = data.draw(ANY, label="value")
        field = None
        try:
            if which == "params":
                field = name = data.draw(st.sampled_from(FIELDS), label="field")
                params, args = Params(**{**BASE, field: value}), valid
            else:
                name = which
                args = tuple(value if n == which else v for n, v in zip(names, valid))
                params = Params(**BASE)
            if any(getattr(params, k) > v for k, v in SMALL.items()) \
                    or params.steps * params.n * params.m * params.depth > 20000:
                seen["too_big"] += 1  # valid but too big to run here: construction only
                return
            tr = call(entry, params, args)
        except ParamError as exc:
            seen["refused"] += 1
            if exc.param != name and name not in str(exc):
                bad.append([entry, which, field, repr(value), f"ParamError names {exc.param}"])
            return
        except DivergenceError:
            seen["diverged"] += 1
            return
        except ValueError as exc:
            seen["refused"] += 1
            if name not in str(exc):
                bad.append([entry, which, field, repr(value), f"ValueError: {exc}"])
            return
        except Exception as exc:  # anything else is a defect
            bad.append([entry, which, field, repr(value), f"{type(exc).__name__}: {exc}"])
            return
        try:
            check_result(tr, params)
            seen["ran"] += 1
        except AssertionError as exc:
            bad.append([entry, which, field, repr(value), f"bad result: {exc}"])

    prop()
    print(json.dumps({"seen": seen, "bad": bad[:20], "n_bad": len(bad)}))
''')


def test_public_api_takes_arbitrary_arguments_without_crashing():
    res = subprocess.run([sys.executable, "-c", SCRIPT, "400"], capture_output=True,
                         text=True, cwd=ROOT, timeout=1200)
    assert res.returncode == 0, f"interpreter ended with {res.returncode}:\n{res.stderr[-3000:]}"
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out["n_bad"] == 0, out["bad"]
    assert out["seen"]["ran"] > 20 and out["seen"]["refused"] > 100, out["seen"]
