"""Stress test of issue 38's three high items, run by hand (not collected by
pytest: no ``test_`` prefix).  Takes ~15-30 minutes on two cores.

    python tests/stress_signals.py                 # 200 tries per signal scenario
    python tests/stress_signals.py --tries 20 --only simulate
    python tests/stress_signals.py --tree /tmp/snapshot   # another checkout

Scenarios (``B`` = ``--d 100 --n 10 --m 5 --n-test 100``):

simulate  SIGINT / SIGTERM at random moments of ``dyn simulate B --steps 30000
          --out x.nc`` (a ~100 MB netCDF write): half of the tries at a
          uniform moment of the whole run (interpreter start and imports
          included), half inside the write (after dyn's temporary file appeared).
solve     the same for ``dyn solve B --steps 20 --seeds 1 --times 200,inf
          --d-grid none --n-grid none --verify-seeds 1 --out d`` (solve.nc and
          four figures).
outputs   item 1: ``--out`` a FIFO, a character device (root) or /dev/null,
          a directory, a foreign file, in random order, in one process (the
          refusal is a check of the path's type before any computation and
          again in the atomic writer: no timing involved).
api       item 2: ``record_every`` drawn at random (fractions, bools, huge
          integers, numpy scalars, strings, negatives) into every API entry,
          in one subprocess per entry (a kernel writing outside its arrays
          crashes the interpreter; the subprocess turns that into a failure).

Asserted for every signal try: the process ends within ``--timeout`` seconds
of the signal (no hang), exits non-zero unless it had finished before the
signal, with 128 + signum when it reports (130 / 143; -signum when the
signal's default action ended it inside a Numba kernel, where Python
handlers cannot run), prints no traceback, and leaves no temporary file;
an output that exists is complete (it opens).  Prints the counts.
"""
from __future__ import annotations

import argparse
import collections
import os
import random
import re
import signal
import stat
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
B = ["--d", "100", "--n", "10", "--m", "5", "--n-test", "100"]
COMMANDS = {
    "simulate": (["simulate", *B, "--steps", "30000", "--out", "x.nc"], ["x.nc"]),
    "solve": (["solve", *B, "--steps", "20", "--seeds", "1", "--times", "200,inf",
               "--d-grid", "none", "--n-grid", "none", "--verify-seeds", "1", "--quiet",
               "--out", "d"], ["d/solve.nc"]),
}
TEMP = re.compile(r"\.dyn-[0-9a-f]{12}.*tmp$|\.tmp")


def dyn():
    return [sys.executable, "-c", "import sys; from compare.cli import main; sys.exit(main())"]


def env_for(tree):
    return dict(os.environ, PYTHONPATH=tree)


def default_signals():
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def temporaries(folder):
    return [os.path.join(root, f) for root, _, files in os.walk(folder) for f in files
            if TEMP.search(f)]


HANDLER_LINE = 0  # line of compare/cli.py that installs the loading handler (main sets it)


def before_dyn(err):
    """Is this traceback from before dyn installed its first handler (the
    interpreter starting: site-packages, importlib finding or loading
    ``compare``, the first lines of compare/cli.py)?  Its frames are then the
    ``-c`` line, frozen importlib, the standard library, site-packages'
    editable finder, ``compare/__init__.py`` and compare/cli.py up to the
    handler only."""
    frames = re.findall(r'File "([^"]+)", line (\d+)', err)
    for path, line in frames:
        if path == "<string>" or path.startswith("<frozen"):
            continue
        if "/site-packages/" in path and "__editable__" not in path:
            return False
        if "/lib/python3" in path and "/site-packages/" not in path:
            continue  # the standard library (site, importlib, re, ...)
        if path.endswith(os.path.join("compare", "__init__.py")) or "__editable__" in path:
            continue
        if path.endswith(os.path.join("compare", "cli.py")) and int(line) <= HANDLER_LINE:
            continue  # compare/cli.py before its loading handler is installed
        return False
    return True


def complete(path, tree):
    """Does the netCDF file open and hold its data?"""
    code = ("import sys, xarray as xr; ds = xr.open_dataset(sys.argv[1]); ds.load(); "
            "print(len(ds.data_vars))")
    res = subprocess.run([sys.executable, "-c", code, path], capture_output=True, text=True,
                         env=env_for(tree))
    return res.returncode == 0


