"""Jobs of one seed stepped together (``kernels._run_group``) give the results
of the job-by-job path bit for bit, in every regime the batch kernel serves."""
import numpy as np
import pytest

from dynamics import Params, RunSpec
from dynamics.batch import group_limit, job_groups, run_batch, stacked_stats
from dynamics.kernels import GROUP_MIN

BASE = dict(n=10, m=5, d=300, n_test=100)
CASES = {  # name: (params, level, checkpoints[, integrator])
    "exact, small v0": (Params(v0=1e-3, **BASE), "exact", [0.0, 40.0, 150.0]),
    "exact, large v0, flips": (Params(v0=1.0, flip=0.1, **BASE), "exact", [60.0, 150.0]),
    "orthogonal": (Params(v0=0.3, **BASE), "orthogonal", [150.0]),
    "fixed-output": (Params(v0=1.0, **BASE), "fixed-output", [150.0]),
    "momentum": (Params(v0=0.1, optimizer="momentum:0.5", **BASE), "exact", [80.0, 150.0]),
    "then a late flow time": (Params(v0=1e-2, **BASE), "exact", [100.0, 1e30]),
    "divergences": (Params(v0=3.0, eta=20.0, **BASE), "exact", [20.0, 150.0]),
    "flow integrator": (Params(v0=0.5, flip=0.1, **BASE), "exact", [30.0, 3e4, 1e30],
                        "flow"),
    "fixed-output, late": (Params(v0=2.0, **BASE), "fixed-output", [50.0, 1e30]),
}


@pytest.mark.parametrize("name", list(CASES))
def test_group_equals_job_by_job(name):
    params, level, checkpoints, *integrator = CASES[name]
    integrator = integrator[0] if integrator else "gd"
    S, M = 2, 2 * GROUP_MIN + 3  # two groups per seed, each >= GROUP_MIN jobs
    stacked = stacked_stats(params, "wishart", params.seed + np.arange(S))
    mus = np.geomspace(0.3, 60.0, M)
    job_seed = np.tile(np.arange(S), M)
    job_mu = np.repeat(mus, S)
    job_v0 = params.v0 * np.where(np.arange(job_mu.size) % 3 == 0, 1.0, 2.5)
    run = RunSpec(params, level, times=checkpoints, integrator=integrator)
    grouped = run_batch(run, stacked, job_seed, job_mu, job_v0)
    single = run_batch(run, stacked, job_seed, job_mu, job_v0, group_size=1)
    for key in single:
        np.testing.assert_array_equal(grouped[key], single[key], err_msg=key)
    finite = np.isfinite(single["test_error"]).mean()
    assert finite > 0.5, "the case should mostly run, not only diverge"
    if name == "divergences":
        assert set(single["status"][:, 1]) >= {0, 2}, "the case should contain divergences"


def test_small_groups_beside_large_ones_equal_job_by_job():
    """A seed with few jobs (a group below GROUP_MIN) runs job by job next to
    the groups of the others (``entry.group_kernel``), with the results of
    the one-job path bit for bit, in the caller's job order."""
    params = Params(v0=0.05, flip=0.1, **BASE)
    stacked = stacked_stats(params, "wishart", params.seed + np.arange(3))
    job_seed = np.array([0] * (2 * GROUP_MIN) + [1] * 2 + [2] * (GROUP_MIN + 1))
    job_mu = np.geomspace(0.5, 30.0, job_seed.size)[::-1].copy()
    np.random.default_rng(0).shuffle(job_seed)
    grouped = run_batch(RunSpec(params, times=[30.0, 120.0]), stacked, job_seed, job_mu)
    single = run_batch(RunSpec(params, times=[30.0, 120.0]), stacked, job_seed, job_mu,
                       group_size=1)
    for key in single:
        np.testing.assert_array_equal(grouped[key], single[key], err_msg=key)
    assert np.isfinite(single["test_error"]).all()


def test_job_groups_split_by_seed_evenly():
    job_seed = np.array([1, 0] * 20 + [2] * 5)
    order, starts = job_groups(job_seed, 16)
    seeds = job_seed[order]
    sizes = np.diff(starts)
    assert sizes.sum() == job_seed.size and sizes.max() <= 16
    for a, b in zip(starts[:-1], starts[1:]):
        assert len(set(seeds[a:b])) == 1  # one seed per group
    assert sizes.tolist() == [10, 10, 10, 10, 5]  # 20 jobs -> two groups of 10
    with pytest.raises(ValueError, match="group_size"):
        job_groups(job_seed, 0)


def test_group_memory_is_bounded():
    """Large m n shrink the groups (below GROUP_MIN: job by job) instead of
    allocating C copies of a large state."""
    assert group_limit(20, 20) >= 32
    assert group_limit(100, 5000) < GROUP_MIN
    assert group_limit(10 ** 5, 10 ** 5) == 1


def test_labels_other_than_pm1_run_job_by_job(monkeypatch):
    """The group step's class sums need yhat_i = +-1; other labels (e.g.
    statistics built elsewhere) must take the one-job path."""
    import dynamics.batch as batch

    params = Params(v0=0.1, **BASE)
    stacked = stacked_stats(params, "wishart", [0])
    job_mu = np.geomspace(0.5, 20.0, GROUP_MIN + 2)
    job_seed = np.zeros(job_mu.size, dtype=np.int64)
    calls = []
    real = batch.group_kernel
    monkeypatch.setattr(batch, "group_kernel", lambda *a, **k: calls.append(1) or real(*a, **k))
    run_batch(RunSpec(params, times=[20.0]), stacked, job_seed, job_mu)
    assert calls == [1]  # +-1 labels: grouped
    scaled = stacked._replace(yhat=0.5 * stacked.yhat)
    res = run_batch(RunSpec(params, times=[20.0]), scaled, job_seed, job_mu)
    assert calls == [1]  # not grouped
    one = run_batch(RunSpec(params, times=[20.0]), scaled, job_seed, job_mu, group_size=1)
    np.testing.assert_array_equal(res["loss"], one["loss"])
