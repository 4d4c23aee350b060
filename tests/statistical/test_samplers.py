"""The d-free Wishart sampler and the data sampler have the same law (docs/theory.md#d-free-sampler, 6)."""
import time

import numpy as np
import pytest
from scipy import stats as sps

from dynamics import ParamError, Params, sample_data, sample_stats, sample_wishart, simulate
from dynamics.data import stats_from_factor, seed_streams, draw_labels
from dynamics.kernels import clean_error_kernel
from dynamics.run import kernel_config, kernel_stats

SMALL = Params(n=6, d=40, m=3, sigma_0=0.3, sigma_p=1.5, steps=60, n_test=400,
               mu_norm=2.0, v0=0.2)
SEEDS = range(300)


def _collect(sampler):
    out = {k: [] for k in ("N", "Goff", "B", "w0e1", "w0perp")}
    for s in SEEDS:
        st = sample_stats(SMALL.replace(seed=s), sampler)
        out["N"].append(st.N)
        out["Goff"].append(st.gram[np.triu_indices(SMALL.n, 1)])
        out["B"].append(st.B.ravel())
        out["w0e1"].append(st.w0_e1.ravel())
        out["w0perp"].append(st.w0_perp_sq.ravel())
    return {k: np.concatenate(v) for k, v in out.items()}


def test_gram_moments_match_theory_and_each_other():
    p, dm1 = SMALL, SMALL.d - 1
    theory = {  # (mean, variance) of each entry
        "N": (p.sigma_p**2 * dm1, 2 * p.sigma_p**4 * dm1),
        "Goff": (0.0, p.sigma_p**4 * dm1),
        "B": (0.0, p.sigma_0**2 * p.sigma_p**2 * dm1),
        "w0e1": (0.0, p.sigma_0**2),
        "w0perp": (p.sigma_0**2 * dm1, 2 * p.sigma_0**4 * dm1),
    }
    data, wish = _collect("data"), _collect("wishart")
    for key, (mean, var) in theory.items():
        for sample in (data[key], wish[key]):
            se = np.sqrt(var / sample.size)
            assert abs(sample.mean() - mean) < 5 * se, key
            assert abs(sample.var() / var - 1) < 0.15, key
        assert sps.ks_2samp(data[key], wish[key]).pvalue > 1e-3, key


def test_same_seed_same_labels_for_both_samplers():
    a = sample_data(SMALL.replace(seed=11)).stats
    b = sample_wishart(SMALL.replace(seed=11))
    np.testing.assert_array_equal(a.yhat, b.yhat)
    np.testing.assert_array_equal(a.test_yhat, b.test_yhat)


def test_final_loss_and_test_error_same_law():
    """Two-sample tests over 150 seeds: the two samplers drive the same law."""
    res = {"data": ([], []), "wishart": ([], [])}
    for sampler, (losses, errs) in res.items():
        for s in range(150):
            tr = simulate(SMALL.replace(seed=s), "exact", sampler, record_every=60)
            losses.append(tr.loss[-1])
            errs.append(tr.test_error)
    (ld, ed), (lw, ew) = res["data"], res["wishart"]
    assert sps.ks_2samp(ld, lw).pvalue > 1e-3
    assert sps.ks_2samp(ed, ew).pvalue > 1e-3
    se = np.sqrt(np.var(ed) / 150 + np.var(ew) / 150)
    assert abs(np.mean(ed) - np.mean(ew)) < 4 * se
    assert np.std(ed) > 0  # a non-degenerate law was compared


