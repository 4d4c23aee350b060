"""Hostile inputs and hostile environments, at tiny sizes.

Divergence, out-of-range and oversized values, refused option combinations,
bad output paths (all one-line errors before any computation), file modes,
attributes that record the command line, diverged sweep cells, concurrent
sweeps on one folder, and SIGTERM in the middle of a sweep.
"""
import os
import signal
import stat
import subprocess
import sys
import time

import numpy as np
import pytest

from compare.dataset import read_netcdf, write_netcdf
from compare.phase import make_spec, parse_axis, run_phase
from dynamics import Params
from dynamics.spec import RunSpec
from helpers import default_signals

TINY = ["--n", "8", "--m", "4", "--d", "200", "--steps", "30", "--n-test", "200"]
# `dyn` in a fresh interpreter (the venv's entry-point script may predate the move
# of the CLI to compare.cli; this runs the same click group)
DYN = [sys.executable, "-c", "import sys; from compare.cli import main; sys.exit(main())"]
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def temporaries(folder):
    """Leftover temporary files anywhere under ``folder``."""
    bad = []
    for root, dirs, files in os.walk(folder):
        for name in files + dirs:
            if ".tmp" in name or name.endswith(("tmp", ".partial")):
                bad.append(os.path.relpath(os.path.join(root, name), folder))
    return bad


# ---------------------------------------------------------------- divergence
@pytest.mark.parametrize("level", ["exact", "full"])
def test_large_eta_diverges_with_step_and_hint(level, cli, one_line_error):
    res = cli("simulate", *TINY, "--eta", "100", "--level", level, "--sampler", "data")
    line = one_line_error(res, code=1)
    assert f"{level} run diverged at step" in line
    step = int(line.split("diverged at step ")[1].split(":")[0])
    assert step >= 1
    assert "smaller --eta (now 100)" in line


def test_huge_eta_v_is_refused_and_large_eta_v_diverges(cli, one_line_error):
    line = one_line_error(cli("simulate", *TINY, "--eta-v", "1e300"), code=2)
    assert "--eta-v" in line
    line = one_line_error(cli("simulate", *TINY, "--eta-v", "1e4", "--v0", "10"), code=1)
    assert "diverged at step" in line and "smaller --eta-v (now 10000)" in line


@pytest.mark.parametrize("level", ["exact", "full"])
def test_initial_scale_diverges_at_step_zero(level, cli, one_line_error):
    res = cli("simulate", *TINY, "--v0", "1e6", "--c", "1e6", "--level", level,
              "--sampler", "data")
    line = one_line_error(res, code=1)
    assert "diverged at step 0:" in line
    assert "initial network" in line and "--v0" in line and "--c" in line


# ---------------------------------------------------------------- bounds
@pytest.mark.parametrize("flag,value", [("--mu", "1e155"), ("--n-test", "100000000"),
                                        ("--steps", "1000000001"), ("--sigma0", "1e300"),
                                        ("--v0", "1e7"), ("--c", "1e300"),
                                        ("--d", "10000000000000")])
def test_out_of_range_is_a_one_line_usage_error(flag, value, cli, one_line_error):
    line = one_line_error(cli("simulate", *TINY, flag, value), code=2)
    assert flag in line


LIMITED = """
import resource, sys
limit = 2 * 2**30  # address space: far below what the refused runs would need
resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
from compare.cli import main
sys.exit(main())
"""