def one_try(tree, scenario, folder, sig, mode, delay, timeout):
    """Run the command in ``folder``; signal it ``delay`` s after the start
    (mode 'run') or after the first temporary file appeared (mode 'write')."""
    args, outputs = COMMANDS[scenario]
    t_start = time.monotonic()
    proc = subprocess.Popen(dyn() + args, cwd=folder, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env_for(tree),
                            preexec_fn=default_signals)
    sent, phase = None, "after the run"
    try:
        if mode == "run":
            time.sleep(delay)
        else:
            while not temporaries(folder):
                if proc.poll() is not None or time.monotonic() - t_start > 600:
                    break
                time.sleep(0.002)
            time.sleep(delay)
        done_before = all(os.path.exists(os.path.join(folder, o)) for o in outputs)
        if proc.poll() is None:
            phase = ("write" if temporaries(folder) else
                     "start (<0.1 s)" if time.monotonic() - t_start < 0.1 else "run")
            sent = time.monotonic()
            proc.send_signal(sig)
        try:
            _, err = proc.communicate(timeout=timeout)
            hung = False
        except subprocess.TimeoutExpired:
            proc.kill()
            _, err = proc.communicate()
            hung = True
        seconds = time.monotonic() - sent if sent is not None else 0.0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    rc = proc.returncode
    problems = []
    if hung:
        problems.append(f"hung > {timeout} s after the signal")
    early = False
    if "Traceback" in err:
        if before_dyn(err):  # the interpreter starting: documented, counted apart
            early = True
        else:
            frames = [ln.strip() for ln in err.splitlines() if ln.strip().startswith("File")]
            problems.append("traceback: " + " <- ".join(frames[-2:]) + " "
                            + err.strip().splitlines()[-1])
    left = temporaries(folder)
    if left:
        problems.append(f"temporaries left: {left}")
    if sent is not None:
        if rc == 0 and not done_before:
            problems.append("exit 0 although signalled before its outputs existed")
        if rc not in (0, 1, 128 + sig, -sig):
            problems.append(f"exit status {rc}")
    for o in outputs:
        p = os.path.join(folder, o)
        if os.path.exists(p) and not complete(p, tree):
            problems.append(f"{o} exists but does not open")
    if early:
        phase = "interpreter start"
    return dict(scenario=scenario, sig=signal.Signals(sig).name, mode=mode, delay=delay,
                phase=phase if sent is not None else "after the run", rc=rc,
                seconds=seconds, problems=problems, stderr=err.strip()[-300:])


def baseline(tree, scenario, folder):
    """(total wall time, moment the write began) of an undisturbed run."""
    args, outputs = COMMANDS[scenario]
    t0 = time.monotonic()
    proc = subprocess.Popen(dyn() + args, cwd=folder, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env_for(tree))
    t_write = None
    while proc.poll() is None:
        if t_write is None and temporaries(folder):
            t_write = time.monotonic() - t0
        time.sleep(0.002)
    total = time.monotonic() - t0
    out, err = proc.communicate()
    if proc.returncode != 0:
        sys.exit(f"baseline {scenario} failed ({proc.returncode}):\n{err}")
    return total, (t_write if t_write is not None else total)


def run_signals(tree, scenario, tries, workers, timeout, rng, work):
    total, t_write = baseline(tree, scenario, tempfile.mkdtemp(dir=work))
    write_span = max(total - t_write, 0.05)
    print(f"{scenario}: undisturbed run {total:.2f} s, write begins at {t_write:.2f} s",
          flush=True)
    plan = []
    for k in range(tries):
        sig = (signal.SIGINT, signal.SIGTERM)[k % 2]
        if k % 4 < 2:
            plan.append((sig, "run", rng.uniform(0.0, total * 1.05)))
        else:
            plan.append((sig, "write", rng.uniform(0.0, write_span)))
    results = []
    with ThreadPoolExecutor(max_workers=workers) as pool:
        futs = [pool.submit(one_try, tree, scenario, tempfile.mkdtemp(dir=work), sig, mode,
                            delay, timeout) for sig, mode, delay in plan]
        for k, fut in enumerate(futs):
            res = fut.result()
            results.append(res)
            if res["problems"]:
                print(f"  try {k}: {res['sig']} {res['mode']} +{res['delay']:.3f} s -> rc "
                      f"{res['rc']}: {'; '.join(res['problems'])}", flush=True)
    return results


