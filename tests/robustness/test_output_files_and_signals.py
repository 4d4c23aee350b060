"""Output files (devices, FIFOs, foreign files), record_every, signals
during writes, API validation, at tiny sizes.

Outputs: a device, FIFO or folder given as --out is refused, and so is a
regular file that is not a dyn output (never silently replaced); the
recording interval has one validator for the CLI and every API entry (no
kernel writes outside its arrays); Ctrl-C / SIGTERM during the netCDF write
end the process promptly, non-zero, without a temporary file; only dyn's own
temporaries are cleaned up; --times must be distinct (inf, inf); the memory
check of the general level comes before any allocation; the API validates
like the CLI; NUMBA_NUM_THREADS=0 and spec_json.
"""
import json
import math
import os
import random
import signal
import stat
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from dynamics import Params
from dynamics.params import ParamError
from helpers import default_signals

B = ["--d", "100", "--n", "10", "--m", "5", "--n-test", "100"]
SMALL = dict(d=100, n=10, m=5, steps=20, n_test=100)
# `dyn` in a fresh interpreter (the click group of the entry point)
DYN = [sys.executable, "-c", "import sys; from compare.cli import main; sys.exit(main())"]
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def leftovers(folder):
    """Temporary files (ours or anything that looks like one) under ``folder``."""
    return [name for name in os.listdir(folder)
            if ".tmp" in name or name.endswith("tmp") or ".dyn-" in name]


def run_python(code, timeout=120, env=None):
    """Run ``code`` in a fresh interpreter (a segfault fails the test, not the suite)."""
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                          text=True, cwd=ROOT, timeout=timeout, env=env)


# ---------------------------------------------------------------- High 1: --out targets
@pytest.fixture
def no_compute(monkeypatch):
    """The output check must answer before any computation."""
    import dynamics.run
    import compare.verify

    def forbid(*a, **k):
        raise AssertionError("computation started before --out was checked")
    monkeypatch.setattr(dynamics.run, "simulate", forbid)
    monkeypatch.setattr(compare.verify, "run_pair", forbid)


def null_device(tmp_path):
    """A character device to aim --out at: a private null device (1, 3) when we
    may create one (root), else /dev/null (if it is still a device)."""
    try:
        dev = tmp_path / "null"
        os.mknod(dev, stat.S_IFCHR | 0o666, os.makedev(1, 3))
        return str(dev)
    except (OSError, AttributeError):
        if not stat.S_ISCHR(os.stat("/dev/null").st_mode):
            pytest.skip("/dev/null is not a character device on this machine")
        return "/dev/null"


@pytest.mark.parametrize("command", ["simulate", "compare"])
def test_out_device_is_refused_and_stays_a_device(command, cli, one_line_error, no_compute,
                                                  tmp_path):
    """`dyn simulate B --steps 20 --out /dev/null` (as root) made /dev/null a regular file."""
    dev = null_device(tmp_path)
    line = one_line_error(cli(command, *B, "--steps", "20", "--out", dev), code=2)
    assert "--out" in line and dev in line and "not a regular file" in line, line
    assert "character device" in line, line
    assert stat.S_ISCHR(os.stat(dev).st_mode)


@pytest.mark.parametrize("command", ["simulate", "compare"])
def test_out_fifo_is_refused_and_stays_a_fifo(command, cli, one_line_error, no_compute,
                                              tmp_path):
    fifo = tmp_path / "pipe.nc"
    os.mkfifo(fifo)
    line = one_line_error(cli(command, *B, "--steps", "20", "--out", fifo), code=2)
    assert "--out" in line and "not a regular file" in line and "FIFO" in line, line
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("content", [b"my notes, not a netCDF file\n",
                                     b"CDF\x01 looks like netCDF but is not one"])
@pytest.mark.parametrize("command", ["simulate", "compare"])
def test_out_foreign_regular_file_is_not_replaced(command, content, cli, one_line_error,
                                                  no_compute, tmp_path):
    mine = tmp_path / "results.nc"
    mine.write_bytes(content)
    line = one_line_error(cli(command, *B, "--steps", "20", "--out", mine), code=2)
    assert "--out" in line and str(mine) in line, line
    assert "not a dyn output" in line and "remove it or choose another" in line, line
    assert mine.read_bytes() == content


