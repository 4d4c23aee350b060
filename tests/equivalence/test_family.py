"""The model family (docs/theory.md#general-reduction): activations, noise models, random signal, the
general exact level against the weight-space network, bring-your-own data,
and a script-style PyTorch reference (Cao et al. 2022)."""
from __future__ import annotations

import os
import sys

import numpy as np
import pytest
from click.testing import CliRunner
from scipy import stats as sps

from compare.boundaries import find_boundary
from compare.cli import main
from compare.dataset import trajectory_dataset
from dynamics.activation import activation, activation_code, activation_grad
from dynamics.datafile import load_npz
from dynamics.general import model_data, simulate_general
from dynamics.params import Params, ParamError
from dynamics.run import simulate
from dynamics.spec import RunSpec
from fullsim.patches import simulate_full_patches

ACTIVATIONS = ("relu", "relu^3", "relu^1.5", "leaky:0.1")


def rel(a, b):
    return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


@pytest.mark.parametrize("act", ACTIVATIONS)
def test_activation_gradient_matches_finite_differences(act):
    code, a = activation_code(Params(activation=act))
    x = np.random.default_rng(1).uniform(-2, 2, 400)
    x = x[np.abs(x) > 1e-3]  # away from the kink
    h = 1e-6
    fd = (activation(x + h, code, a) - activation(x - h, code, a)) / (2 * h)
    np.testing.assert_allclose(activation_grad(x, code, a), fd, rtol=1e-7, atol=1e-9)
    # conventions at the kink: sigma(0) = 0; sigma'(0) = 0 (relu, relu^q), alpha (leaky)
    assert activation(0.0, code, a) == 0.0
    assert activation_grad(0.0, code, a) == (0.1 if act.startswith("leaky") else 0.0)


def test_activation_parsing_and_errors():
    assert Params(activation="ReLU^3").activation == "relu^3"
    assert Params(activation="leaky:0.2").activation_spec == ("leaky", (0.2,))
    for bad in ("tanh", "relu^0.5", "relu^x", "leaky:1.5", "leaky"):
        with pytest.raises(ParamError, match="activation"):
            Params(activation=bad)
    with pytest.raises(ParamError, match="noise_model"):
        Params(noise_model="gaussian")
    with pytest.raises(ParamError, match="signal"):
        Params(signal="e2")
    with pytest.raises(ParamError, match="train_v"):
        Params(train_v="no")


FAMILY = [(act, nm, sig) for act in ("relu", "relu^3", "leaky:0.1")
          for nm, sig in (("projected", "e1"), ("isotropic", "e1"), ("projected", "random"),
                          ("isotropic", "random"))]


@pytest.mark.parametrize("act,noise_model,signal", FAMILY)
def test_general_level_equals_network(act, noise_model, signal):
    """General level vs the weight-space network on the same patches: <= 1e-10,
    small and large v0, label flips, trained and frozen v."""
    for seed, v0, flip, train_v in ((1, 1e-3, 0.0, True), (2, 1.0, 0.2, True),
                                    (3, 0.5, 0.1, False)):
        p = Params(d=200, n=12, m=6, seed=seed, v0=v0, flip=flip, steps=120, eta=0.05,
                   mu_norm=3.0, activation=act, noise_model=noise_model, signal=signal,
                   train_v=train_v)
        data = model_data(p, "data")
        g, f = simulate_general(p, data), simulate_full_patches(p, data)
        assert rel(g.pre, f.pre) < 1e-10
        assert rel(g.v, f.v) < 1e-10
        assert rel(g.loss, f.loss) < 1e-10
        assert g.test_error == f.test_error
        assert abs(g.pre[-1] - g.pre[0]).max() > 1e-3 * abs(g.pre[0]).max()  # it trained
        if not train_v:
            assert np.all(g.v == v0)


@pytest.mark.parametrize("sampler", ["data", "wishart"])
def test_general_equals_exact_on_the_papers_model(sampler):
    """mu orthogonal to the noise, ReLU: the general level is level exact
    (same realisation at the same seed) to round-off."""
    for seed, v0, flip in ((0, 1e-3, 0.0), (1, 1.0, 0.0), (2, 0.1, 0.2)):
        p = Params(d=300, seed=seed, v0=v0, flip=flip, steps=150)
        g, e = simulate_general(p, sampler=sampler), simulate(p, "exact", sampler)
        s, z, _ = e.preactivations()
        assert rel(g.pre, np.stack([s, z], axis=-1)) < 1e-12
        assert rel(g.v, e.v) < 1e-12
        assert rel(g.loss, e.loss) < 1e-12
        assert g.test_error == e.test_error
        assert g.extra["rank"] == p.n + 1  # collinear signal patches: K = n + 1