def summarise(scenario, results):
    bad = [r for r in results if r["problems"]]
    early = sum(r["phase"] == "interpreter start" for r in results)
    if early:
        print(f"{scenario}: {early} signals arrived before dyn installed its handler (the "
              f"interpreter starting; Python's own KeyboardInterrupt traceback, not counted "
              f"as a problem: docs/guide/reliability.md)")
    by = collections.Counter((r["sig"], r["phase"], r["rc"]) for r in results)
    slowest = max((r["seconds"] for r in results), default=0.0)
    print(f"{scenario}: {len(results)} tries, {len(bad)} with problems; slowest exit "
          f"{slowest:.2f} s after the signal")
    for (sig, phase, rc), n in sorted(by.items(), key=str):
        print(f"    {sig:7s} {phase:14s} rc {rc:4d}: {n}")
    return len(bad)


# ---------------------------------------------------------------- item 1: --out targets
def run_outputs(tree, tries, rng, work):
    """Every --out that is not a regular dyn output is refused (rc 2, one line)
    and left as it was."""
    code = r"""
import json, os, random, stat, sys
from click.testing import CliRunner
from compare.cli import main
work, tries, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
rng = random.Random(seed)
fifo = os.path.join(work, "fifo"); os.mkfifo(fifo)
dev = os.path.join(work, "null")
try:
    os.mknod(dev, stat.S_IFCHR | 0o666, os.makedev(1, 3))
except OSError:
    dev = "/dev/null"
folder = os.path.join(work, "dir"); os.mkdir(folder)
foreign = os.path.join(work, "notes.nc"); open(foreign, "w").write("mine")
targets = {"fifo": fifo, "device": dev, "folder": folder, "foreign": foreign}
B = ["--d", "100", "--n", "10", "--m", "5", "--n-test", "100", "--steps", "20"]
commands = [["simulate", *B], ["compare", *B], ["simulate", *B, "--level", "general"]]
bad, counts = [], {}
for k in range(tries):
    name = rng.choice(sorted(targets)); path = targets[name]
    before = os.lstat(path)
    res = CliRunner().invoke(main, rng.choice(commands) + ["--out", path])
    after = os.lstat(path)
    lines = [l for l in res.output.splitlines() if l.startswith("Error:")]
    same = (stat.S_IFMT(before.st_mode) == stat.S_IFMT(after.st_mode)
            and before.st_ino == after.st_ino)
    ok = res.exit_code == 2 and len(lines) == 1 and "Traceback" not in res.output and same
    counts[name] = counts.get(name, 0) + 1
    if not ok:
        bad.append((k, name, res.exit_code, res.output[-200:]))
print(json.dumps({"counts": counts, "bad": bad}))
"""
    res = subprocess.run([sys.executable, "-c", code, tempfile.mkdtemp(dir=work), str(tries),
                          str(rng.randrange(2 ** 31))], capture_output=True, text=True,
                         env=env_for(tree), timeout=1800)
    if res.returncode != 0:
        print(f"outputs: the run failed ({res.returncode}):\n{res.stderr[-2000:]}")
        return 1
    import json
    out = json.loads(res.stdout.strip().splitlines()[-1])
    print(f"outputs: {tries} tries {out['counts']}, {len(out['bad'])} not refused or changed")
    for b in out["bad"][:10]:
        print("   ", b)
    return len(out["bad"])


