"""Locks, signals while loading, refused option combinations and corrupted
data files, at tiny sizes.

dyn solve --level full with a per-coordinate optimizer names --no-verify;
dyn solve holds a lock on its --out folder (a second dyn solve there is
refused, the outputs are written under it); options that would do nothing
are refused with one line naming them; a signal while dyn loads its modules
is one line and exit 128 + signum, never a traceback from inside an import.
The 200-try signal stress is tests/stress_signals.py (run by hand).
"""
import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from dynamics import Params
from dynamics.params import ParamError
from helpers import default_signals

B = ["--d", "100", "--n", "10", "--m", "5", "--n-test", "100"]
SOLVE = ["solve", *B, "--steps", "20", "--seeds", "1", "--d-grid", "none", "--n-grid", "none",
         "--quiet"]
PHASE = ["phase", *B, "--x", "v0=0.01..1:2", "--y", "mu=1..10:2", "--seeds", "1", "--quiet"]
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def run_python(code, preexec_fn=default_signals, timeout=120):
    """``code`` in a fresh interpreter with this tree on the path."""
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                          text=True, cwd=ROOT, timeout=timeout, preexec_fn=preexec_fn,
                          env=dict(os.environ, PYTHONPATH=ROOT))


# ---------------------------------------------------------------- item 14: adam advice
def test_solve_full_adam_names_no_verify(cli, one_line_error, tmp_path, monkeypatch):
    """`dyn solve --level full --optimizer adam` said "use --level full": the
    cause is the verification (level exact against the network), which no
    reduced level can do for adam; refused before any run."""
    import compare.solve
    from dynamics.spec import RunSpec

    def forbid(*a, **k):
        raise AssertionError("a boundary search ran before the refusal")
    monkeypatch.setattr(compare.solve, "find_boundary", forbid)
    for opt in ("adam", "sign"):
        line = one_line_error(cli(*SOLVE, "--level", "full", "--optimizer", opt,
                                  "--out", tmp_path / "o"))
        assert "--optimizer" in line and "--no-verify" in line, line
        assert "use --level full" not in line, line
    with pytest.raises(ParamError, match="verify=False"):
        compare.solve.solve(RunSpec(Params(d=100, n=10, m=5, steps=20, n_test=100,
                                           optimizer="adam"), level="full", seeds=1),
                            d_grid=(), n_grid=())
    assert not (tmp_path / "o").exists()  # the folder made for the lock is gone again


def test_solve_full_adam_runs_without_verification(cli, tmp_path):
    res = cli(*SOLVE, "--level", "full", "--optimizer", "adam", "--no-verify",
              "--out", tmp_path / "o")
    assert res.exit_code == 0, res.output
    assert "optimizer=adam" in res.output and (tmp_path / "o" / "solve.nc").exists()


@pytest.mark.parametrize("command", [["compare", *B, "--steps", "20"],
                                     ["simulate", *B, "--steps", "20", "--level", "general"]])
def test_record_every_huge_is_one_line(command, cli, one_line_error):
    res = cli(*command, "--record-every", "99999999999999999999999")
    line = one_line_error(res, code=2)
    assert "--record-every" in line and "99999999999999999999999" in line, line
    assert "TypingError" not in res.output


# ---------------------------------------------------------------- item 14: solve's lock
def test_second_solve_into_one_folder_is_refused(cli, one_line_error, tmp_path):
    """Two dyn solve into one --out mixed solve.nc and figures: the folder's
    lock (held here, as a running dyn solve holds it) refuses the second at once."""
    from compare.store import PathLock
    out = tmp_path / "o"
    out.mkdir()
    with PathLock(out / "solve.nc.lock"):
        line = one_line_error(cli(*SOLVE, "--out", out))
    assert "in use by another dyn process" in line and f"--out {out}" in line, line
    assert str(os.getpid()) in line
    assert sorted(os.listdir(out)) == ["solve.nc.lock"]  # nothing written, nothing removed
    res = cli(*SOLVE, "--no-verify", "--out", out)  # released: the next run writes
    assert res.exit_code == 0, res.output
    assert (out / "solve.nc").exists()


def test_solve_writes_its_outputs_under_the_lock(cli, tmp_path, monkeypatch):
    import compare.solve
    from compare.store import PathLock, StoreBusy
    real = compare.solve.write_outputs
    held = []

    def write(results, ds, out_dir, *a, **k):
        with pytest.raises(StoreBusy):
            PathLock(os.path.join(out_dir, "solve.nc.lock"))
        held.append(True)
        return real(results, ds, out_dir, *a, **k)
    monkeypatch.setattr(compare.solve, "write_outputs", write)
    res = cli(*SOLVE, "--no-verify", "--out", tmp_path / "o")
    assert res.exit_code == 0, res.output
    assert held == [True]