def test_frozen_output_layer_is_fixed_output_level():
    p = Params(d=300, v0=0.3, seed=4, steps=100)
    a = simulate(p.replace(train_v=False), "exact")
    b = simulate(p, "fixed-output")
    np.testing.assert_array_equal(a.gamma, b.gamma)
    np.testing.assert_array_equal(a.rho, b.rho)
    g = simulate_general(p.replace(train_v=False), sampler="wishart")
    assert rel(g.v, b.v) == 0.0 and rel(g.loss, b.loss) < 1e-12


def test_isotropic_wishart_matches_data_in_law():
    """The d-free sampler with isotropic noise (component along mu drawn
    separately) against real vectors: same law of the final loss and test error."""
    base = Params(d=120, n=8, m=4, steps=60, eta=0.05, mu_norm=2.0, noise_model="isotropic")
    res = {s: [simulate_general(base.replace(seed=k), sampler=s) for k in range(60)]
           for s in ("data", "wishart")}
    for get in (lambda t: t.loss[-1], lambda t: t.pre[0, :, :, :, 1].std()):
        a = [get(t) for t in res["data"]]
        b = [get(t) for t in res["wishart"]]
        assert sps.ks_2samp(a, b).pvalue > 0.01


def test_random_signal_equal_in_law_to_e1():
    """A random signal direction gives the same law as e_1 (rotation invariance),
    not the same realisation."""
    base = Params(d=80, n=8, m=4, steps=60, eta=0.05, mu_norm=2.0)
    runs = {s: [simulate_general(base.replace(seed=k, signal=s)) for k in range(80)]
            for s in ("e1", "random")}
    for get in (lambda t: t.loss[-1], lambda t: t.pre[0, :, :, 0, 0].std(),
                lambda t: t.test_error):
        a = [get(t) for t in runs["e1"]]
        b = [get(t) for t in runs["random"]]
        assert sps.ks_2samp(a, b).pvalue > 0.01
    assert runs["e1"][0].loss[-1] != runs["random"][0].loss[-1]
    with pytest.raises(ParamError, match="rotation invariant"):
        model_data(base.replace(signal="random"), "wishart")


def test_paper_levels_refuse_the_family_options():
    """What the specialised code does not cover is refused in one line, naming
    the option (never silently run as the paper's model)."""
    def refused(args, flag):
        r = CliRunner().invoke(main, args)
        assert r.exit_code == 2 and flag in r.output and "Traceback" not in r.output, r.output
        return r.output
    assert "--level general" in refused(["simulate", "--noise-model", "isotropic", "--level",
                                         "orthogonal"], "--noise-model")
    refused(["simulate", "--signal", "random", "--sampler", "data"], "--signal")
    refused(["simulate", "--activation", "relu^3", "--depth", "2"], "--activation")
    refused(["theory", "--activation", "leaky:0.1"], "--activation")
    refused(["solve", "--level", "full", "--activation", "leaky:0.1", "--d-grid", "none",
             "--n-grid", "none"], "--activation")
    refused(["phase", "--level", "full", "--activation", "leaky:0.1"], "--activation")


def _write_model_file(path, p):
    data = model_data(p, "data")
    xt = np.concatenate([c for _, c in data.test_chunks()]) * data.scale(p.mu_norm)[:, None]
    np.savez(path, x=data.patches(p.mu_norm), y=(data.y > 0).astype(int), w0=data.w0,
             v0=np.float64(p.v0), x_test=xt, y_test=data.y_test)
    return data


def test_data_file_round_trip(tmp_path):
    """Arrays written to .npz, run through --data: the general level equals the
    network on them, and equals the run on the in-memory realisation."""
    p = Params(d=150, n=10, m=5, seed=7, v0=0.2, steps=80, eta=0.05, mu_norm=3.0,
               activation="leaky:0.2", flip=0.1)
    path = str(tmp_path / "data.npz")
    data = _write_model_file(path, p)
    loaded = load_npz(path, p)
    assert np.array_equal(loaded.y, data.y) and loaded.source == "data.npz"
    g_file, g_mem = simulate_general(p, loaded), simulate_general(p, data)
    assert rel(g_file.pre, g_mem.pre) < 1e-12 and g_file.test_error == g_mem.test_error
    out = str(tmp_path / "cmp.nc")
    r = CliRunner().invoke(main, ["compare", "--data", path, "--level", "general",
                                  "--activation", "leaky:0.2", "--n", "10", "--d", "150",
                                  "--m", "5", "--steps", "80", "--eta", "0.05",
                                  "--out", out])
    assert r.exit_code == 0, r.output
    from compare.dataset import read_netcdf
    ds = read_netcdf(out)
    assert float(ds.max_rel_err.max()) < 1e-10
    assert ds.attrs["data_source"] == "data.npz" and ds.pre.dims == ("model", "step", "j",
                                                                     "r", "i", "p")


