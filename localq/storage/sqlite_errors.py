"""What SQLite raised, turned into the one-line LocalqError the CLI prints.

Its own module because the CLI maps errors raised outside any Store call too, and
should not need the Store for that.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from localq.errors import CollectionBusy, CollectionUnwritable, DatabaseDamaged, LocalqError
from localq.os_errors import disk_full, low_on_space


def sqlite_failure(path: Path, exc: sqlite3.Error) -> LocalqError:
    """A one-line, actionable error for what SQLite raised on ``path``."""
    name = getattr(exc, "sqlite_errorname", "") or ""
    msg = str(exc)
    if name.startswith("SQLITE_BUSY") or "locked" in msg:
        return CollectionBusy(f"{path} stayed locked by another process ({msg}); try again when it finishes")
    # Before any "damaged" or "unwritable" wording: a full disk is neither, and SQLite
    # reports it as SQLITE_FULL ("database or disk is full") or, for its -shm and -wal
    # files, as a plain I/O error.
    if name.startswith("SQLITE_FULL") or "disk is full" in msg or low_on_space(path.parent):
        return disk_full(path.parent)
    if name.startswith(("SQLITE_READONLY", "SQLITE_CANTOPEN", "SQLITE_PERM", "SQLITE_IOERR")) or "readonly" in msg \
            or "unable to open" in msg:
        return CollectionUnwritable(
            f"cannot use {path}: {msg}; localq needs write access to the collection directory and its files, "
            "even to search (SQLite keeps its write-ahead log and shared memory there)"
        )
    if isinstance(exc, sqlite3.IntegrityError):
        # SQLite refused a write that would break a rule (a UNIQUE path, a NOT NULL
        # column): it wrote nothing and the file is whole. Only `localq check` can say
        # the database is damaged, so this is not called damage.
        return LocalqError(
            f"collection database {path} refused a write ({msg}); nothing was written and the collection "
            "is as it was (`localq check` confirms it)"
        )
    return DatabaseDamaged(
        f"collection database {path} is damaged ({msg}): restore it from a backup, or move it aside "
        f"(mv {path} {path}.broken) and re-index into a new collection; `localq check` says what else is affected"
    )
