"""The cache and run-folder lock: held by the process that took it, and by none of its forked children."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from evalkit.locks import FileLock

# Takes the lock, forks a child that outlives it (as a DataLoader worker outlives a `kill -9` of
# `evalkit predict` by a few seconds), then kills itself.
HOLDER = textwrap.dedent("""
    import os, signal, sys, time
    from evalkit.locks import FileLock

    lock = FileLock(sys.argv[1], "a test file")
    assert lock.try_acquire()
    child = os.fork()
    if child == 0:
        time.sleep(60)
        os._exit(0)
    with open(sys.argv[2], "w") as out:
        out.write(str(child))
    os.kill(os.getpid(), signal.SIGKILL)
""")


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_killed_holder_frees_the_lock_at_once_though_its_forked_child_lives_on(tmp_path: Path):
    lock_file, child_file = tmp_path / "x.h5.lock", tmp_path / "child.pid"
    holder = subprocess.run([sys.executable, "-c", HOLDER, str(lock_file), str(child_file)], timeout=60)
    assert holder.returncode == -signal.SIGKILL
    child = int(child_file.read_text())
    try:
        os.kill(child, 0)  # the orphaned child is still alive
        lock = FileLock(lock_file, "a test file")
        deadline = time.monotonic() + 2  # the kernel frees it on the holder's exit; allow for a slow machine
        while not lock.try_acquire():
            assert time.monotonic() < deadline, "the lock is still held after its holder was killed"
            time.sleep(0.05)
        lock.release()
    finally:
        try:
            os.kill(child, signal.SIGKILL)
        except ProcessLookupError:
            pass


def test_a_forked_child_does_not_hold_or_release_the_parents_lock(tmp_path: Path):
    lock = FileLock(tmp_path / "y.lock", "a test file")
    assert lock.try_acquire()
    try:
        child = os.fork()
        if child == 0:  # the child: its copy is closed, and releasing does nothing to the parent's lock
            code = 0 if lock._fd is None else 1
            lock.release()
            os._exit(code)
        _, status = os.waitpid(child, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert not FileLock(tmp_path / "y.lock", "a test file").try_acquire()  # still held here
    finally:
        lock.release()
    again = FileLock(tmp_path / "y.lock", "a test file")
    assert again.try_acquire()
    again.release()