def test_bad_data_files_are_refused(tmp_path):
    def run(name, **arrays):
        path = str(tmp_path / name)
        np.savez(path, **arrays)
        r = CliRunner().invoke(main, ["simulate", "--data", path, "--level", "general",
                                      "--n", "4", "--d", "6", "--m", "2"])
        assert r.exit_code != 0 and "Traceback" not in r.output
        assert len(r.output.strip().splitlines()) <= 3, r.output
        return r.output
    x = np.random.default_rng(0).standard_normal((4, 2, 6))
    y = np.array([1, -1, 1, -1])
    assert "must contain arrays x and y" in run("a.npz", x=x)
    assert "expected (n, P, d)" in run("b.npz", x=x[0], y=y)
    bad = x.copy()
    bad[1, 0, 2] = np.nan
    assert "NaN" in run("c.npz", x=bad, y=y)
    assert "labels" in run("d.npz", x=x, y=np.array([2, 3, 2, 3]))
    assert "w0 has shape" in run("e.npz", x=x, y=y, w0=np.zeros((2, 3, 6)))
    assert "x_test needs y_test" in run("f.npz", x=x, y=y, x_test=x)
    np.savez(str(tmp_path / "ok.npz"), x=x, y=y)
    r = CliRunner().invoke(main, ["simulate", "--data", str(tmp_path / "ok.npz"), "--level",
                                  "general", "--n", "5", "--d", "6"])
    assert r.exit_code == 2 and "--n 4" in r.output
    r = CliRunner().invoke(main, ["simulate", "--data", str(tmp_path / "ok.npz"), "--level",
                                  "general", "--n", "4", "--d", "6", "--m", "2"])
    assert r.exit_code == 0, r.output
    notzip = tmp_path / "g.npz"
    notzip.write_text("hello")
    r = CliRunner().invoke(main, ["simulate", "--data", str(notzip), "--level", "general"])
    assert r.exit_code == 1 and "cannot read" in r.output
    r = CliRunner().invoke(main, ["simulate", "--data", str(tmp_path / "ok.npz"), "--level",
                                  "exact", "--n", "4", "--d", "6"])
    assert r.exit_code == 2 and "--level general or full" in r.output


def test_every_level_records_pre():
    p = Params(d=300, steps=20)
    ds = trajectory_dataset(simulate(p, "exact"))
    assert ds.pre.dims == ("step", "j", "r", "i", "p")
    g = simulate_general(p, sampler="wishart")
    np.testing.assert_allclose(ds.pre.values, g.pre, rtol=0, atol=1e-12 * abs(g.pre).max())


def test_boundary_of_general_level_equals_exact():
    """The sweep kernel of the general level gives the exact level's mu* on the
    paper's model (same seeds, same statistics)."""
    p = Params(d=400, n=10, m=8, steps=100, v0=0.5)
    a = find_boundary(RunSpec(p, "general", "wishart", 3), rel_tol=0.05)
    b = find_boundary(RunSpec(p, "exact", "wishart", 3), rel_tol=0.05)
    assert np.isfinite(a.star()) and abs(a.star() / b.star() - 1.0) < 1e-9


