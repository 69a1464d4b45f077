"""The collection's write lock: one writing process at a time, readers never wait.

Every write to a collection (indexing a batch, a training round, undo, reset, creating
or deleting a classifier, repair) runs under an OS file lock (``fcntl.flock``) on
``<collection>/localq.lock``. Two writers without it would interleave their SQLite ids
while each appended its own rows, so rows would stop matching images; under the lock a
writer writes its rows to vectors.npy at SQLite's row count, then commits, so ids and
rows cannot diverge.

Locks are held for one batch or one round (milliseconds to seconds), not for a whole
run, so a labeling session and an indexing run interleave. A second writer waits up to
``LOCALQ_LOCK_TIMEOUT`` seconds (default 120; 0 = fail at once), telling the caller once
through ``on_wait`` (the CLI prints it; core code never prints), then fails with one
line. The lock is re-entrant within one object, so nested writers do not deadlock.
flock locks belong to the open file: the kernel drops them when a process dies, even
by kill -9, so a crash never leaves a stale lock behind.
"""

from __future__ import annotations

import errno
import os
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

from localq.errors import CollectionBusy, CollectionUnwritable

LOCK_FILE = "localq.lock"
DEFAULT_TIMEOUT_S = 120.0
_POLL_S = 0.05

OnWait = Callable[[str], None]


def lock_timeout() -> float:
    """Seconds a writer waits for another one (``LOCALQ_LOCK_TIMEOUT``; 0 = do not wait)."""
    raw = os.environ.get("LOCALQ_LOCK_TIMEOUT")
    if not raw:
        return DEFAULT_TIMEOUT_S
    try:
        return max(0.0, float(raw))
    except ValueError:
        return DEFAULT_TIMEOUT_S


class WriteLock:
    """Re-entrant exclusive flock on ``root/localq.lock``."""

    def __init__(self, root: Path, on_wait: OnWait | None = None, timeout: float | None = None):
        self.path = Path(root) / LOCK_FILE
        self.on_wait = on_wait
        self.timeout = timeout
        self._fd: int | None = None
        self._depth = 0

    @property
    def held(self) -> bool:
        return self._depth > 0

    @contextmanager
    def hold(self) -> Iterator[None]:
        self.acquire()
        try:
            yield
        finally:
            self.release()

    def acquire(self) -> None:
        if self._depth:
            self._depth += 1
            return
        fd = self._open()
        timeout = lock_timeout() if self.timeout is None else self.timeout
        waiting = (
            f"waiting for another localq process writing to {self.path.parent} "
            f"(up to {timeout:g} s, LOCALQ_LOCK_TIMEOUT)"
        )
        if not wait_for_flock(fd, timeout, self.on_wait, waiting):
            os.close(fd)
            waited = f"after {timeout:g} s" if timeout else "(LOCALQ_LOCK_TIMEOUT=0: not waiting)"
            raise CollectionBusy(
                f"another localq process is writing to {self.path.parent} {waited}; "
                "try again when it finishes, or raise LOCALQ_LOCK_TIMEOUT"
            )
        self._fd, self._depth = fd, 1

    def release(self) -> None:
        if not self._depth:
            return
        self._depth -= 1
        if self._depth == 0 and self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)  # closing the descriptor drops the flock

    def _open(self) -> int:
        try:
            return os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise CollectionUnwritable(
                f"cannot write to collection {self.path.parent}: {exc.strerror or exc} ({self.path}); "
                "check its permissions, or copy it somewhere writable"
            ) from None


def try_lock(path: Path) -> int | None:
    """A descriptor holding an exclusive flock on ``path`` (created if missing), or None where
    another process holds it. Closing the descriptor lets it go; so does the process's end."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    if _flock(fd, blocking=False):
        return fd
    os.close(fd)
    return None


def wait_for_flock(fd: int, timeout: float, on_wait: OnWait | None, waiting: str) -> bool:
    """Take the exclusive flock on ``fd``, polling until ``timeout`` seconds have passed;
    ``on_wait(waiting)`` once if it has to wait. False if it was not had in time."""
    deadline = time.monotonic() + timeout
    told = False
    while not _flock(fd, blocking=False):
        if time.monotonic() >= deadline:
            return False
        if not told and on_wait is not None:
            on_wait(waiting)
            told = True
        time.sleep(_POLL_S)
    return True


def _flock(fd: int, *, blocking: bool) -> bool:
    import fcntl

    try:
        fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        return True
    except OSError as exc:
        if exc.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
            return False
        raise
