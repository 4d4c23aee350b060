"""Cold start: wall time of ``dyn solve --v0 0.001``, ``dyn phase`` and ``dyn
simulate`` with an empty Numba cache, then warm, for this tree and a base
commit, in one run.

    python benchmarks/cold_start.py                  # this working tree vs HEAD~
    python benchmarks/cold_start.py --base abc123 --tree HEAD --repeats 2

The base commit (and ``--tree COMMIT`` if given; default: the working tree as
it is) is checked out with ``git worktree add`` into a temporary folder and
run with ``PYTHONPATH`` pointing there, in this interpreter's environment
(same venv, same ``dyn`` script).  Each cold run gets a fresh, empty
``NUMBA_CACHE_DIR`` (nested keyed folders are made inside it by trees that
have ``dynamics/numba_cache.py``); the warm run repeats the command with the
folder the cold run filled.  Trees alternate (the first tree of each repeat
alternates too), so drifting machine load hits both.  Before timing, each
tree's modules are byte-compiled and its law cache (``dynamics/theory/
lawcache.py``, sympy) is filled, so "cold" means an empty Numba cache only.
Outputs go to temporary folders (``--out``); nothing is written into the
repository.  The "import" row is ``python -c "import compare.cli"`` (what
every command pays before computing; warm, no compilation).
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import machine_rows, table  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DYN = os.path.join(os.path.dirname(sys.executable), "dyn")

# name -> arguments of dyn; "{out}" becomes a fresh temporary folder
COMMANDS = {
    "solve": ["solve", "--v0", "0.001", "--out", "{out}"],
    "phase": ["phase", "--out", "{out}"],
    "simulate": ["simulate"],
}
SMALL_PHASE = ["phase", "--x", "v0=1e-3..10:16", "--y", "mu=0.5..50:16", "--seeds", "2",
               "--out", "{out}"]


def git(*args, cwd=ROOT) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True,
                          text=True).stdout.strip()


def checkout(commit: str, parent: str) -> str:
    """A detached worktree of ``commit`` in a new folder under ``parent``."""
    path = tempfile.mkdtemp(prefix="tree-", dir=parent)
    os.rmdir(path)
    git("worktree", "add", "--detach", "--quiet", path, commit)
    return path


def child_env(root: str, cache: str) -> dict:
    env = dict(os.environ, PYTHONPATH=root, NUMBA_CACHE_DIR=cache)
    for name in ("DYN_NUMBA_CACHE_DIR", "DYN_NUMBA_CACHE_BASE", "NUMBA_DEBUG_CACHE"):
        env.pop(name, None)  # set by dynamics.numba_cache in a parent: not ours
    return env


def run(argv, root, cache, scratch, log) -> float:
    """Wall time (s) of one command in a fresh interpreter of tree ``root``."""
    out = tempfile.mkdtemp(prefix="out-", dir=scratch)
    shutil.rmtree(out)   # dyn creates it (phase refuses some existing folders)
    argv = [a.replace("{out}", out) for a in argv]
    t0 = time.perf_counter()
    res = subprocess.run(argv, cwd=scratch, env=child_env(root, cache),
                         capture_output=True, text=True)
    dt = time.perf_counter() - t0
    log.write(f"$ {' '.join(argv)}  [{root}; NUMBA_CACHE_DIR={cache}] {dt:.1f} s\n"
              f"{res.stdout}{res.stderr}\n")
    log.flush()
    if res.returncode != 0:
        raise SystemExit(f"failed ({res.returncode}) in {root}: {' '.join(argv)}\n"
                         f"{res.stderr[-2000:]}")
    shutil.rmtree(out, ignore_errors=True)
    return dt


def prepare(root, scratch, log) -> None:
    """Byte-compile the tree and fill its law cache (not what is measured);
    check that the tree's own packages are the ones imported."""
    subprocess.run([sys.executable, "-m", "compileall", "-q", "dynamics", "fullsim",
                    "compare"], cwd=root, check=True, capture_output=True)
    cache = tempfile.mkdtemp(prefix="prep-", dir=scratch)
    code = ("import compare, dynamics; from dynamics.theory.lawcache import law_exponents; "
            "law_exponents(); print(dynamics.__file__); print(compare.__file__)")
    res = subprocess.run([sys.executable, "-c", code], cwd=scratch,
                         env=child_env(root, cache), capture_output=True, text=True)
    log.write(res.stdout + res.stderr)
    if res.returncode != 0:
        raise SystemExit(f"cannot import the tree {root}:\n{res.stderr[-2000:]}")
    for line in res.stdout.split():
        if not os.path.realpath(line).startswith(os.path.realpath(root) + os.sep):
            raise SystemExit(f"PYTHONPATH={root} imported {line} (another tree)")
    shutil.rmtree(cache, ignore_errors=True)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--base", default="HEAD~", help="base commit (default HEAD~)")
    ap.add_argument("--tree", default=None,
                    help="commit to measure instead of the working tree")
    ap.add_argument("--commands", default="solve,phase,simulate",
                    help=f"comma-separated subset of {','.join(COMMANDS)}")
    ap.add_argument("--small-phase", action="store_true",
                    help="phase on a 16 x 16 grid with 2 seeds instead of the default")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--keep", action="store_true", help="keep the scratch folder")
    args = ap.parse_args(argv)
    commands = {name: COMMANDS[name] for name in args.commands.split(",")}
    if args.small_phase and "phase" in commands:
        commands["phase"] = SMALL_PHASE

    scratch = tempfile.mkdtemp(prefix="dyn-cold-start-")
    base_sha = git("rev-parse", "--short", args.base)
    trees, worktrees = [], []
    try:
        base_root = checkout(base_sha, scratch)
        worktrees.append(base_root)
        if args.tree:
            tree_sha = git("rev-parse", "--short", args.tree)
            tree_root = checkout(tree_sha, scratch)
            worktrees.append(tree_root)
            trees.append((f"tree {tree_sha}", tree_root))
        else:
            dirty = " + changes" if git("status", "--porcelain", "--untracked-files=no") else ""
            trees.append((f"tree {git('rev-parse', '--short', 'HEAD')}{dirty}", ROOT))
        trees.append((f"base {base_sha}", base_root))
        log_path = os.path.join(scratch, "log.txt")
        print(f"scratch folder {scratch} (command output: {log_path})", flush=True)
        times = {}   # (tree label, row) -> [seconds]
        with open(log_path, "w") as log:
            for _, root in trees:
                prepare(root, scratch, log)
            for label, root in trees:
                times[(label, "import")] = [run(
                    [sys.executable, "-c", "import compare.cli"], root,
                    tempfile.mkdtemp(prefix="imp-", dir=scratch), scratch, log)]
            for name, cmd in commands.items():
                for rep in range(args.repeats):
                    order = trees if rep % 2 == 0 else trees[::-1]
                    for label, root in order:
                        cache = tempfile.mkdtemp(prefix=f"numba-{name}-", dir=scratch)
                        for state in ("cold", "warm"):
                            dt = run([DYN, *cmd], root, cache, scratch, log)
                            times.setdefault((label, f"{name} {state}"), []).append(dt)
                            print(f"  {label:>24}  {name:>8} {state}: {dt:7.1f} s", flush=True)
                        shutil.rmtree(cache, ignore_errors=True)
        (tree_label, _), (base_label, _) = trees
        rows = []
        for row in ["import"] + [f"{n} {s}" for n in commands for s in ("cold", "warm")]:
            a = min(times[(tree_label, row)])
            b = min(times[(base_label, row)])
            rows.append([row, f"{a:.1f}", f"{b:.1f}", f"{a / b:.2f}"])
        print()
        if "phase" in commands:
            print("phase arguments:", " ".join(commands["phase"]).replace("{out}", "DIR"))
        note = f" (min of {args.repeats})" if args.repeats > 1 else ""
        table(["command (s)" + note, tree_label, base_label, "tree / base"], rows)
        table(["item", "value"], machine_rows())
    finally:
        for path in worktrees:
            subprocess.run(["git", "worktree", "remove", "--force", path], cwd=ROOT,
                           capture_output=True)
        if not args.keep:
            shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