@pytest.mark.parametrize("args,needle", [
    pytest.param(["--steps", "1000000000"], "--steps 1000000000",
                 id="steps-exact"),
    pytest.param(["--steps", "1000000000", "--level", "full", "--sampler", "data"],
                 "--steps 1000000000", id="steps-full"),
    pytest.param(["--steps", "30", "--d", "1000000000000", "--sampler", "data"],
                 "d=1000000000000", id="d-data"),
    pytest.param(["--steps", "30", "--d", "1000000000000", "--level", "full"],
                 "d=1000000000000", id="d-full"),
])
def test_memory_guards_refuse_without_allocating(args, needle):
    """The guard answers first: under a 2 GiB address-space limit the error is the
    guard's own one-line message, not numpy failing to allocate."""
    small = ["--n", "8", "--m", "4", "--d", "200", "--n-test", "200"]
    res = subprocess.run([sys.executable, "-c", LIMITED, "simulate", *small, *args],
                         capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert res.returncode == 1, res.stdout + res.stderr
    lines = [ln for ln in res.stderr.splitlines() if ln.startswith("Error:")]
    assert len(lines) == 1 and "Traceback" not in res.stderr, res.stderr
    assert "GiB" in lines[0] and "may be used" in lines[0] and needle in lines[0], lines[0]
    assert "Unable to allocate" not in lines[0]


# ---------------------------------------------------------------- refused combinations
def test_solve_refuses_mu(cli, one_line_error, tmp_path):
    res = cli("solve", *TINY, "--mu", "3", "--d-grid", "none", "--n-grid", "none",
              "--no-verify", "--seeds", "2", "--quiet", "--out", tmp_path / "s")
    line = one_line_error(res, code=2)
    assert "--mu" in line and "searches over ||mu||" in line
    assert not (tmp_path / "s").exists()


def test_phase_refuses_a_value_for_a_swept_parameter(cli, one_line_error, tmp_path):
    res = cli("phase", *TINY, "--v0", "7", "--x", "v0=0.01..1:3", "--y", "mu=1..10:2",
              "--seeds", "1", "--quiet", "--out", tmp_path / "p")
    line = one_line_error(res, code=2)
    assert "--v0" in line and "swept" in line
    res = cli("phase", *TINY, "--eta", "0.1", "--x", "v0=0.01..1:3", "--y", "eta=0.01..0.02:2",
              "--seeds", "1", "--quiet", "--out", tmp_path / "p")
    line = one_line_error(res, code=2)
    assert "--eta" in line and "--y" in line
    assert not (tmp_path / "p").exists()


# ---------------------------------------------------------------- output paths
COMMANDS = {  # command -> (arguments, kind of --out, library call that computes)
    "simulate": (["simulate", *TINY], "file", ("dynamics.run", "simulate")),
    "compare": (["compare", *TINY], "file", ("compare.verify", "run_pair")),
    "solve": (["solve", *TINY, "--seeds", "2", "--d-grid", "none", "--n-grid", "none",
               "--no-verify", "--quiet"], "dir", ("compare.solve", "solve")),
    "phase": (["phase", *TINY, "--x", "v0=0.01..1:2", "--y", "mu=1..10:2", "--seeds", "1",
               "--quiet"], "dir", ("compare.phase", "run_phase")),
}


@pytest.fixture
def no_compute(monkeypatch):
    """Make every computing entry point fail loudly: errors must come first."""
    import importlib

    def forbid(*a, **k):
        raise AssertionError("computation started before the output path was checked")
    for _, _, (mod, name) in COMMANDS.values():
        monkeypatch.setattr(importlib.import_module(mod), name, forbid)


def _bad_out_line(res, one_line_error, user_path):
    line = one_line_error(res, code=2)
    assert "--out" in line
    assert ".tmp" not in line  # never the name of a temporary
    if user_path:
        assert user_path in line
    return line


@pytest.mark.parametrize("command", COMMANDS)
def test_empty_out_refused(command, cli, one_line_error, no_compute):
    args = COMMANDS[command][0]
    line = _bad_out_line(cli(*args, "--out", ""), one_line_error, None)
    assert "empty" in line


@pytest.mark.parametrize("command", COMMANDS)
def test_out_under_a_file_refused(command, cli, one_line_error, no_compute, tmp_path):
    args, kind, _ = COMMANDS[command]
    afile = tmp_path / "afile"
    afile.write_text("not a folder")
    target = str(afile / ("x.nc" if kind == "file" else "out"))
    line = _bad_out_line(cli(*args, "--out", target), one_line_error, target)
    assert "is a file" in line
    assert afile.read_text() == "not a folder"


@pytest.mark.parametrize("command", COMMANDS)
def test_out_of_the_wrong_kind_refused(command, cli, one_line_error, no_compute, tmp_path):
    args, kind, _ = COMMANDS[command]
    if kind == "file":
        target = tmp_path / "adir"
        target.mkdir()
        line = _bad_out_line(cli(*args, "--out", target), one_line_error, str(target))
        assert "is a directory" in line
    else:
        target = tmp_path / "afile"
        target.write_text("x")
        line = _bad_out_line(cli(*args, "--out", target), one_line_error, str(target))
        assert "not a directory" in line


@pytest.mark.parametrize("command", COMMANDS)
def test_out_in_a_read_only_folder_refused(command, cli, one_line_error, no_compute,
                                           tmp_path):
    args, kind, _ = COMMANDS[command]
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        if os.access(ro, os.W_OK):
            pytest.skip("running as root: a 0555 folder is still writable")
        target = str(ro / ("x.nc" if kind == "file" else "out"))
        line = _bad_out_line(cli(*args, "--out", target), one_line_error, target)
        assert "not writable" in line
        assert os.listdir(ro) == []
    finally:
        ro.chmod(0o755)


@pytest.mark.parametrize("command", COMMANDS)
def test_out_where_no_file_can_be_made_refused(command, cli, one_line_error, no_compute):
    """/proc passes os.access for root but takes no new files: the probe file finds it."""
    if not os.path.isdir("/proc/self"):
        pytest.skip("no /proc")
    args, kind, _ = COMMANDS[command]
    target = "/proc/dyn-out" + (".nc" if kind == "file" else "")
    line = _bad_out_line(cli(*args, "--out", target), one_line_error, target)
    assert "refuses new files" in line or "not writable" in line


@pytest.mark.parametrize("args,flag,needle", [
    (["compare", *TINY, "--tol", "nan"], "--tol", "not a finite"),
    (["theory", *TINY, "--no-formulas", "--quiet", "--tol", "nan"], "--tol", "not a finite"),
    (["solve", *TINY, "--seeds", "2", "--d-grid", "none", "--n-grid", "none", "--no-verify",
      "--quiet", "--threshold", "1e-4"], "--threshold", "1/n_test = 0.005"),
    (["phase", *TINY, "--x", "v0=0.01..1:2", "--y", "mu=1..10:2", "--seeds", "1", "--quiet",
      "--threshold", "1e-300"], "--threshold", "1/n_test = 0.005"),
    (["solve", *TINY, "--seeds", "2", "--d-grid", "none", "--n-grid", "none", "--no-verify",
      "--quiet", "--times", "0,30"], "--times", "times >= 1"),
    (["phase", *TINY, "--n", "100000", "--x", "v0=0.01..1:2", "--y", "mu=1..10:2",
      "--seeds", "1", "--quiet"], "--d", "2m + n"),  # names --d, not the v0 axis
    (["solve", *TINY, "--seeds", "2", "--n-grid", "none", "--no-verify", "--quiet",
      "--d-grid", "400,200"], "--d-grid", "strictly ascending"),
    (["solve", *TINY, "--seeds", "2", "--n-grid", "none", "--no-verify", "--quiet",
      "--d-grid", "400"], "--d-grid", "at least 2 values"),
    (["phase", *TINY, "--x", "v0=1..0.1:3", "--y", "mu=1..10:2"], "--x", "'v0=1..0.1:3'"),
    (["simulate", *TINY, "--sigma-u", "0.5"], "--sigma-u", "--depth >= 2"),
    (["simulate", *TINY, "--eta-v", "0.1", "--no-train-v"], "--eta-v", "frozen"),
    (["simulate", *TINY, "--level", "fixed-output", "--train-v"], "--train-v", "freezes"),
    (["compare", *TINY, "--level", "fixed-output", "--eta-v", "0.1"], "--eta-v", "freezes"),
    (["simulate", *TINY, "--sigma0", "1e-320"], "--sigma0", "1e-30"),
    (["solve", *TINY, "--no-verify", "--v0", "1e-40"], "--v0", "1e-30"),
    (["solve", *TINY, "--no-verify", "--v0", "0.1", "--v0", "0.1"], "--v0", "more than once"),
    (["compare", *TINY, "--integrator", "flow", "--record-every", "5"], "--record-every",
     "no effect"),
    (["solve", *TINY, "--no-verify", "--verify-seeds", "5"], "--verify-seeds", "no effect"),
    (["theory", *TINY, "--no-formulas", "--quiet", "--optimizer", "momentum:0.9"],
     "--optimizer", "plain GD"),
])
def test_meaningless_settings_refused(args, flag, needle, cli, one_line_error, tmp_path):
    """Settings whose result would not mean anything (nan tolerance, a threshold
    below the test-error resolution, a boundary at t = 0) are usage errors."""
    out = ["--out", tmp_path / "o"] if args[0] in ("solve", "phase") else []
    line = one_line_error(cli(*args, *out), code=2)
    assert flag in line and needle in line, line


def test_write_failure_names_the_path_and_leaves_no_temporary(tmp_path, monkeypatch):
    import xarray as xr

    def disk_full(self, path, *a, **k):
        with open(path, "wb") as fh:
            fh.write(b"partial")
        raise RuntimeError("NetCDF: HDF error")  # how netCDF4 reports a full disk
    monkeypatch.setattr(xr.Dataset, "to_netcdf", disk_full)
    target = tmp_path / "out.nc"
    with pytest.raises(OSError) as exc:
        write_netcdf(xr.Dataset({"a": ("x", [1.0])}), target)
    assert str(target) in str(exc.value) and "tmp" not in str(exc.value).replace(
        str(tmp_path), "")
    assert os.listdir(tmp_path) == []


def test_interrupted_write_leaves_no_temporary(tmp_path, monkeypatch):
    import xarray as xr

    def interrupted(self, path, *a, **k):
        open(path, "wb").close()
        raise KeyboardInterrupt
    monkeypatch.setattr(xr.Dataset, "to_netcdf", interrupted)
    with pytest.raises(KeyboardInterrupt):
        write_netcdf(xr.Dataset({"a": ("x", [1.0])}), tmp_path / "out.nc")
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("umask,mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_written_files_respect_the_umask(umask, mode, cli, tmp_path):
    old = os.umask(umask)
    try:
        out = tmp_path / "x.nc"
        res = cli("simulate", *TINY, "--out", out)
        assert res.exit_code == 0, res.output
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(out).st_mode) == mode
    assert temporaries(tmp_path) == []


# ---------------------------------------------------------------- attributes
def test_solve_attributes_record_the_command_line(cli, tmp_path):
    given = {"--v0": "1", "--n": "30", "--m": "4", "--d": "200", "--steps": "30",
             "--n-test": "200", "--eta": "0.02", "--sigma0": "0.02", "--c": "0.5",
             "--seed": "3", "--flip": "0.05"}
    args = [x for kv in given.items() for x in kv]
    out = tmp_path / "s"
    res = cli("solve", *args, "--seeds", "2", "--d-grid", "none", "--n-grid", "none",
              "--no-verify", "--quiet", "--out", out)
    assert res.exit_code == 0, res.output
    ds = read_netcdf(out / "solve.nc")
    from dynamics.params import PARAMS
    by_flag = {p.flag: p for p in PARAMS}
    for flag, text in given.items():
        spec = by_flag[flag]
        assert ds.attrs[spec.name] == spec.kind(text), (flag, ds.attrs[spec.name])
    assert ds.attrs["v0"] == 1 and ds.attrs["n"] == 30
    assert int(ds.attrs["n_seeds"]) == 2 and ds.attrs["level"] == "exact"
    assert "mu_norm" not in ds.attrs  # searched, not set
    assert ds.attrs["swept_parameters"].split() == ["mu_norm"]
    p = Params.from_attrs(ds.attrs)
    assert (p.v0, p.n, p.seed, p.c) == (1.0, 30, 3, 0.5)


# ---------------------------------------------------------------- sweeps
@pytest.mark.parametrize("axes", [
    ("v0=0.01..1:2", "mu=1..10:2"),
    ("v0=0.01..1:2", "sigma0=0.01..0.1:2"),
], ids=["mu-axis", "sigma0-axis"])
def test_phase_reports_diverged_cells(axes, cli, tmp_path):
    out = tmp_path / "d"
    res = cli("phase", *TINY, "--eta", "1e3", "--x", axes[0], "--y", axes[1], "--seeds", "2",
              "--quiet", "--out", out)
    assert res.exit_code == 0, res.output
    ds = read_netcdf(out / "phase.nc")
    n_div = int(ds.attrs["n_diverged"])
    assert n_div > 0 and n_div == int(ds.test_error.isnull().sum().values)
    assert n_div == int(ds.n_diverged.sum())
    assert (ds.status.sel(status_field="step").values[ds.test_error.isnull().any("steps")]
            >= 0).all()
    warn = [ln for ln in res.output.splitlines() if "WARNING" in ln]
    assert len(warn) == 1 and str(n_div) in warn[0] and "--eta" in warn[0]


# A sweep slow enough to be caught in the middle: 6 rows of ~0.3 s.
SLOW_X, SLOW_Y, SLOW_SEEDS, SLOW_STEPS = "v0=0.01..1:6", "eta=0.001..0.004:4", 4, 10000
SLOW_ARGS = ["phase", "--n", "8", "--m", "4", "--d", "200", "--n-test", "200",
             "--steps", str(SLOW_STEPS), "--x", SLOW_X, "--y", SLOW_Y,
             "--seeds", str(SLOW_SEEDS), "--quiet"]
VARS = ("test_error", "loss", "train_error", "margin", "status", "point_seed",
        "test_error_mean", "n_diverged", "fitted")


@pytest.fixture(scope="module")
def slow_reference(tmp_path_factory):
    """The slow sweep run uninterrupted, in process (same spec as the CLI builds)."""
    p = Params(n=8, m=4, d=200, n_test=200, steps=SLOW_STEPS)
    spec = make_spec(RunSpec(p, "exact", "wishart", SLOW_SEEDS), parse_axis(SLOW_X),
                     parse_axis(SLOW_Y), tau=0.25)
    return run_phase(spec, tmp_path_factory.mktemp("reference"))


def start_slow_sweep(out):
    return subprocess.Popen(DYN + SLOW_ARGS + ["--out", str(out)], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for(cond, proc, timeout=120.0):
    t0 = time.monotonic()
    while not cond():
        if proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"sweep exited {proc.returncode} early:\n{out}\n{err}")
        if time.monotonic() - t0 > timeout:
            proc.kill()
            pytest.fail("timed out waiting for the sweep")
        time.sleep(0.02)


def rows_done(out):
    """Finished rows of OUT/phase.zarr (without taking the lock)."""
    import zarr
    try:
        return int((zarr.open_array(str(out / "phase.zarr"), path="_row_done",
                                    mode="r")[:] == 1).sum())
    except Exception:
        return 0


def assert_same_sweep(ds, ref):
    for k in VARS:
        np.testing.assert_array_equal(ds[k].values, ref[k].values, err_msg=k)
    assert ds.attrs["fingerprint"] == ref.attrs["fingerprint"]


def test_second_sweep_on_the_same_folder_is_refused(tmp_path, slow_reference, cli):
    out = tmp_path / "busy"
    first = start_slow_sweep(out)
    try:
        wait_for(lambda: (out / "phase.zarr").is_dir(), first)
        second = cli(*SLOW_ARGS, "--out", out)
        running = first.poll() is None
        if second.exit_code != 0:
            assert second.exit_code == 1, second.output
            assert "in use" in second.output and "Traceback" not in second.output
        else:  # only possible when the first had already finished
            assert not running
        stdout, stderr = first.communicate(timeout=300)
    finally:
        if first.poll() is None:
            first.kill()
    assert first.returncode == 0, stderr
    assert running or second.exit_code == 0
    assert_same_sweep(read_netcdf(out / "phase.nc"), slow_reference)
    assert temporaries(out) == []


def test_sigterm_mid_sweep_then_resume(tmp_path, slow_reference, cli):
    out = tmp_path / "term"
    proc = start_slow_sweep(out)
    try:
        wait_for(lambda: rows_done(out) >= 1, proc)
        proc.send_signal(signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode != 0, "the sweep finished before SIGTERM arrived"
    assert "Traceback" not in stderr, stderr
    done = rows_done(out)
    assert 1 <= done < 6, done
    assert not (out / "phase.nc").exists()
    # the lock died with the process; the resume computes only the missing rows
    res = cli(*SLOW_ARGS, "--out", out)
    assert res.exit_code == 0, res.output
    assert_same_sweep(read_netcdf(out / "phase.nc"), slow_reference)
    assert temporaries(out) == []


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_stops_a_long_kernel_at_once(sig, tmp_path):
    """Ctrl-C / SIGTERM end a run that sits in one long Numba kernel (~100 s
    here) within seconds, and leave no output file behind."""
    out = tmp_path / "long.nc"
    proc = subprocess.Popen(DYN + ["simulate", "--n", "8", "--m", "4", "--d", "50",
                                   "--steps", "100000000", "--record-every", "100000000",
                                   "--out", str(out)], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=default_signals)
    try:
        time.sleep(4.0)  # imports done, inside the kernel
        assert proc.poll() is None, proc.communicate()
        t0 = time.monotonic()
        proc.send_signal(sig)
        proc.communicate(timeout=20)
        assert time.monotonic() - t0 < 10.0
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode != 0
    assert not out.exists() and temporaries(tmp_path) == []


# ---------------------------------------------------------------- checked up front
@pytest.mark.parametrize("args,flag,needle", [
    (["phase", "--n", "8", "--m", "4", "--steps", "30", "--n-test", "200",
      "--x", "d=5..100:3", "--y", "mu=1..10:2"], "--x", "d=5"),
    (["phase", "--m", "4", "--d", "200", "--steps", "30", "--n-test", "200", "--level", "full",
      "--x", "n=100..300:3", "--y", "mu=1..10:2"], "--x", "n=300"),
    (["solve", *TINY, "--d-grid", "10,200", "--n-grid", "none", "--no-verify"],
     "--d-grid", "10"),
    (["solve", *TINY, "--n-grid", "8,300", "--d-grid", "none", "--no-verify"],
     "--n-grid", "300"),
], ids=["phase-d-wishart", "phase-n-data", "solve-d-grid", "solve-n-grid"])
def test_grid_values_checked_against_the_sampler_up_front(args, flag, needle, cli,
                                                          one_line_error, tmp_path):
    res = cli(*args, "--quiet", "--out", tmp_path / "o")
    line = one_line_error(res, code=2)
    assert flag in line and needle in line
    assert not (tmp_path / "o").exists()




@pytest.mark.parametrize("args", [
    ["simulate", *TINY],
    ["solve", *TINY, "--d-grid", "none", "--n-grid", "none", "--no-verify"],
    pytest.param(["solve", *TINY, "--no-verify"], id="solve-default-grids"),
    pytest.param(["phase", *TINY], id="phase"),
], ids=["simulate", "solve-no-grids", "solve-default-grids", "phase"])
def test_noise_sampler_mismatch_names_the_sampler(args, cli, one_line_error, tmp_path):
    out = tmp_path / ("o.nc" if args[0] == "simulate" else "o")
    res = cli(*args, "--noise", "rademacher", "--out", out)
    line = one_line_error(res, code=2)
    assert "--sampler" in line and "gaussian" in line


@pytest.mark.parametrize("command", ["solve", "phase"])
def test_times_must_ascend(command, cli, one_line_error, tmp_path):
    line = one_line_error(cli(command, *TINY, "--times", "10,5", "--out", tmp_path / "o"),
                          code=2)
    assert "--times" in line and "ascending" in line


def test_refused_second_sweep_leaves_the_running_ones_files_alone(cli, tmp_path):
    from compare.phase import open_store
    out = tmp_path / "busy"
    args = ["phase", *TINY, "--x", "v0=0.01..1:2", "--y", "mu=1..10:2", "--seeds", "1",
            "--quiet"]
    spec = make_spec(RunSpec(Params(n=8, m=4, d=200, steps=30, n_test=200), "exact", "wishart",
                             1), parse_axis("v0=0.01..1:2"), parse_axis("mu=1..10:2"), tau=0.25)
    with open_store(spec, out):  # a running `dyn phase`, now writing phase.nc
        inflight = out / ".phase.nc.k2j4h1.nc.tmp"  # atomic_target's temporary
        inflight.write_bytes(b"half of a netCDF file")
        res = cli(*args, "--out", out)
        assert res.exit_code == 1 and "in use" in res.output, res.output
        assert inflight.exists(), "the refused process deleted the running one's file"