def test_path_lock_is_released_and_not_kept_by_a_forked_child(tmp_path):
    from compare.store import PathLock, StoreBusy
    path = tmp_path / "x.lock"
    lock = PathLock(path)
    assert path.read_text().strip() == str(os.getpid())
    pid = os.fork()
    if pid == 0:  # the child dropped its copy of the descriptor
        os._exit(0 if lock._lock_fd is None else 1)
    assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0
    with pytest.raises(StoreBusy):
        PathLock(path)
    lock.close()
    lock.close()  # idempotent
    with PathLock(path):
        pass


# ---------------------------------------------------------------- item 17: options without effect
NO_EFFECT = [
    (["theory", *B, "--steps", "20", "--seeds", "3", "--no-formulas"], "--seeds",
     "without --fit-laws or --limit"),
    (["theory", *B, "--steps", "20", "--latex", "--no-formulas"], "--latex",
     "with --no-formulas"),
    (["theory", *B, "--steps", "20", "--level", "full", "--sampler", "wishart"],
     "--sampler wishart", "with --level full"),
    ([*PHASE, "--steps", "50", "--times", "200"], "--steps", "with --times"),
    ([*PHASE, "--steps", "20", "--level", "full", "--sampler", "wishart"],
     "--sampler wishart", "with --level full"),
    ([*PHASE, "--scheduler", "tcp://127.0.0.1:1", "--dask-workers", "2"], "--dask-workers",
     "with --scheduler"),
    ([*SOLVE, "--level", "full", "--sampler", "wishart"], "--sampler wishart",
     "with --level full"),
    (["simulate", *B, "--steps", "20", "--level", "full", "--sampler", "wishart"],
     "--sampler wishart", "with --level full"),
    (["simulate", *B, "--steps", "50", "--integrator", "flow", "--times", "200"], "--steps",
     "with --times"),
    (["simulate", *B, "--level", "general", "--data", "absent.npz", "--sampler", "wishart"],
     "--sampler", "with --data"),
]


@pytest.mark.parametrize("args, flag, why", NO_EFFECT,
                         ids=[" ".join(a[:1] + [f]) + " " + w for a, f, w in NO_EFFECT])
def test_option_without_effect_is_refused(args, flag, why, cli, one_line_error, tmp_path,
                                          monkeypatch):
    monkeypatch.chdir(tmp_path)
    line = one_line_error(cli(*args), code=2)
    assert f"{flag} has no effect {why}" in line, line
    assert os.listdir(tmp_path) == []  # refused before anything was made


def test_defaults_and_used_combinations_still_run(cli, tmp_path):
    """The refusals are about options given on the command line: the same
    commands without them (or with the value that is used) run."""
    res = cli("theory", *B, "--steps", "20", "--no-formulas", "--level", "full",
              "--sampler", "data")
    assert res.exit_code == 0, res.output
    res = cli("simulate", *B, "--integrator", "flow", "--times", "20")
    assert res.exit_code == 0, res.output


def test_phase_with_times_records_steps_as_unused(cli, tmp_path):
    """`dyn phase --times` runs to the times: `steps` is not a flat attribute
    then (it was recorded as if used); without --times it is."""
    from compare.dataset import read_netcdf
    res = cli(*PHASE, "--times", "10,20", "--out", tmp_path / "t")
    assert res.exit_code == 0, res.output
    ds = read_netcdf(tmp_path / "t" / "phase.nc")
    assert "steps" not in ds.attrs and ds.attrs["unused_parameters"] == "steps"
    assert np.array_equal(ds.steps.values, [10, 20])
    res = cli(*PHASE, "--steps", "20", "--out", tmp_path / "s")
    assert res.exit_code == 0, res.output
    ds = read_netcdf(tmp_path / "s" / "phase.nc")
    assert ds.attrs["steps"] == 20 and "unused_parameters" not in ds.attrs


# ---------------------------------------------------------------- signals while loading
SIGNAL_IN_IMPORT = """
import os, signal, sys

class Hook:  # sends the signal from inside the import of numba, which compare.cli loads
    def find_spec(self, name, path=None, target=None):
        if name == "numba":
            os.kill(os.getpid(), signal.SIG)
            for _ in range(100000):  # bytecodes: a pending handler runs here
                pass
        return None

sys.meta_path.insert(0, Hook())
sys.argv = ["dyn", "--version"]
from compare.cli import main
print("imported")
sys.exit(main())
"""


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_while_loading_is_one_line(sig):
    """Ctrl-C in the first ~0.5 s of dyn (numba, numpy, click loading) printed
    a KeyboardInterrupt traceback from inside an import."""
    res = run_python(SIGNAL_IN_IMPORT.replace("signal.SIG)", f"signal.{sig.name})"))
    assert res.returncode == 128 + sig, (res.returncode, res.stderr)
    assert res.stderr == f"dyn: stopped by {sig.name}\n", res.stderr
    assert "imported" not in res.stdout


