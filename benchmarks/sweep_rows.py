"""Exact-level throughput of the default phase sweep: this tree vs an older commit.

The issue's target: per-configuration ``exact`` throughput in the default
64 x 64 x 8 sweep (v0 x ||mu|| x seeds, T = 200, exact, wishart) >= 3x that
of commit fc0e575, with identical results.  ``dyn phase`` end to end
(``benchmarks/commits.sh``) adds imports, the store, netCDF and the figure;
this script times only the computation of the 64 rows, as the sweep does it
(``compare.phase.compute_chunk``: statistics, kernels, results; no file I/O).

Each version runs in its own interpreter with its own packages on the path
(the base in a temporary git worktree with its own Numba cache): one untimed
row (kernel cache load, statistics), then all 64 rows timed; versions
alternate, REPEATS times.  The script then checks that both computed the
same numbers (test error, loss, train error, status and point seeds
identical; margin within 1e-14 relative: its summation order changed at
ac197b1) and prints the ratios.

    python benchmarks/sweep_rows.py                 # against fc0e575, 3 repeats
    python benchmarks/sweep_rows.py --base REV --repeats 5 --rows 16
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile

import numpy as np

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

EXACT = ("test_error", "loss", "train_error", "status", "point_seed")

# Runs in a child interpreter whose sys.path starts with the tree under test;
# uses only the API both versions have (make_spec, parse_axis, compute_chunk).
CHILD = """
import sys, time, numpy as np
from dynamics import Params, RunSpec
from compare.phase import compute_chunk, make_spec, parse_axis
rows, out = int(sys.argv[1]), sys.argv[2]
spec = make_spec(RunSpec(Params(), "exact", "wishart", 8), parse_axis("v0=1e-3..10:64"),
                 parse_axis("mu=0.5..50:64"), tau=0.25)
compute_chunk(spec, 0)  # untimed: kernel cache load, statistics (shared by every row)
t0 = time.perf_counter()
res = [compute_chunk(spec, ix) for ix in range(rows)]
elapsed = time.perf_counter() - t0
np.savez(out, **{k: np.stack([r[k] for r in res]) for k in res[0]})
print(elapsed)
"""


def run_child(tree: str, rows: int, out: str) -> float:
    env = {**os.environ, "PYTHONPATH": tree}
    done = subprocess.run([sys.executable, "-c", CHILD, str(rows), out], cwd=tempfile.gettempdir(),
                          env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"sweep_rows: the run in {tree} failed:\n{done.stderr}")
    return float(done.stdout.strip().splitlines()[-1])


def check_imports(tree: str) -> None:
    """The child must import the packages of ``tree`` (not an installed copy)."""
    code = "import compare, dynamics; print(compare.__file__, dynamics.__file__)"
    got = subprocess.run([sys.executable, "-c", code], cwd=tempfile.gettempdir(),
                         env={**os.environ, "PYTHONPATH": tree}, capture_output=True,
                         text=True).stdout.split()
    if len(got) != 2 or not all(g.startswith(os.path.join(tree, "")) for g in got):
        raise SystemExit(f"sweep_rows: {tree} imports {got} (an installed copy shadows it?)")


def compare_results(a: str, b: str) -> list[str]:
    """Differences between two saved result sets (empty: the same numbers)."""
    A, B = np.load(a), np.load(b)
    bad = []
    for k in EXACT:
        if k in A and not np.array_equal(A[k], B[k], equal_nan=k not in ("status",
                                                                       "point_seed")):
            bad.append(f"{k} differs")
    if not np.allclose(A["margin"], B["margin"], rtol=1e-14, atol=0, equal_nan=True):
        bad.append("margin differs by more than 1e-14 relative")
    return bad


def main(argv=None):
    from _common import machine_rows, table

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--base", default="fc0e575", help="commit to compare with (default: "
                    "fc0e575, the code of the issue)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--rows", type=int, default=64, help="rows of the sweep timed (<= 64)")
    args = ap.parse_args(argv)
    if not 1 <= args.rows <= 64:
        ap.error(f"--rows must be in [1, 64], got {args.rows}")
    if args.repeats < 1:
        ap.error(f"--repeats must be >= 1, got {args.repeats}")
    print(f"# Default sweep rows (exact, wishart, {args.rows} x 64 x 8 runs, T = 200): "
          f"this tree vs {args.base}\n")
    table(["item", "value"], machine_rows())
    with tempfile.TemporaryDirectory() as tmp:
        base = os.path.join(tmp, "base")
        subprocess.run(["git", "-C", HERE, "worktree", "add", "--detach", base, args.base],
                       check=True, capture_output=True)
        try:
            for tree in (HERE, base):
                check_imports(tree)
            outs = {"this": os.path.join(tmp, "this.npz"), "base": os.path.join(tmp, "base.npz")}
            print("compiling each version's kernels (untimed) ...", flush=True)
            for label, tree in (("this", HERE), ("base", base)):
                run_child(tree, 1, outs[label])
            rows = []
            for k in range(args.repeats):
                t_this = run_child(HERE, args.rows, outs["this"])
                t_base = run_child(base, args.rows, outs["base"])
                runs = args.rows * 64 * 8
                rows.append([k + 1, f"{t_this:.2f}", f"{t_base:.2f}",
                             f"{runs / t_this:.0f}", f"{runs / t_base:.0f}",
                             f"{t_base / t_this:.2f}x"])
                print(f"repeat {k + 1}: this {t_this:.2f} s, {args.base} {t_base:.2f} s",
                      flush=True)
            bad = compare_results(outs["this"], outs["base"])
        finally:
            subprocess.run(["git", "-C", HERE, "worktree", "remove", "--force", base],
                           capture_output=True)
    print()
    table(["repeat", "this tree (s)", f"{args.base} (s)", "runs/s, this tree",
           f"runs/s, {args.base}", "throughput ratio"], rows)
    print("results: " + ("identical (margin within 1e-14 relative)" if not bad
                         else "DIFFERENT: " + "; ".join(bad)))
    if bad:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