def test_out_netcdf_without_dyn_attributes_is_not_replaced(cli, one_line_error, no_compute,
                                                          tmp_path):
    import xarray as xr
    theirs = tmp_path / "theirs.nc"
    xr.Dataset({"a": ("x", [1.0, 2.0])}, attrs={"title": "someone else's"}).to_netcdf(theirs)
    before = theirs.read_bytes()
    line = one_line_error(cli("simulate", *B, "--steps", "20", "--out", theirs), code=2)
    assert "not a dyn output" in line, line
    assert theirs.read_bytes() == before


def test_dyn_output_and_empty_file_are_replaced(cli, tmp_path):
    from compare.dataset import read_netcdf
    out = tmp_path / "x.nc"
    out.write_bytes(b"")  # e.g. `touch x.nc`: nothing to lose
    first = cli("simulate", *B, "--steps", "20", "--out", out)
    assert first.exit_code == 0, first.output
    second = cli("simulate", *B, "--steps", "20", "--seed", "1", "--out", out)
    assert second.exit_code == 0, second.output  # a dyn output is replaced
    assert read_netcdf(out).attrs["seed"] == 1
    assert leftovers(tmp_path) == []


def test_api_write_refuses_device_fifo_and_foreign_file(tmp_path):
    import xarray as xr
    from compare.dataset import write_netcdf
    from dynamics.files import atomic_target
    ds = xr.Dataset({"a": ("x", [1.0])})
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    foreign = tmp_path / "notes.nc"
    foreign.write_text("keep me")
    dev = null_device(tmp_path)
    for target, needle in ((dev, "character device"), (fifo, "FIFO"),
                           (tmp_path, "not a regular file"), (foreign, "not a dyn output")):
        with pytest.raises(ParamError, match=needle) as exc:
            write_netcdf(ds, target)
        assert exc.value.param == "out"
    with pytest.raises(ParamError, match="not a regular file"):
        with atomic_target(fifo):
            raise AssertionError("atomic_target must refuse before yielding")
    assert stat.S_ISFIFO(os.stat(fifo).st_mode) and foreign.read_text() == "keep me"
    assert stat.S_ISCHR(os.stat(dev).st_mode)
    assert sorted(os.listdir(tmp_path)) == sorted(["fifo", "notes.nc"] + (
        ["null"] if dev != "/dev/null" else []))


# ---------------------------------------------------------------- High 2: record_every
RECORD_EVERY_PROBE = """
import json, math
from dynamics import Params
from dynamics.params import ParamError
from dynamics.run import simulate
from dynamics.general import simulate_general
from fullsim import simulate_full
from fullsim.patches import simulate_full_patches
p = Params(d=100, n=10, m=5, steps=20, n_test=100)
entries = {
    "simulate": lambda k: simulate(p, "exact", "wishart", record_every=k),
    "simulate_full": lambda k: simulate_full(p, record_every=k),
    "simulate_general": lambda k: simulate_general(p, None, "data", k),
    "simulate_full_patches": lambda k: simulate_full_patches(p, None, "data", k),
}
bad = [2.5, 1.5, 0.5, True, False, 0, -3, 21, 99999999999999999999999, 2**63,
       float("nan"), float("inf"), "3", None, [2]]
out = {}
for name, run in entries.items():
    for k in bad:
        try:
            run(k)
            out[f"{name} {k!r}"] = "accepted"
        except ParamError as exc:
            out[f"{name} {k!r}"] = exc.param
    for k in (1, 3, 20, 3.0):
        tr = run(k)
        out[f"{name} ok {k!r}"] = [list(map(int, tr.steps)), len(tr.loss),
                                   bool(all(math.isfinite(x) for x in tr.loss))]
print(json.dumps(out))
"""