def test_pytorch_cao2022_reference(tmp_path):
    """A script-style PyTorch model of Cao et al. 2022 (relu^3, fixed second layer,
    CrossEntropyLoss, SGD, float64): its logged <w_j, mu> and <w_j, xi_i>
    equal the general level on the same arrays to 1e-9; dyn compare on its file
    agrees with the network to 1e-10."""
    pytest.importorskip("torch")
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # tests/
    from torch_cao2022 import write_file
    path = str(tmp_path / "cao.npz")
    logs = write_file(path, n=16, d=400, m=10, steps=60, lr=0.5, q=3.0, sigma_0=0.05)
    args = ["--n", "16", "--d", "400", "--m", "10", "--activation", "relu^3",
            "--no-train-v", "--eta", "0.5", "--steps", "60"]
    p = Params(n=16, d=400, m=10, activation="relu^3", train_v=False, eta=0.5, steps=60)
    g = simulate_general(p, load_npz(path, p))
    y0 = g.y[0]
    assert rel(g.pre[:, :, :, 0, 0] * y0, logs["log_mu"]) < 1e-9
    assert rel(g.pre[..., 1], logs["log_xi"]) < 1e-9
    assert rel(g.loss, logs["losses"]) < 1e-9
    assert logs["losses"][-1] < 0.01 * logs["losses"][0]  # it trained
    out = str(tmp_path / "cmp.nc")
    r = CliRunner().invoke(main, ["compare", "--data", path, "--level", "general",
                                  "--out", out] + args)
    assert r.exit_code == 0, r.output
    from compare.dataset import read_netcdf
    assert float(read_netcdf(out).max_rel_err.max()) < 1e-10


@pytest.mark.parametrize("act", ["relu", "relu^3", "leaky:0.1"])
def test_sympy_derivation_matches_the_general_kernel(act):
    """The recursion derived by sympy for the activation (docs/theory.md#exact-recursion generalised:
    per-sample dgamma_i, drho_i, dv_i) equals one step of the general level on
    the paper's data (mu orthogonal to the noise)."""
    from dynamics.theory.symbolic import increment_funcs
    p = Params(d=300, n=10, m=4, v0=0.7, mu_norm=2.0, eta=0.1, steps=1, activation=act,
               seed=5)
    data = model_data(p, "wishart")
    g = simulate_general(p, data)
    code, a = activation_code(p)
    s0, z0 = g.pre[0, ..., 0], g.pre[0, ..., 1]
    js = np.array([1.0, -1.0])[:, None, None]
    v = g.v[0]
    f = p.c * np.sum(js * (v[..., 0:1] * activation(s0, code, a)
                           + v[..., 1:2] * activation(z0, code, a)), axis=(0, 1))
    y, yhat = data.y, data.yhat
    lp = -1.0 / (1.0 + np.exp(y * f))
    xi = data.x[:, 1, :]
    gram = xi @ xi.T
    N = np.diag(gram)
    dg, dr, d1, d2 = increment_funcs(act)(js, y, yhat, s0, z0, v[..., 0:1], v[..., 1:2], lp,
                                          N, p.mu_norm, p.eta, p.eta_v_eff, p.c, p.n)
    bc = lambda x: np.broadcast_to(x, s0.shape)  # noqa: E731
    dv = np.stack([bc(d1).sum(-1), bc(d2).sum(-1)], axis=-1)
    assert rel(g.v[1] - g.v[0], dv) < 1e-10
    # s(1) - s(0) = yhat_i j dgamma;  z(1) - z(0) = sum_k drho_k <xi_k, xi_i> / N_k
    ds = (g.pre[1, ..., 0] - s0) * yhat * js
    assert rel(ds, np.broadcast_to(bc(dg).sum(-1)[..., None], ds.shape)) < 1e-8
    assert rel(g.pre[1, ..., 1] - z0, (bc(dr) / N) @ gram) < 1e-8


@pytest.mark.parametrize("act", ["relu^3", "leaky:0.1"])
@pytest.mark.parametrize("sampler", ["data", "wishart"])
def test_paper_levels_take_any_activation(act, sampler):
    """Levels exact and fixed-output with another activation equal the general
    level on the same realisation (the paper's data) to round-off."""
    for seed, v0, flip, train_v in ((0, 1e-3, 0.0, True), (1, 1.0, 0.1, True),
                                    (2, 0.05, 0.0, False)):
        p = Params(d=300, seed=seed, v0=v0, flip=flip, steps=150, activation=act,
                   mu_norm=6.0, train_v=train_v)
        g, e = simulate_general(p, sampler=sampler), simulate(p, "exact", sampler)
        s, z, f = e.preactivations()
        assert rel(g.pre, np.stack([s, z], axis=-1)) < 1e-12
        assert rel(g.v, e.v) < 1e-12 and rel(g.loss, e.loss) < 1e-12
        assert g.test_error == e.test_error


def test_compare_paper_level_with_activation_against_the_network():
    r = CliRunner().invoke(main, ["compare", "--level", "exact", "--activation", "leaky:0.1",
                                  "--d", "300", "--steps", "100"])
    assert r.exit_code == 0, r.output
    row = [ln for ln in r.output.splitlines() if ln.startswith("pre ")][0]
    assert float(row.split()[1]) < 1e-10