def test_d_free_test_error_agrees_with_real_test_vectors():
    """docs/theory.md#test-error: Gaussian law from the Gram vs real fresh test vectors, same state."""
    p = SMALL.replace(mu_norm=1.2)
    diffs, real_errs = [], []
    for s in range(150):
        q = p.replace(seed=s)
        real = sample_data(q)
        tr = simulate(q, "exact", "data", record_every=q.steps, stats=real.stats)
        # coordinates of {P w0, xi} in an orthonormal basis of their span
        M = np.concatenate([real.W0.reshape(2 * q.m, q.d), real.xi])[:, 1:]
        L = np.linalg.cholesky(M @ M.T)
        lab, _ = draw_labels(q, seed_streams(q.seed)[0])
        gauss = stats_from_factor(q, real.stats.w0_e1, L[: 2 * q.m], L[2 * q.m:],
                                  lab, lab, np.random.SeedSequence([s, 99]))
        A = q.mu_norm * real.stats.w0_e1
        # training statistics of the real draw, Gaussian test inner products
        kst = kernel_stats(real.stats)._replace(
            test_yhat=gauss.test_yhat, test_B=np.ascontiguousarray(gauss.test_B),
            test_X=np.ascontiguousarray(gauss.test_X))
        e_gauss = clean_error_kernel(A, tr.gamma[-1], tr.rho[-1], tr.U[-1], tr.v[-1], kst,
                                     kernel_config(q, "exact"))
        diffs.append(tr.test_error - e_gauss)
        real_errs.append(tr.test_error)
    diffs = np.array(diffs)
    assert np.mean(real_errs) > 0.02  # the comparison is not between zeros
    assert abs(diffs.mean()) < 4 * diffs.std() / np.sqrt(diffs.size) + 1e-12


def test_wishart_is_d_free():
    t0 = time.perf_counter()
    st = sample_wishart(Params(d=10**9, seed=1))
    elapsed = time.perf_counter() - t0
    assert np.allclose(st.N / 1e9, 1.0, atol=1e-3)
    assert elapsed < 5.0  # generous: O(K^3) work, milliseconds in practice


def test_wishart_refuses_small_d():
    with pytest.raises(ParamError, match="d - 1 >= 2m \\+ n") as exc:
        sample_wishart(Params(d=30, n=20, m=20))
    assert exc.value.param == "d"


def test_orthogonal_error_shrinks_with_d(rel_err):
    """The G = I reduction approaches the exact level as d grows (measured).

    Measured (6 seeds, v0=0.1, ||mu||=3, T=100): loss error 2.0e-2, 1.2e-2,
    4.5e-3, 1.4e-3, 3.7e-4 for d = 250 .. 64000; the rho error falls more
    slowly (0.81 -> 0.29) because flipped activations are amplified.
    """
    loss_errs, rho_errs = [], []
    for d in (250, 1000, 4000, 16000, 64000):
        el, er = [], []
        for s in range(6):
            p = Params(d=d, seed=s, v0=0.1, steps=100, mu_norm=3.0)
            st = sample_wishart(p)
            ex = simulate(p, "exact", stats=st)
            og = simulate(p, "orthogonal", stats=st)
            el.append(rel_err(og.loss, ex.loss))
            er.append(rel_err(og.rho[-1], ex.rho[-1]))
        loss_errs.append(np.mean(el))
        rho_errs.append(np.mean(er))
    assert all(b < a for a, b in zip(loss_errs, loss_errs[1:])), loss_errs
    assert loss_errs[-1] < loss_errs[0] / 20, loss_errs
    assert all(b < a for a, b in zip(rho_errs, rho_errs[1:])), rho_errs
    assert rho_errs[-1] < rho_errs[0] / 2, rho_errs
    assert loss_errs[0] > 1e-3  # at small d the approximation is visibly off


def test_clean_error_kernel_equals_trajectory_test_error():
    """The kernel wrapper API: clean_error_kernel on kernel_stats(stats)."""
    p = SMALL.replace(seed=3)
    tr = simulate(p, "exact", "wishart")
    kst = kernel_stats(tr.stats)
    err = clean_error_kernel(p.mu_norm * kst.w0_e1, tr.gamma[-1], tr.rho[-1], tr.U[-1], tr.v[-1],
                             kst, kernel_config(p, "exact"))
    assert err == tr.test_error


def test_kernel_stats_stacks_seeds():
    sts = [sample_wishart(SMALL.replace(seed=s)) for s in range(3)]
    one, many = kernel_stats(sts[1]), kernel_stats(sts)
    for name in one._fields:
        assert getattr(many, name).shape == (3,) + getattr(one, name).shape, name
        np.testing.assert_array_equal(getattr(many, name)[1], getattr(one, name))
    np.testing.assert_allclose(np.diagonal(one.G), 1.0)
    np.testing.assert_array_equal(one.N, sts[1].N)