def test_record_every_one_validator_for_every_api_entry():
    """simulate(..., 2.5) segfaulted, 1.5 aborted, simulate_full returned NaN,
    simulate_general segfaulted: now one ParamError naming record_every, and
    accepted values record exactly 0, k, 2k, ... and T."""
    res = run_python(RECORD_EVERY_PROBE, timeout=300)
    assert res.returncode == 0, f"rc {res.returncode}\n{res.stderr[-3000:]}"
    out = json.loads(res.stdout.strip().splitlines()[-1])
    for key, val in out.items():
        if " ok " in key:
            k = int(float(key.split()[-1]))
            expect = sorted(set(range(0, 21, k)) | {20})
            assert val == [expect, len(expect), True], (key, val)
        else:
            assert val == "record_every", (key, val)


@pytest.mark.parametrize("value", ["99999999999999999999999", "21", "0"])
def test_cli_record_every_out_of_range_is_one_line(value, cli, one_line_error):
    res = cli("simulate", *B, "--steps", "20", "--record-every", value)
    line = one_line_error(res, code=2)
    assert "--record-every" in line and "TypingError" not in res.output, res.output


def test_check_record_every_contract():
    from dynamics.params import check_record_every, record_count
    from dynamics.run import record_steps
    assert check_record_every(np.int64(4), 20) == 4 and check_record_every(5.0, 20) == 5
    for bad in (2.5, True, np.bool_(True), 21, 0, "2", 10**30, float("nan")):
        with pytest.raises(ParamError) as exc:
            check_record_every(bad, 20)
        assert exc.value.param == "record_every" and "[1, 20]" in str(exc.value)
    for steps in (1, 2, 7, 20, 21):
        for k in range(1, steps + 1):
            assert record_count(steps, k) == len(record_steps(steps, k))


# ---------------------------------------------------------------- High 3: signals
@pytest.fixture(autouse=True)
def _python_sigint():
    """This process's SIGINT at Python's handler for the test (restored after)."""
    old = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, old)


def _signal_try(tmp, sig, delay, steps):
    """Start `dyn simulate B --steps STEPS --out x.nc`; ``delay`` seconds after
    the temporary file appears (None: a random moment from the start), send
    ``sig``.  Returns (returncode, seconds from the signal to the exit, stderr,
    whether x.nc existed when the signal was sent)."""
    proc = subprocess.Popen(DYN + ["simulate", *B, "--steps", str(steps), "--out", "x.nc"],
                            cwd=tmp, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, preexec_fn=default_signals)
    try:
        if delay is None:
            time.sleep(random.uniform(0.3, 3.0))
        else:
            t0 = time.monotonic()
            while not leftovers(tmp):  # the write has begun
                if proc.poll() is not None or time.monotonic() - t0 > 60:
                    break
                time.sleep(0.005)
            time.sleep(delay)
        sent = time.monotonic()
        written = (tmp / "x.nc").exists()
        if proc.poll() is None:
            proc.send_signal(sig)
        _, err = proc.communicate(timeout=30)
        return proc.returncode, time.monotonic() - sent, err, written
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def test_signal_during_the_netcdf_write_ends_promptly_without_temporary(tmp_path):
    """Ctrl-C / SIGTERM around and inside the netCDF write (once 3 of
    ~64 hung in the HDF5 lock, leaving a 92 MB temporary, and a swallowed
    signal gave rc 0).  Every try exits non-zero (130 / 143 unless the run had
    finished), within seconds, and leaves no temporary file.  Tries run a few at
    a time; DYN_SIGNAL_TRIES raises their number (default 6: each try writes
    ~90 MB; tests/stress_signals.py runs 200 per scenario)."""
    rng = random.Random(38)
    tries = int(os.environ.get("DYN_SIGNAL_TRIES", "6"))
    plan = []
    for k in range(tries):
        sig = (signal.SIGINT, signal.SIGTERM)[k % 2]
        # mostly inside the write; every fourth try (a SIGTERM) at a random moment of
        # the whole run (a SIGINT during the interpreter's own imports, before dyn's
        # code runs, is Python's KeyboardInterrupt traceback: not tested here)
        delay = None if k % 4 == 3 else rng.uniform(0.0, 0.6)
        plan.append((k, sig, delay))
    finished = 0
    from concurrent.futures import ThreadPoolExecutor
    with ThreadPoolExecutor(max_workers=4) as pool:
        futures = []
        for k, sig, delay in plan:
            folder = tmp_path / f"try{k}"
            folder.mkdir()
            futures.append((k, sig, folder, pool.submit(_signal_try, folder, sig, delay, 30000)))
        for k, sig, folder, fut in futures:
            rc, seconds, err, written = fut.result()
            assert seconds < 10.0, f"try {k}: exit {seconds:.1f} s after the signal"
            assert leftovers(folder) == [], (k, os.listdir(folder))
            assert "Traceback" not in err, err
            if rc == 0:  # only if the output was complete before the signal
                assert written, f"try {k}: signal swallowed (exit 0, no output then)\n{err}"
                finished += 1
                continue
            assert rc in (130, 143, -signal.SIGINT, -signal.SIGTERM, 1), (k, rc, err)
            if rc > 1:
                assert rc == 128 + sig, (k, rc, sig)
    assert finished <= tries // 2, "most signals arrived after the run: the test tests nothing"