# ---------------------------------------------------------------- item 2: record_every
API = r"""
import json, random, sys
import numpy as np
from dynamics import Params
from dynamics.params import ParamError
entry, tries, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
rng = random.Random(seed)
p = Params(d=100, n=10, m=5, steps=20, n_test=100)
if entry == "simulate":
    from dynamics import simulate
    run = lambda k: simulate(p, "exact", "wishart", record_every=k)
elif entry == "simulate_full":
    from fullsim import simulate_full
    run = lambda k: simulate_full(p, record_every=k)
elif entry == "simulate_general":
    from dynamics.general import simulate_general
    run = lambda k: simulate_general(p, None, "data", k)
else:
    from dynamics.general import model_data
    from fullsim.patches import simulate_full_patches
    data = model_data(p, "data")
    run = lambda k: simulate_full_patches(p, data, "data", k)
def draw():
    kind = rng.randrange(8)
    if kind == 0: return rng.uniform(0.5, 25)                 # fractions
    if kind == 1: return rng.choice([True, False])
    if kind == 2: return 10 ** rng.randrange(3, 40)           # huge integers
    if kind == 3: return float(rng.randrange(1, 21)) + rng.choice([0.0, 0.5, 1e-9])
    if kind == 4: return np.int64(rng.randrange(-5, 30))
    if kind == 5: return rng.choice(["2", "x", None, [2], float("nan"), float("inf")])
    if kind == 6: return -rng.randrange(0, 10)
    return rng.randrange(1, 21)                               # valid
bad, ok, refused = [], 0, 0
for k in range(tries):
    val = draw()
    try:
        tr = run(val)
    except ParamError as exc:
        refused += 1
        if exc.param != "record_every":
            bad.append((repr(val), f"ParamError naming {exc.param}"))
        continue
    except Exception as exc:
        bad.append((repr(val), f"{type(exc).__name__}: {exc}"))
        continue
    kk = int(val)
    want = sorted(set(range(0, 21, kk)) | {20})
    if list(tr.steps) != want or not np.all(np.isfinite(tr.loss)):
        bad.append((repr(val), "wrong record"))
    ok += 1
print(json.dumps({"ran": ok, "refused": refused, "bad": bad}))
"""


def run_api(tree, tries, rng, work):
    entries = ("simulate", "simulate_full", "simulate_general", "simulate_full_patches")
    n_bad = 0
    for entry in entries:
        k = max(tries // len(entries), 1)
        res = subprocess.run([sys.executable, "-c", API, entry, str(k),
                              str(rng.randrange(2 ** 31))], capture_output=True, text=True,
                             env=env_for(tree), timeout=1800, cwd=work)
        if res.returncode != 0:  # a crash of the interpreter (segfault: -11) is a failure
            print(f"api {entry}: interpreter ended with {res.returncode}:\n{res.stderr[-1500:]}")
            n_bad += 1
            continue
        import json
        out = json.loads(res.stdout.strip().splitlines()[-1])
        print(f"api {entry}: {k} tries, {out['ran']} valid ran (exact records, finite), "
              f"{out['refused']} refused naming record_every, {len(out['bad'])} bad")
        for b in out["bad"][:10]:
            print("   ", b)
        n_bad += len(out["bad"])
    return n_bad


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tries", type=int, default=200, help="tries per scenario")
    ap.add_argument("--only", choices=("simulate", "solve", "outputs", "api"), action="append")
    ap.add_argument("--workers", type=int, default=2, help="tries at a time")
    ap.add_argument("--timeout", type=float, default=30.0,
                    help="seconds after the signal that count as a hang")
    ap.add_argument("--seed", type=int, default=38)
    ap.add_argument("--tree", default=HERE, help="the checkout to test (PYTHONPATH)")
    args = ap.parse_args()
    global HANDLER_LINE
    with open(os.path.join(args.tree, "compare", "cli.py")) as fh:
        HANDLER_LINE = next(k for k, ln in enumerate(fh, 1) if "_stop_while_loading)" in ln)
    rng = random.Random(args.seed)
    only = args.only or ["simulate", "solve", "outputs", "api"]
    failures = 0
    with tempfile.TemporaryDirectory(prefix="dyn-stress-") as work:
        for scenario in ("simulate", "solve"):
            if scenario in only:
                t0 = time.monotonic()
                results = run_signals(args.tree, scenario, args.tries, args.workers,
                                      args.timeout, rng, work)
                failures += summarise(scenario, results)
                print(f"  ({time.monotonic() - t0:.0f} s)", flush=True)
        if "outputs" in only:
            failures += run_outputs(args.tree, args.tries, rng, work)
        if "api" in only:
            failures += run_api(args.tree, args.tries, rng, work)
    print("FAILURES:", failures)
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
