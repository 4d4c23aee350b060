"""Atomic file writes (temporary file beside the target, then rename): the one
implementation, used by ``compare`` for every output file and by
``dynamics.theory.lawcache`` for its cache (imports go one way, so it lives
in the bottom package).

Guarantees of ``atomic_target``:

- the target is either untouched or replaced whole (temp + ``os.replace``);
- an existing target that is not a regular file (a device such as /dev/null, a
  FIFO, a directory) is refused (``ParamError`` naming ``out``), never replaced;
- Ctrl-C / SIGTERM inside the block are held until the block ends (a signal
  raised inside an HDF5 call can leave its lock held and hang the
  process); then the write is abandoned (the target is not replaced), the
  temporary removed, and the signal delivered to the previous handler;
- temporaries are named ``.NAME.dyn-XXXXXXXXXXXX<suffix>`` (12 hex digits,
  suffix ending in ``tmp``), so ``remove_stale_temporaries`` can tell them
  from a user's own ``.notes.tmp``.
"""
from __future__ import annotations

import contextlib
import os
import re
import secrets
import signal
import stat
import threading

from .params import ParamError

# .NAME.dyn-<12 hex><suffix>, suffix like .tmp or .nc.tmp (see atomic_target)
_TEMP_RE = re.compile(r"^\..+\.dyn-[0-9a-f]{12}(\.[A-Za-z0-9]+)*\.tmp$")
_HELD = (signal.SIGINT, signal.SIGTERM)
# Signals a program's handler has received (the CLI's ``_terminate`` appends to
# it): a stop that was swallowed on the way (a KeyboardInterrupt raised inside
# a destructor is only printed) still prevents any later output.
STOP_SIGNALS: list = []


def is_dyn_temporary(name: str) -> bool:
    """True for a file name made by ``atomic_target`` (and nothing else)."""
    return bool(_TEMP_RE.match(name))


def _umask_mode() -> int:
    """Mode of a new file under the current umask (0o644 for umask 022)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISFIFO, "a FIFO"),
          (stat.S_ISSOCK, "a socket"))


def file_kind(path) -> str | None:
    """None if ``path`` does not exist or is a regular file (following links),
    else what it is ('a FIFO', 'a character device', ...)."""
    try:
        mode = os.stat(path).st_mode
    except (FileNotFoundError, NotADirectoryError):  # new (a path through a file fails later)
        return None
    except OSError as exc:  # a symlink loop, a path through a file, ...
        return f"unreadable ({exc.strerror or exc})"
    if stat.S_ISREG(mode):
        return None
    return next((what for test, what in _KINDS if test(mode)), "not a regular file")


def check_replaceable(path, name: str = "out"):
    """Refuse (ParamError naming ``name``) an existing target that is not a
    regular file: replacing /dev/null or a FIFO by a regular file is never
    what the user meant."""
    kind = file_kind(path)
    if kind is not None:
        raise ParamError(name, os.fspath(path),
                         f"exists and is not a regular file ({kind}); give the path of a "
                         f"new or regular file")


@contextlib.contextmanager
def held_signals():
    """Hold SIGINT and SIGTERM for the block (main thread only; elsewhere a
    no-op).  Yields the list of signals received meanwhile; on exit the old
    handlers come back and the first held signal is delivered to them
    (``signal.raise_signal``: KeyboardInterrupt, the CLI's handler, or death
    by SIG_DFL)."""
    if threading.current_thread() is not threading.main_thread():
        yield []
        return
    received = []
    old = {}
    try:
        for sig in _HELD:
            if signal.getsignal(sig) is not signal.SIG_IGN:  # an ignored signal stays so
                old[sig] = signal.signal(sig, lambda signum, frame: received.append(signum))
        yield received
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)
        if received:  # also when the block failed: the signal wins
            signal.raise_signal(received[0])


def _new_temporary(folder: str, base: str, suffix: str) -> str:
    for _ in range(100):
        tmp = os.path.join(folder, f".{base}.dyn-{secrets.token_hex(6)}{suffix}")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            continue
        os.close(fd)
        return tmp
    raise FileExistsError("no free temporary name")


@contextlib.contextmanager
def atomic_target(path, suffix=".tmp"):
    """Yield a temporary path beside ``path``; rename it over ``path`` on success.

    The file gets the umask's mode; any failure, Ctrl-C or SIGTERM removes the
    temporary file (signals are held during the block, see the module
    docstring), and I/O errors (disk full) become one ``OSError`` naming
    ``path``.  An existing ``path`` that is not a regular file is refused.
    """
    path = os.fspath(path)
    if not suffix.endswith("tmp"):
        suffix += ".tmp"
    check_replaceable(path)
    folder = os.path.dirname(os.path.abspath(path))
    if STOP_SIGNALS:  # stopped already (the interrupt was swallowed): write nothing
        raise KeyboardInterrupt
    with held_signals() as received:
        try:
            os.makedirs(folder, exist_ok=True)
            tmp = _new_temporary(folder, os.path.basename(path), suffix)
        except OSError as exc:
            raise OSError(f"cannot write {path}: {exc.strerror or exc}") from None
        try:
            yield tmp
            stopped = bool(received or STOP_SIGNALS)
            if not stopped:  # a signal abandons the write: the target stays as it was
                os.chmod(tmp, _umask_mode())
                os.replace(tmp, path)
        except (OSError, RuntimeError) as exc:  # netCDF4 reports disk full as RuntimeError
            raise OSError(f"could not write {path}: {exc}") from None
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.remove(tmp)
    if stopped:  # held signals were delivered on leaving held_signals; a swallowed one:
        raise KeyboardInterrupt


def remove_stale_temporaries(folder):
    """Remove temporary files of ``atomic_target`` (``.NAME.dyn-<12 hex>...tmp``)
    that a killed run left in ``folder``; other files, such as a user's
    ``.notes.tmp``, are never touched."""
    if os.path.isdir(folder):
        for entry in os.listdir(folder):
            if is_dyn_temporary(entry):
                with contextlib.suppress(OSError):
                    os.remove(os.path.join(folder, entry))
