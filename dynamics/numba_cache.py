"""Numba's on-disk cache in a folder keyed by this package's source.

Numba keys a cached function on its own file only: callees in other modules
and module globals (``params.LOSS_MAX``, ``THETA_MAX``) are frozen into the
cached machine code (numba issue 1833), so editing ``params.py`` would leave
every cached kernel with the old values.  ``setup()``, called at the top of
``dynamics/__init__.py`` (before any ``@njit(cache=True)`` decorator runs),
points Numba's cache at ``<base>/<key>``: ``key`` is a hash of every ``*.py``
file under ``dynamics/`` (recursively) and the Python, Numba and NumPy
versions, so any change to the package's source starts an empty folder.
``base`` is the user's ``NUMBA_CACHE_DIR`` when set, else
``$XDG_CACHE_HOME/dyn/numba`` (default ``~/.cache/dyn/numba``), else a
folder in the temporary directory when that one is not writable.  Older
keyed folders in ``base`` are pruned (the ``KEEP`` most recently used stay,
and any used in the last ``MIN_AGE`` seconds).

Numba reads ``config.CACHE_DIR`` when a dispatcher's cache is created (at
decoration), and its compiler re-reads the ``NUMBA_*`` environment before
each compilation; ``setup`` therefore sets the environment variable and
reloads Numba's configuration.  ``DYN_NUMBA_CACHE_DIR`` /
``DYN_NUMBA_CACHE_BASE`` record what it set and what the user had, so a
child process (which inherits the environment) keys its own folder under
the user's base, not under its parent's keyed folder.
"""
from __future__ import annotations

import hashlib
import os
import re
import shutil
import sys
import tempfile
import time

PACKAGE_ROOT = os.path.dirname(os.path.abspath(__file__))
KEEP = 3                        # keyed folders kept besides the one in use
MIN_AGE = 3600.0                # seconds: a folder used more recently is never pruned
PREFIX = "dyn-"
_KEYED = re.compile(r"^dyn-[0-9a-f]{16}$")   # the only folders prune() removes
_SET_ENV = "DYN_NUMBA_CACHE_DIR"     # the keyed folder setup() put in NUMBA_CACHE_DIR
_BASE_ENV = "DYN_NUMBA_CACHE_BASE"   # the user's NUMBA_CACHE_DIR before that ("" if unset)
CACHE_DIR: str | None = None    # the folder in use, once setup() ran (None: Numba's default)


def source_files(root: str = PACKAGE_ROOT) -> list[str]:
    """Every ``*.py`` file under ``root`` (recursively; no ``__pycache__`` or
    hidden folders), as sorted paths relative to ``root``."""
    found = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if d != "__pycache__" and not d.startswith(".")]
        rel = os.path.relpath(folder, root)
        found += [os.path.normpath(os.path.join(rel, f)) for f in files if f.endswith(".py")]
    return sorted(found)


def versions() -> tuple[str, ...]:
    """(Python, Numba, NumPy) versions, part of the key."""
    import numba
    import numpy

    return (sys.version, numba.__version__, numpy.__version__)


def cache_key(root: str = PACKAGE_ROOT, extra: tuple[str, ...] | None = None) -> str:
    """``dyn-`` and 16 hex digits of the sha256 of the sources under ``root``
    (relative path and bytes of each file) and ``extra`` (default:
    ``versions()``)."""
    h = hashlib.sha256()
    for rel in source_files(root):
        with open(os.path.join(root, rel), "rb") as fh:
            data = fh.read()
        h.update(b"%s\0%d\0" % (rel.replace(os.sep, "/").encode(), len(data)))
        h.update(data)
    for item in versions() if extra is None else extra:
        h.update(b"\0" + str(item).encode())
    return PREFIX + h.hexdigest()[:16]


def base_dir(environ=None) -> str:
    """The folder that holds the keyed folders: the user's ``NUMBA_CACHE_DIR``
    (the one a parent process had, when ours was set by ``setup`` there),
    else ``$XDG_CACHE_HOME/dyn/numba`` (default ``~/.cache/dyn/numba``)."""
    env = os.environ if environ is None else environ
    user = env.get("NUMBA_CACHE_DIR", "")
    if user and env.get(_SET_ENV) == user:
        user = env.get(_BASE_ENV, "")
    if user:
        return os.path.abspath(os.path.expanduser(user))
    xdg = env.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(xdg, "dyn", "numba")


def _usable(path: str) -> bool:
    """Create ``path`` if needed; True when a file can be written in it."""
    try:
        os.makedirs(path, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
        os.utime(path)  # mark it as the most recently used folder (prune)
        return True
    except OSError:
        return False


def _last_used(path: str) -> float:
    """Latest mtime of ``path`` and its subfolders (Numba writes into
    ``<keyed>/<package>_<hash>/``; ``setup`` touches ``<keyed>``)."""
    times = [os.stat(path).st_mtime]
    with os.scandir(path) as entries:
        times += [e.stat().st_mtime for e in entries if e.is_dir(follow_symlinks=False)]
    return max(times)


def prune(base: str, current: str, keep: int = KEEP, min_age: float = MIN_AGE) -> list[str]:
    """Remove the keyed folders (``dyn-`` + 16 hex digits) in ``base`` other
    than ``current``, except the ``keep`` most recently used ones and any used
    in the last ``min_age`` seconds (a process of another tree may still write
    there); other entries are never touched.  Returns the removed paths."""
    try:
        names = [n for n in os.listdir(base) if _KEYED.match(n) and n != current]
    except OSError:
        return []
    dated = []
    for n in names:
        try:
            dated.append((_last_used(os.path.join(base, n)), n))
        except OSError:
            continue
    dated.sort(reverse=True)
    now = time.time()
    removed = []
    for used, n in dated[max(keep, 0):]:
        if now - used < min_age:
            continue
        path = os.path.join(base, n)
        shutil.rmtree(path, ignore_errors=True)
        removed.append(path)
    return removed


def setup(root: str = PACKAGE_ROOT, keep: int = KEEP) -> str | None:
    """Point Numba's cache at ``<base>/<cache_key(root)>``, prune old keyed
    folders, and return the folder (None when neither the base nor the
    temporary directory is writable: Numba's settings are then left alone)."""
    import numba.core.config as config

    key = cache_key(root)
    user = base_dir()
    bases = [user, os.path.join(tempfile.gettempdir(), f"dyn-numba-{_user_id()}")]
    for base in bases:
        path = os.path.join(base, key)
        if _usable(path):
            break
    else:
        return None
    prune(base, key, keep)
    env_base = os.environ.get("NUMBA_CACHE_DIR", "")
    if env_base and os.environ.get(_SET_ENV) == env_base:
        env_base = os.environ.get(_BASE_ENV, "")
    os.environ[_BASE_ENV] = env_base
    os.environ[_SET_ENV] = path
    os.environ["NUMBA_CACHE_DIR"] = path
    config.reload_config()   # takes the new NUMBA_CACHE_DIR (no-op if unchanged)
    config.CACHE_DIR = path
    global CACHE_DIR
    CACHE_DIR = path
    return path


def _user_id() -> str:
    try:
        return str(os.getuid())
    except AttributeError:  # no getuid (Windows)
        return os.environ.get("USERNAME", "user")


