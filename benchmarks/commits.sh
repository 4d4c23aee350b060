#!/usr/bin/env bash
# Time one dyn command on two commits, side by side in one run.
#
#   bash benchmarks/commits.sh BASE [REPEATS] -- DYN ARGS...
#   bash benchmarks/commits.sh 674c3b4 1 -- solve --v0 0.001 --v0 1 --times 200,2000,20000,inf
#
# BASE is checked out into a temporary git worktree (its own Numba cache);
# each version runs once untimed (compiles its kernels), then REPEATS times
# alternating (this tree, BASE, this tree, ...), each with its own --out
# folder under the temporary directory, emptied before each run.  Prints the wall times, their ratio,
# the time each command reported itself (e.g. dyn phase's '...; 12.0 s': the sweep without
# imports and figure), and whether the outputs agree (first 12 lines, timings left out).
# Needs the project installed in the active environment (pip install -e .).
# The commands run in the temporary directory: give ARGS absolute paths.
set -euo pipefail
base=${1:?usage: commits.sh BASE [REPEATS] -- ARGS...}; shift
reps=1
if [[ ${1:-} != "--" ]]; then reps=$1; shift; fi
[[ ${1:-} == "--" ]] || { echo "commits.sh: expected -- before the dyn arguments" >&2; exit 2; }
shift
here=$(cd "$(dirname "$0")/.." && pwd)
tmp=$(mktemp -d)
trap 'git -C "$here" worktree remove --force "$tmp/base" >/dev/null 2>&1 || true; rm -rf "$tmp"' EXIT
git -C "$here" worktree add --detach "$tmp/base" "$base" >/dev/null 2>&1
one() {  # one LABEL SRC -> prints wall seconds, keeps stdout in $tmp/LABEL.log
    local t0 t1
    rm -rf "$tmp/out-$1"  # a fresh output folder: resumable commands (phase) must not resume
    t0=$(date +%s.%N)
    # run from $tmp: python -c puts the working directory first on sys.path, so
    # run from the repository root, "base" would import this tree's packages
    (cd "$tmp" && PYTHONPATH="$2" python -c "import sys; from compare.cli import main; sys.argv[0] = 'dyn'; main()" \
        "${args[@]}" --out "$tmp/out-$1") > "$tmp/$1.log" 2>&1
    t1=$(date +%s.%N)
    python -c "print($t1 - $t0)"
}
reported() {  # reported LABEL -> the time the command printed itself ('...; 12.0 s'), or n/a
    local s
    s=$(grep -oE '; [0-9.]+ s$' "$tmp/$1.log" | head -n 1 | grep -oE '[0-9.]+' || true)
    echo "${s:-n/a}"
}
args=("$@")
for v in "this $here" "base $tmp/base"; do  # each label imports its own tree's packages
    set -- $v
    got=$(cd "$tmp" && PYTHONPATH="$2" python -c "import compare, dynamics; print(compare.__file__, dynamics.__file__)")
    case "$got" in
        "$2/compare/"*" $2/dynamics/"*) echo "$1: $got" ;;
        *) echo "commits.sh: $1 imports $got, not $2 (an installed copy shadows it?)" >&2; exit 1 ;;
    esac
done
echo "warming up (compiles each version's kernels once) ..."
one this "$here" >/dev/null
one base "$tmp/base" >/dev/null
for k in $(seq "$reps"); do
    a=$(one this "$here"); ra=$(reported this)
    b=$(one base "$tmp/base"); rb=$(reported base)
    printf 'repeat %d: this tree %.1f s, %s %.1f s, base/this = %.2fx (wall); reported by the command: %s s vs %s s\n' \
        "$k" "$a" "$base" "$b" "$(python -c "print($b / $a)")" "$ra" "$rb"
done
strip() { head -n 12 "$1" | grep -v -E '[0-9.]+ s\)|; [0-9.]+ s$|total [0-9.]+ s|^ *wrote '; }
if diff <(strip "$tmp/this.log") <(strip "$tmp/base.log") >/dev/null; then
    echo "outputs (first 12 lines, timings left out): identical"
else
    echo "outputs differ:"; diff <(strip "$tmp/this.log") <(strip "$tmp/base.log") || true
fi
