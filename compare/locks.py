"""Single-writer locks of dyn's outputs: an exclusive ``fcntl.flock`` of a
lock file that holds the holder's pid.  The OS releases it when the holder
dies, even by SIGKILL; a forked child closes its copies (``register_at_fork``)
so it never keeps its parent's lock alive.  ``SweepStore`` (compare/store.py)
holds one per store; ``PathLock`` is the lock on its own (``dyn solve``'s
folder).
"""
from __future__ import annotations

import errno
import fcntl
import os
import weakref

__all__ = ["HOLDERS", "LockHolder", "PathLock", "StoreBusy", "StoreError", "acquire_lock"]


class StoreError(ValueError):
    """A sweep store problem, with a one-line user-facing message."""


class StoreBusy(StoreError):
    """Another process holds the store's lock."""


HOLDERS: "weakref.WeakSet" = weakref.WeakSet()  # lock holders (SweepStore, PathLock)


def _forget_locks_in_child() -> None:
    """After fork: the child must not keep the parent's locks alive (flock locks
    belong to the open file, shared by inherited descriptors).  Close the
    child's copies without touching the lock or the pid in the lock file."""
    for holder in list(HOLDERS):
        fd, holder._lock_fd = holder._lock_fd, None
        if fd is not None:
            os.close(fd)


os.register_at_fork(after_in_child=_forget_locks_in_child)


def acquire_lock(lock_path: str, what: str) -> int:
    """Exclusive ``flock`` of ``lock_path`` (created) without waiting; writes our
    pid into it.  Returns its descriptor; StoreBusy naming ``what`` and the
    holder's pid if another process holds it."""
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        try:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
        finally:
            os.close(fd)
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            raise StoreBusy(f"{what} is in use by another dyn process (pid {holder}); "
                            "wait for it to finish or choose another --out") from None
        raise StoreError(f"cannot lock {lock_path}: {exc.strerror}") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def _release(holder) -> None:
    """Release ``holder._lock_fd`` (idempotent; the lock file stays)."""
    fd, holder._lock_fd = holder._lock_fd, None
    if fd is not None:
        try:
            os.ftruncate(fd, 0)
        finally:
            os.close(fd)  # closing the only descriptor releases the flock


class LockHolder:
    """Holds ``_lock_fd`` (an ``acquire_lock``d lock): released by :meth:`close`,
    on leaving the ``with`` block, at garbage collection, or by the OS when
    the holder dies."""

    _lock_fd = None

    def close(self) -> None:
        """Release the lock (idempotent).  The lock file itself stays."""
        HOLDERS.discard(self)
        _release(self)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass


class PathLock(LockHolder):
    """The store's single-writer lock on its own: an exclusive ``flock`` of
    ``lock_path`` (holding the holder's pid).  ``what`` names the guarded
    output in the StoreBusy message (``dyn solve``: its folder)."""

    def __init__(self, lock_path, what=None):
        lock_path = os.fspath(lock_path)
        self._lock_fd = acquire_lock(lock_path, what or lock_path)
        HOLDERS.add(self)