class _Term(Exception):
    pass


def _raise_term(signum, frame):
    raise _Term


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_inside_the_write_is_held_until_the_write_is_out(sig, tmp_path):
    """The cause of the hang (item 3): the KeyboardInterrupt was raised inside the
    HDF5 call, with xarray's lock held.  A real signal sent from inside the
    write now waits: the write's own code runs to its end (the lock is
    released), then the write is abandoned (the old file stays), the temporary
    removed, and the signal delivered to the previous handler."""
    import threading
    from dynamics.files import atomic_target
    target = tmp_path / "x.nc"
    target.write_text("old")
    lock = threading.Lock()  # stands for xarray's HDF5 lock
    reached_end = []
    old = signal.signal(signal.SIGTERM, _raise_term) if sig == signal.SIGTERM else None
    expected = KeyboardInterrupt if sig == signal.SIGINT else _Term
    try:
        with pytest.raises(expected):
            with atomic_target(target, ".nc.tmp") as tmp:
                with lock:
                    with open(tmp, "w") as fh:
                        fh.write("half")
                        os.kill(os.getpid(), sig)
                        for _ in range(1000):  # bytecodes: a pending handler would run here
                            pass
                        fh.write(" and the rest")
                    reached_end.append(True)
    finally:
        if old is not None:
            signal.signal(signal.SIGTERM, old)
    assert reached_end == [True] and not lock.locked()
    assert target.read_text() == "old" and sorted(os.listdir(tmp_path)) == ["x.nc"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


SWALLOWED = """
import os, signal, sys
import compare.dataset as dataset
real = dataset.write_netcdf


class Finaliser:
    def __del__(self):  # a KeyboardInterrupt raised here is only printed
        os.kill(os.getpid(), signal.SIG)
        for _ in range(1000):
            pass


def write(ds, path):
    Finaliser()
    return real(ds, path)


dataset.write_netcdf = write
from compare.cli import main
sys.exit(main())
"""


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_swallowed_signal_still_stops_with_its_status(sig, tmp_path):
    """Item 11: "Exception ignored in: ... KeyboardInterrupt", then rc 0.  The
    signal is remembered: the run writes nothing more and exits 128 + signum."""
    code = SWALLOWED.replace("signal.SIG)", f"signal.{sig.name})")
    res = subprocess.run([sys.executable, "-c", code, "simulate", *B, "--steps", "20",
                          "--out", "x.nc"], capture_output=True, text=True, cwd=tmp_path,
                         timeout=120, env=dict(os.environ, PYTHONPATH=ROOT),
                         preexec_fn=default_signals)
    assert "Exception ignored" in res.stderr, res.stderr  # the swallowing did happen
    assert res.returncode == 128 + sig, (res.returncode, res.stderr)
    assert f"stopped by {sig.name}" in res.stderr
    assert leftovers(tmp_path) == [] and not (tmp_path / "x.nc").exists(), os.listdir(tmp_path)


# ---------------------------------------------------------------- Medium 8: temporaries
def test_remove_stale_temporaries_keeps_user_files(tmp_path):
    from dynamics.files import atomic_target, is_dyn_temporary, remove_stale_temporaries
    users = [".notes.tmp", "notes.tmp", ".x.nc.tmp", ".results.nc.abc12345.nc.tmp", ".tmp",
             "a.dyn-0123456789ab.tmp", ".dyn-probe-zz"]
    for name in users:
        (tmp_path / name).write_text("user data")
    with atomic_target(tmp_path / "out.nc", ".nc.tmp") as tmp:
        name = os.path.basename(tmp)
        assert is_dyn_temporary(name), name
        assert name.startswith(".out.nc.dyn-") and name.endswith(".nc.tmp")
        stale = tmp_path / name.replace(name.split(".dyn-")[1][:12], "0" * 12)
        stale.write_text("left by a killed run")
    assert not is_dyn_temporary(".notes.tmp")
    remove_stale_temporaries(tmp_path)
    assert not stale.exists()
    assert sorted(os.listdir(tmp_path)) == sorted(users + ["out.nc"])


# ---------------------------------------------------------------- Medium 10: --times
def test_times_inf_twice_is_refused(cli, one_line_error, tmp_path):
    from dynamics.run import check_checkpoints
    line = one_line_error(cli("simulate", *B, "--integrator", "flow", "--times",
                              "200,inf,inf"), code=2)
    assert "--times" in line and "distinct" in line, line
    line = one_line_error(cli("solve", *B, "--steps", "20", "--times", "200,inf,inf",
                              "--out", tmp_path / "o"), code=2)
    assert "--times" in line and "distinct" in line, line
    for bad in ([200, math.inf, math.inf], [math.inf, math.inf], [math.nan]):
        with pytest.raises(ParamError, match="distinct"):
            check_checkpoints(bad, 20)
    assert check_checkpoints([200, math.inf], 20).tolist() == [200, math.inf]


# ---------------------------------------------------------------- Medium 12: memory first
LIMITED = """
import resource, sys
limit = 2 * 2**30
resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
from compare.cli import main
sys.exit(main())
"""


def test_general_level_memory_check_comes_first():
    """`dyn simulate B --steps 1000000000 --level general` took 14-18 s and 8 GB
    (np.arange of 1e9) before the check refused it."""
    t0 = time.monotonic()
    res = subprocess.run([sys.executable, "-c", LIMITED, "simulate", *B, "--steps",
                          "1000000000", "--level", "general"], capture_output=True, text=True,
                         cwd=ROOT, timeout=120)
    took = time.monotonic() - t0
    assert res.returncode == 1, res.stdout + res.stderr
    lines = [ln for ln in res.stderr.splitlines() if ln.startswith("Error:")]
    assert len(lines) == 1 and "Traceback" not in res.stderr, res.stderr
    assert "GiB" in lines[0] and "--steps 1000000000" in lines[0], lines[0]
    assert took < 10.0, took


# ---------------------------------------------------------------- Medium 16: the API
@pytest.mark.parametrize("kwargs,param", [
    (dict(integrator="foo"), "integrator"),
    (dict(v0s=[]), "v0s"),
    (dict(v0s="0.1"), "v0s"),
    (dict(times="20"), "times"),
    (dict(times=[20, math.inf, math.inf]), "times"),
    (dict(d_grid=[500.5, 1000.0]), "d_grid"),
    (dict(n_grid=[10, 20.7]), "n_grid"),
    (dict(d_grid="500"), "d_grid"),
    (dict(level="foo"), "level"),
    (dict(sampler=None), "sampler"),
])
def test_solve_api_validates_like_the_cli(kwargs, param, monkeypatch):
    import compare.solve as solve_mod

    def forbid(*a, **k):
        raise AssertionError("solve computed before validating its arguments")
    monkeypatch.setattr(solve_mod, "find_boundary", forbid)
    monkeypatch.setattr(solve_mod, "find_boundaries_at", forbid)
    from dynamics.spec import RunSpec
    run_keys = ("integrator", "times", "level", "sampler")  # RunSpec's fields
    args = dict(d_grid=(), n_grid=(), verify=False)
    args.update({k: v for k, v in kwargs.items() if k not in run_keys})
    with pytest.raises(ParamError) as exc:
        spec = RunSpec(Params(**SMALL), **{k: v for k, v in kwargs.items() if k in run_keys})
        solve_mod.solve(spec, **args)
    assert exc.value.param == param, exc.value


def test_solve_api_accepts_integral_float_grid(monkeypatch):
    import compare.solve as solve_mod
    seen = {}

    def fake_grid(p, grid, field, *a, **k):
        seen[field] = list(grid)
        return []
    monkeypatch.setattr(solve_mod, "_grid", fake_grid)
    monkeypatch.setattr(solve_mod, "find_boundary", lambda *a, **k: type(
        "B", (), {"star": lambda self, *t: 1.0})())
    from dynamics.spec import RunSpec
    solve_mod.solve(RunSpec(Params(**SMALL)), d_grid=[200.0, 400], n_grid=(), verify=False)
    assert seen["d"] == [200, 400] and all(type(x) is int for x in seen["d"])


@pytest.mark.parametrize("entry", ["simulate", "simulate_full", "simulate_general", "RunSpec",
                                   "solve", "find_boundary"])
def test_api_entries_name_params_when_not_params(entry):
    """A wrong first argument is one ParamError naming it: ``params`` for a
    run, ``spec`` (a RunSpec, itself checking its params) for a run set."""
    from compare.boundaries import find_boundary
    from compare.solve import solve
    from dynamics.general import simulate_general
    from dynamics.run import simulate
    from dynamics.spec import RunSpec
    from fullsim import simulate_full
    fn = dict(simulate=simulate, simulate_full=simulate_full, simulate_general=simulate_general,
              RunSpec=RunSpec, solve=solve, find_boundary=find_boundary)[entry]
    run_set = entry in ("solve", "find_boundary")
    for bad in (None, {"d": 100}) + ((Params(**SMALL),) if run_set else ()):
        with pytest.raises(ParamError) as exc:
            fn(bad)
        assert exc.value.param == ("spec" if run_set else "params")


# ---------------------------------------------------------------- Medium 17 (part)
def test_numba_num_threads_zero_is_one_line(tmp_path):
    env = dict(os.environ, NUMBA_NUM_THREADS="0")
    res = subprocess.run(DYN + ["solve", *B, "--steps", "20", "--out", str(tmp_path / "o")],
                         capture_output=True, text=True, cwd=ROOT, timeout=120, env=env)
    assert res.returncode != 0
    assert "Traceback" not in res.stderr, res.stderr
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error:"), res.stderr
    assert "NUMBA_NUM_THREADS" in lines[0] and "'0'" in lines[0], lines[0]


def test_spec_json_is_standard_json():
    from compare.store import fingerprint, spec_json

    def strict(text):
        return json.loads(text, parse_constant=lambda c: pytest.fail(f"non-standard {c}"))
    spec = {"times": [200.0, math.inf], "x": {"lo": -math.inf}, "nan": math.nan, "k": 3}
    text = spec_json(spec)
    assert "Infinity" not in text and "NaN" not in text
    back = strict(text)
    assert back["times"] == [200.0, "inf"] and back["x"]["lo"] == "-inf"
    assert back["nan"] == "nan" and back["k"] == 3
    # fingerprints of existing sweeps do not move (stores resume)
    import hashlib
    plain = {"times": [200.0, 2000.0], "seeds": 4}
    assert fingerprint(plain) == hashlib.sha256(
        json.dumps(plain, sort_keys=True).encode()).hexdigest()[:16]
    assert fingerprint(spec) == hashlib.sha256(
        json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]
