"""Compile only what runs: a job's compiled entry holds its own path only
(``dynamics.kernels.entry``).  Checked in a fresh interpreter with an empty
Numba cache, where a callee has signatures only if the entry's call graph
compiled it (slow: each probe compiles its path from scratch)."""
import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

PROBE = """
import json, numpy as np
from dynamics.params import Params
from dynamics.spec import RunSpec
from dynamics.batch import run_batch, stacked_stats
from dynamics.kernels import flow, group_step, groups, loop1, step, step1
p = Params(n=6, m=4, n_test=20, steps=20, depth={depth})
st = stacked_stats(p, "wishart", [0])
run_batch(RunSpec(p, times={times}), st, [0], [3.0])
got = {{name: len(f.signatures) for name, f in [
    ("flow", flow.normalised_gd), ("groups", groups._run_group),
    ("group_step", group_step._step_group), ("loop1", loop1._gd_loop_depth1),
    ("step1", step1._forward_depth1), ("generic_step", step._increments),
    ("step", step._step)]}}
# deep: _forward compiled with upper layers (deep._forward_deep is inlined there)
got["deep"] = sum(str(sig[3]) != "none" for sig in step._forward.signatures)
# the general-activation bodies: compiled only where cfg.general is not None
got["general_act"] = sum(str(sig[-1]) != "none" for sig in loop1._gd_loop_depth1.signatures)
print(json.dumps(got))
"""


def compiled(depth, times, cache):
    env = dict(os.environ, NUMBA_CACHE_DIR=str(cache))
    for name in ("DYN_NUMBA_CACHE_DIR", "DYN_NUMBA_CACHE_BASE"):
        env.pop(name, None)
    res = subprocess.run([sys.executable, "-c", PROBE.format(depth=depth, times=times)],
                         capture_output=True, text=True, cwd=ROOT, timeout=900, env=env)
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout.splitlines()[-1])


@pytest.mark.slow
def test_depth1_gd_batch_compiles_neither_deep_flow_nor_groups(tmp_path):
    got = compiled(1, [10, 20], tmp_path)
    assert got["loop1"] and got["step1"]
    assert not (got["deep"] or got["flow"] or got["groups"] or got["group_step"]), got
    assert not (got["generic_step"] or got["step"]), got  # plain GD: momentum None
    assert not got["general_act"], got  # ReLU: the other activations' bodies are pruned


@pytest.mark.slow
def test_deep_gd_batch_compiles_neither_flow_nor_groups(tmp_path):
    """Numba prunes ``if U is None`` only when U is None, so a deep run still
    compiles the depth-1 branches; the flow and the groups it does not."""
    got = compiled(2, [10, 20], tmp_path)
    assert got["deep"]
    assert not (got["flow"] or got["groups"] or got["group_step"]), got


def test_config_whose_general_flag_disagrees_with_the_activation_is_refused():
    """KConfig.general = None makes the kernels compile and run the ReLU bodies
    only; a hand-built leaky config with the default None is refused instead
    of silently running ReLU."""
    import numpy as np

    from dynamics.batch import stacked_stats
    from dynamics.kernels import JobOutputs, Jobs, Schedule, batch_kernel
    from dynamics.params import Params
    from dynamics.run import FLOW, kernel_config

    p = Params(n=6, m=4, n_test=20, steps=5, activation="leaky:0.1")
    cfg = kernel_config(p, "exact")
    assert cfg.act != 0 and cfg.general is not None
    st = stacked_stats(p, "wishart", [0])
    out = JobOutputs(*(np.empty((1, 1)) for _ in range(4)), np.empty((1, 2), np.int64),
                     np.empty((1, 4)))
    args = (Jobs(np.zeros(1, np.int64), np.ones(1), np.full(1, 0.1)),
            Schedule(np.array([5.0]), FLOW, False), out)
    with pytest.raises(ValueError, match="KConfig.general"):
        batch_kernel(st, cfg._replace(general=None), *args, parallel=False)
