"""What the OS raised on a write (no space, a quota, a read-only or failing disk), turned
into the one-line LocalqError the CLI prints.

Its own module because SQLite's errors (Store's sqlite_failure), the vectors file, the output
folders (outputs.py) and the CLI's last-resort handler all need the same words, and a
full disk must be named before anything could call data "damaged".
"""

from __future__ import annotations

import errno
import os
import re
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from localq.errors import DiskFull, LocalqError, WriteFailed

# Below this much free space, an I/O error from SQLite (which reports a failed write of
# its shared-memory or journal file as "disk I/O error", not as "full") is a full disk:
# SQLite's -shm file alone needs 32 KiB, a WAL frame a page, a checkpoint more.
LOW_SPACE_BYTES = 1 << 20

SPACE_ERRNOS = (errno.ENOSPC, errno.EDQUOT)

_ERRNO_IN_TEXT = re.compile(r"(?:errno|os error)\s*(\d+)", re.IGNORECASE)


def existing_dir(where: str | os.PathLike) -> Path:
    """``where`` if it is a directory, else its nearest existing parent: the place to name."""
    path = Path(os.fsdecode(where)).absolute()  # an error's filename may be bytes
    for candidate in (path, *path.parents):
        try:
            if candidate.is_dir():
                return candidate
        except OSError:
            continue
    return path


def disk_full(where: str | os.PathLike, quota: bool = False) -> DiskFull:
    what = "disk quota exceeded" if quota else "no space left"
    return DiskFull(f"{what} on {existing_dir(where)}: free some and re-run; nothing was lost")


def low_on_space(where: str | os.PathLike) -> bool:
    """True when the file system holding ``where`` has (almost) no room left for a user."""
    try:
        st = os.statvfs(existing_dir(where))
    except OSError:
        return False
    return st.f_bavail * st.f_frsize < LOW_SPACE_BYTES


def error_number(exc: BaseException) -> int | None:
    """The errno of an OSError, or the one a library wrote into its message (pyarrow:
    "[errno 28] No space left", safetensors: "os error 28")."""
    number = getattr(exc, "errno", None)
    if isinstance(number, int):
        return number
    found = _ERRNO_IN_TEXT.search(str(exc))
    return int(found.group(1)) if found else None


def write_failure(exc: BaseException, where: str | os.PathLike) -> LocalqError | None:
    """The one-line error for a write that failed for want of space or a working disk at
    ``where``, or None when ``exc`` is some other failure."""
    number = error_number(exc)
    if number in SPACE_ERRNOS:
        return disk_full(where, quota=number == errno.EDQUOT)
    place = existing_dir(where)
    if number == errno.EROFS:
        return WriteFailed(
            f"{place} is on a read-only file system: make it writable or use another place; nothing was lost"
        )
    if number == errno.EIO:
        if low_on_space(place):
            return disk_full(place)
        return WriteFailed(
            f"input/output error writing in {place} (a failing or removed disk?): check it and re-run; nothing was lost"
        )
    return None


@contextmanager
def write_failures_named(where: str | os.PathLike) -> Iterator[None]:
    """Inside, an OSError for want of space or a working disk becomes write_failure's
    LocalqError naming ``where``; any other OSError passes unchanged."""
    try:
        yield
    except OSError as exc:
        failure = write_failure(exc, where)
        if failure is None:
            raise
        raise failure from exc
