"""The Numba cache folder is keyed by the source of the whole ``dynamics``
package (numba#1833: a cached kernel freezes its callees and the globals it
reads, e.g. ``params.LOSS_MAX``), so a change anywhere in the package starts
an empty folder."""
import os
import re
import shutil
import subprocess
import sys
import time

from dynamics import numba_cache

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _copy_package(dest):
    target = os.path.join(dest, "dynamics")
    shutil.copytree(numba_cache.PACKAGE_ROOT, target,
                    ignore=shutil.ignore_patterns("__pycache__"))
    return target


def test_key_changes_with_a_constant_in_params(tmp_path):
    copy = _copy_package(tmp_path)
    assert numba_cache.cache_key(copy) == numba_cache.cache_key(numba_cache.PACKAGE_ROOT)
    params = os.path.join(copy, "params.py")
    with open(params) as fh:
        text = fh.read()
    edited, count = re.subn(r"(?m)^LOSS_MAX = .*$", "LOSS_MAX = 1e7", text)
    assert count == 1
    with open(params, "w") as fh:
        fh.write(edited)
    assert numba_cache.cache_key(copy) != numba_cache.cache_key(numba_cache.PACKAGE_ROOT)


def test_key_covers_subpackages_versions_and_only_python_sources(tmp_path):
    copy = _copy_package(tmp_path)
    key = numba_cache.cache_key(copy)
    assert re.fullmatch(r"dyn-[0-9a-f]{16}", key)
    with open(os.path.join(copy, "notes.txt"), "w") as fh:   # not a source file
        fh.write("x")
    assert numba_cache.cache_key(copy) == key
    with open(os.path.join(copy, "theory", "measure.py"), "a") as fh:
        fh.write("\n# edited\n")
    assert numba_cache.cache_key(copy) != key
    versions = numba_cache.versions()
    other = versions[:-1] + (versions[-1] + ".post1",)   # another NumPy
    assert numba_cache.cache_key(copy, other) != numba_cache.cache_key(copy, versions)


def test_base_is_the_users_folder_also_in_a_child_process(tmp_path):
    user = str(tmp_path / "user")
    keyed = os.path.join(user, "dyn-0123456789abcdef")
    assert numba_cache.base_dir({"NUMBA_CACHE_DIR": user}) == user
    # what a child of a process that ran setup() inherits
    assert numba_cache.base_dir({"NUMBA_CACHE_DIR": keyed, "DYN_NUMBA_CACHE_DIR": keyed,
                                 "DYN_NUMBA_CACHE_BASE": user}) == user
    assert numba_cache.base_dir({"XDG_CACHE_HOME": str(tmp_path)}) == \
        os.path.join(str(tmp_path), "dyn", "numba")


def test_prune_keeps_the_newest_keyed_folders(tmp_path):
    base = str(tmp_path)
    now = time.time()
    names = [f"dyn-{i:016x}" for i in range(6)]
    for age, name in enumerate(names):          # names[0] is the newest
        os.mkdir(os.path.join(base, name))
        os.utime(os.path.join(base, name), (now - 100 * age, now - 100 * age))
    current = "dyn-ffffffffffffffff"
    os.mkdir(os.path.join(base, current))
    os.utime(os.path.join(base, current), (now - 10_000, now - 10_000))
    os.mkdir(os.path.join(base, "somebody-else"))   # never touched
    # used in the last hour (the default MIN_AGE): kept, whatever keep says
    assert numba_cache.prune(base, current, keep=2) == []
    assert numba_cache.prune(base, current, keep=2, min_age=250) == \
        [os.path.join(base, n) for n in names[3:]]
    removed = numba_cache.prune(base, current, keep=2, min_age=0)
    assert sorted(os.listdir(base)) == sorted([current, "somebody-else"] + names[:2])
    assert removed == [os.path.join(base, names[2])]
    assert numba_cache.prune(base, current, keep=2, min_age=0) == []


def test_prune_counts_numba_writes_in_a_subfolder_as_use(tmp_path):
    base, now = str(tmp_path), time.time()
    for name, age in (("dyn-0000000000000001", 7200), ("dyn-0000000000000002", 9000)):
        os.makedirs(os.path.join(base, name, "dynamics_abc"))
        os.utime(os.path.join(base, name), (now - age, now - age))
    old = os.path.join(base, "dyn-0000000000000002", "dynamics_abc")
    os.utime(old, (now - 9000, now - 9000))   # the other one was written just now
    assert numba_cache.prune(base, "dyn-ffffffffffffffff", keep=0) == [os.path.dirname(old)]


_CHILD = """
import numba                     # as compare/cli.py: numba is loaded before dynamics
from dynamics import numba_cache
from dynamics.kernels import normalised_dt
assert normalised_dt(1.0, 2.0, 4.0, 10.0, 0.5) == 0.5
print(numba_cache.CACHE_DIR)
print(numba.config.CACHE_DIR)
"""


def _child(tmp_path):
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path), NUMBA_DEBUG_CACHE="1")
    for name in ("DYN_NUMBA_CACHE_DIR", "DYN_NUMBA_CACHE_BASE"):
        env.pop(name, None)
    res = subprocess.run([sys.executable, "-c", _CHILD], capture_output=True, text=True,
                         cwd=ROOT, env=env, timeout=120)
    assert res.returncode == 0, res.stderr
    return res.stdout


def test_fresh_interpreter_caches_under_the_key_and_loads_it_again(tmp_path):
    folder = os.path.join(str(tmp_path), numba_cache.cache_key())
    first = _child(tmp_path)
    lines = [ln for ln in first.splitlines() if not ln.startswith("[cache]")]
    assert lines == [folder, folder]   # also numba's config after a compilation
    assert os.listdir(str(tmp_path)) == [os.path.basename(folder)]
    saved = [ln for ln in first.splitlines() if ln.startswith("[cache] data saved")]
    assert saved and all(folder + os.sep in ln for ln in saved)
    cached = [f for _, _, files in os.walk(folder) for f in files]
    assert any(".normalised_dt-" in f and f.endswith(".nbc") for f in cached)
    second = _child(tmp_path)   # a second process loads the machine code
    assert "[cache] data loaded from" in second
    assert "data saved" not in second
