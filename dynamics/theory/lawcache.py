"""``symbolic.law_exponents`` kept on disk, so that figures and tables need
neither sympy (~1 s to import) nor the derivation (~2 s) on every run.

The file is keyed by a hash of the theory's source files (``dynamics/theory/
*.py``) and the sympy version: any change to the derivation derives again.
It lives in the package's ``__pycache__`` (as numba's cache does), else in
``$XDG_CACHE_HOME/dyn`` (default ``~/.cache/dyn``); it is written atomically
(temporary file, then rename), and a missing, unreadable or malformed file
is simply derived again.  This module never imports sympy unless it derives.
"""
from __future__ import annotations

import glob
import hashlib
import json
import os
from functools import lru_cache
from importlib import metadata

from ..files import atomic_target

_HERE = os.path.dirname(os.path.abspath(__file__))


def cache_key() -> str:
    """sha256 of the theory's sources and the sympy version (first 16 hex digits)."""
    h = hashlib.sha256()
    for path in sorted(glob.glob(os.path.join(_HERE, "*.py"))):
        with open(path, "rb") as fh:
            h.update(os.path.basename(path).encode() + b"\0" + fh.read())
    try:
        h.update(metadata.version("sympy").encode())
    except metadata.PackageNotFoundError:
        pass
    return h.hexdigest()[:16]


def cache_dirs() -> list[str]:
    """Where the cache file may live, in order of preference."""
    xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return [os.path.join(_HERE, "__pycache__"), os.path.join(xdg, "dyn")]


def _valid(data) -> bool:
    return isinstance(data, dict) and bool(data) and all(
        isinstance(v, dict) and isinstance(v.get("label"), str)
        and isinstance(v.get("exponents"), dict)
        and all(isinstance(e, (int, float)) for e in v["exponents"].values())
        for v in data.values())


def law_exponents(dirs=None) -> dict:
    """``dynamics.theory.symbolic.law_exponents()``, read from the cache file
    when one with this source's key exists (same dict: {law: {exponents:
    {var: float}, label: str}}); with the default folders, once per process
    (like ``symbolic.law_exponents``)."""
    return _default() if dirs is None else _load_or_derive(list(dirs))


@lru_cache(maxsize=None)
def _default() -> dict:
    return _load_or_derive(cache_dirs())


def _load_or_derive(dirs) -> dict:
    """The cached dict from the first folder that has a valid file, else derived
    and written to the first folder that takes it."""
    name = f"law_exponents-{cache_key()}.json"
    for d in dirs:
        try:
            with open(os.path.join(d, name)) as fh:
                data = json.load(fh)
        except (OSError, ValueError):
            continue
        if _valid(data):
            return data
    from .symbolic import law_exponents as derive

    data = derive()
    text = json.dumps(data)  # insertion order kept (laws, then LAW_VARS)
    for d in dirs:  # first folder we can write to
        try:
            with atomic_target(os.path.join(d, name)) as tmp, open(tmp, "w") as fh:
                fh.write(text)
            break
        except OSError:
            continue
    return data