def test_flow_and_limit_run_with_leaky_relu():
    """The normalised flow and the limit program take the leaky activation
    (2-homogeneous units): finite outputs, a certified limit, and the flow's
    loss driven to ~0 at a late time."""
    from dynamics.run import simulate_flow
    p = Params(d=400, n=10, m=5, v0=1.0, mu_norm=8.0, activation="leaky:0.1")
    tr = simulate_flow(p, "exact", "wishart", times=[200.0, 1e30, float("inf")])
    assert tr.extra["limit"]["certified"] == 1 and np.isfinite(tr.test_error)
    assert tr.loss[1] < 1e-20 < tr.loss[0] and np.all(np.isfinite(tr.rho))


@pytest.mark.parametrize("act,train_v", [("relu", True), ("relu", False),
                                         ("relu^3", False), ("leaky:0.1", True)])
def test_checkpoint_results_agree_across_levels_incl_margin(act, train_v):
    """Sweep kernels of general, exact and the network measure the same test
    error, loss, train error and normalised margin min y f / ||theta||^h (h
    counts v only when it is trained) at every checkpoint; the general level's
    one-thread kernel gives the same bits as the parallel one."""
    from compare.boundaries import run_jobs
    from dynamics.batch import RESULTS, seed_list
    p = Params(d=400, n=10, m=6, steps=80, v0=0.3, activation=act, train_v=train_v)
    seeds = seed_list(p, 2)
    job_seed, job_mu, job_v0 = np.array([0, 1, 0, 1]), np.array([2.0, 2.0, 7.0, 7.0]), None
    cp = np.array([0, 40, 80])
    res = {(lvl, par): run_jobs(RunSpec(p, lvl, "data", seeds, cp), job_seed, job_mu, job_v0,
                                parallel=par)
           for lvl, par in (("general", True), ("general", False), ("exact", True))}
    if act == "relu":
        res[("full", True)] = run_jobs(RunSpec(p, "full", "data", seeds, cp), job_seed, job_mu,
                                       job_v0)
    g = res[("general", True)]
    assert np.all(np.isfinite(g["margin"])) and np.all(g["status"][:, 1] == 0)
    for k in RESULTS:
        np.testing.assert_array_equal(g[k], res[("general", False)][k])
        for key in res:
            np.testing.assert_allclose(res[key][k], g[k], rtol=1e-9, atol=1e-14,
                                       err_msg=f"{k} of {key}")


@pytest.mark.parametrize("sampler,signal", [("data", "e1"), ("data", "random"),
                                            ("wishart", "e1")])
def test_noise_component_along_the_signal(sampler, signal):
    """Projected noise has no component along the signal direction u; isotropic
    noise has one of law N(0, sigma_p^2) (both samplers, both signal choices)."""
    comps = {}
    for model in ("projected", "isotropic"):
        vals = []
        for seed in range(40):
            p = Params(d=60, n=10, m=3, seed=seed, noise_model=model, signal=signal)
            dt = model_data(p, sampler)
            (s,) = dt.signal_patches
            u = dt.x[0, s] / np.linalg.norm(dt.x[0, s])
            noise = dt.x[:, 1 - s]
            vals.append(noise @ u)
        comps[model] = np.concatenate(vals)
    sp = Params().sigma_p
    assert np.max(np.abs(comps["projected"])) < 1e-12 * sp
    assert sps.kstest(comps["isotropic"] / sp, "norm").pvalue > 0.01


def test_cli_refuses_options_the_family_path_would_ignore():
    r = CliRunner().invoke(main, ["simulate", "--level", "general", "--d", "200",
                                  "--times", "10,20"])
    assert r.exit_code == 2 and "--times needs --integrator flow" in r.output
    r = CliRunner().invoke(main, ["compare", "--level", "exact", "--activation", "leaky:0.1",
                                  "--integrator", "flow", "--d", "200", "--steps", "20"])
    assert r.exit_code == 2 and "integrator" in r.output and "runs GD" in r.output
    assert "Traceback" not in r.output
    r = CliRunner().invoke(main, ["compare", "--level", "exact", "--noise-model",
                                  "isotropic", "--d", "200", "--steps", "20"])
    assert r.exit_code == 2 and "--level general" in r.output and "or full" not in r.output
    r = CliRunner().invoke(main, ["phase", "--level", "general", "--sampler", "wishart",
                                  "--signal", "random", "--x", "mu=1..3:2", "--y", "v0=0.1..1:2",
                                  "--out", "unused-phase-dir"])
    assert r.exit_code == 2 and "rotation invariant" in r.output, r.output
