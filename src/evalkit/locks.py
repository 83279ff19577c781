"""Advisory file locks: one writer per cache file or run folder, the others wait and say for whom.

A lock is ``flock`` on a small lock file beside what it guards. The kernel drops it when its
holder exits, killed or not, so a lock is never left stale; the file itself stays (deleting a
lock file while another process waits on it would let two writers in). The holder writes who it
is (pid, host, start time, command) into the file, which a waiting process prints.

An ``flock`` belongs to the open file, and a forked child (a DataLoader worker) shares it: were the
child to keep its copy, a holder killed with ``kill -9`` would leave the lock held by its orphaned
workers until they noticed and exited, seconds later. So a forked child closes its copies of the
held locks at once (``os.register_at_fork``); only the process that took a lock holds it.
"""

from __future__ import annotations

import fcntl
import os
import socket
import sys
import time
import weakref
from pathlib import Path
from typing import Callable

_HELD: weakref.WeakSet[FileLock] = weakref.WeakSet()  # the locks this process holds


def _drop_inherited_locks() -> None:
    """In a forked child: close the child's copies of the parent's held locks (the parent keeps them)."""
    for lock in list(_HELD):
        if lock._fd is not None:
            try:
                os.close(lock._fd)
            except OSError:
                pass
            lock._fd = None
    _HELD.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_drop_inherited_locks)


def _holder_line() -> str:
    command = " ".join(Path(sys.argv[0]).name if i == 0 else arg for i, arg in enumerate(sys.argv))[:200]
    return f"pid {os.getpid()} on {socket.gethostname()} since {time.strftime('%H:%M:%S')} ({command})"


class FileLock:
    """An exclusive lock on ``path`` (created if missing), held between :meth:`acquire` and :meth:`release`.

    Args:
        path: the lock file.
        what: what it guards, for the waiting line (``the cache …/train-rows-….h5``).
    """

    def __init__(self, path: str | Path, what: str) -> None:
        self.path = Path(path)
        self.what = what
        self._fd: int | None = None

    def try_acquire(self) -> bool:
        """Take the lock if it is free; ``False`` (holding nothing) if another process has it."""
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        self._hold(fd)
        return True

    def acquire(self, log: Callable[[str], None] = print) -> None:
        """Take the lock, waiting (with one line naming the holder) while another process has it."""
        if self.try_acquire():
            return
        holder = self.path.read_text(errors="replace").strip() or "another process"
        log(f"waiting for {self.what}: it is locked by {holder}")
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        fcntl.flock(fd, fcntl.LOCK_EX)
        self._hold(fd)

    def _hold(self, fd: int) -> None:
        self._fd = fd
        _HELD.add(self)
        os.ftruncate(fd, 0)
        os.pwrite(fd, _holder_line().encode(), 0)

    def release(self) -> None:
        if self._fd is not None:
            os.ftruncate(self._fd, 0)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
        _HELD.discard(self)

    def __enter__(self) -> FileLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