def test_loading_the_cli_keeps_the_process_handlers():
    """The loading handler is for dyn's own start only: a process that imports
    the CLI (a test run, a notebook) keeps its handlers, and an ignored SIGINT
    (a background job) stays ignored."""
    res = run_python("""
        import signal
        before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
        import compare.cli
        assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before
        print("ok")
    """)
    assert res.returncode == 0 and res.stdout.strip() == "ok", res.stderr

    def ignore_sigint():
        default_signals()
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    res = run_python("""
        import os, signal
        import compare.cli
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
        print("ok")
    """, preexec_fn=ignore_sigint)
    assert res.returncode == 0 and res.stdout.strip() == "ok", res.stderr


def test_an_ignored_signal_stays_ignored_during_kernels():
    """native_signals (kernels end at once on a signal) must not turn an ignored
    SIGINT (a background job) into a fatal one."""
    from compare.cli import native_signals
    old = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with native_signals():
            assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
            assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, old)


def test_flow_loss_underflow_is_a_failure_not_a_frozen_state(cli):
    """At --eta 1e6 the flow's first step overshoots, every
    l' underflows and the state would freeze; that is refused with the cause
    and advice, in the reduced model and the network alike."""
    from dynamics import Params
    from dynamics.run import DivergenceError, simulate_flow
    from fullsim.network import simulate_full_flow
    p = Params(d=100, n=10, m=5, n_test=100, eta=1e6)
    for run in (lambda: simulate_flow(p, "exact", "wishart", times=[1, 2, 5, 10]),
                lambda: simulate_full_flow(p, [1, 2, 5, 10])):
        with pytest.raises(DivergenceError) as exc:
            run()
        assert "underflowed" in str(exc.value) and "smaller --eta" in str(exc.value)
    res = cli("simulate", *B, "--eta", "1e6", "--integrator", "flow", "--times", "1,2,5,10")
    assert res.exit_code != 0 and "underflowed" in res.output and "Traceback" not in res.output
    fine = simulate_flow(p.replace(eta=0.01), "exact", "wishart", times=[1, 2, 5, 10])
    assert np.all(fine.loss > 0)


def test_initial_divergence_advice_names_the_noise_scale():
    """A network out of range at step 0 because of the noise
    (spiked:1,1e300) is told about the noise, not only sigma0, v0, c and mu."""
    from dynamics.run import divergence_hint
    spiked = divergence_hint(0, Params(noise="spiked:1,1e300"), 2)
    assert "--noise spiked" in spiked and "--data" in spiked
    assert "--sigmap" in divergence_hint(0, Params(), 2)
    assert "smaller --eta" in divergence_hint(5, Params(), 2)


def test_data_reader_fuzz_corrupted_files(cli, one_line_error, tmp_path):
    """A --data file corrupted at random (truncated, bytes flipped,
    a block zeroed) either still loads and runs, or gives a one-line error;
    never a traceback."""
    rng = np.random.default_rng(38)
    good = tmp_path / "good.npz"
    np.savez(good, x=rng.standard_normal((8, 2, 20)), y=np.tile([1.0, -1.0], 4))
    raw = good.read_bytes()
    outcomes = {"ran": 0, "refused": 0}
    for k in range(40):
        buf = bytearray(raw)
        kind = k % 3
        if kind == 0:
            buf = buf[:int(rng.integers(0, len(buf)))]
        elif kind == 1:
            for pos in rng.integers(0, len(buf), size=int(rng.integers(1, 8))):
                buf[pos] ^= int(rng.integers(1, 256))
        else:
            a = int(rng.integers(0, len(buf)))
            size = min(int(rng.integers(1, 64)), len(buf) - a)
            buf[a:a + size] = bytes(size)
        bad = tmp_path / f"bad{k}.npz"
        bad.write_bytes(bytes(buf))
        res = cli("simulate", "--level", "general", "--m", "2", "--steps", "3", "--data", bad)
        if res.exit_code == 0:
            outcomes["ran"] += 1
        else:
            one_line_error(res)
            outcomes["refused"] += 1
    assert outcomes["refused"] >= 10, outcomes
