"""Atomic file writes (temporary file beside the target, then rename): the one
implementation, used by ``compare`` for every output file and by
``dynamics.theory.lawcache`` for its cache (imports go one way, so it lives
in the bottom package)."""
from __future__ import annotations

import contextlib
import os
import tempfile


def _umask_mode() -> int:
    """Mode of a new file under the current umask (0o644 for umask 022)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


@contextlib.contextmanager
def atomic_target(path, suffix=".tmp"):
    """Yield a temporary path beside ``path``; rename it over ``path`` on success.

    The file gets the umask's mode (mkstemp would leave 0600); any failure,
    Ctrl-C or SIGTERM removes the temporary file, and I/O errors (disk full)
    become one ``OSError`` naming ``path``.
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(folder, exist_ok=True)
        fd, tmp = tempfile.mkstemp(suffix=suffix, prefix=f".{os.path.basename(path)}.",
                                   dir=folder)
        os.close(fd)
    except OSError as exc:
        raise OSError(f"cannot write {path}: {exc.strerror or exc}") from None
    try:
        yield tmp
        os.chmod(tmp, _umask_mode())
        os.replace(tmp, path)
    except (OSError, RuntimeError) as exc:  # netCDF4 reports disk full as RuntimeError
        raise OSError(f"could not write {path}: {exc}") from None
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def remove_stale_temporaries(folder):
    """Remove temporary files of ``atomic_target`` (``.NAME.*tmp``) that a
    killed run left in ``folder``."""
    if os.path.isdir(folder):
        for entry in os.listdir(folder):
            if entry.startswith(".") and entry.endswith("tmp"):
                with contextlib.suppress(OSError):
                    os.remove(os.path.join(folder, entry))
