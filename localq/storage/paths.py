"""Where a collection lives on disk.

A collection is one directory: ``localq.db`` (SQLite) and ``vectors.npy`` beside it (with
``vectors.ivf`` past a size).
Chosen by ``--db DIR``, else ``$LOCALQ_HOME``, else the user's data directory.
"""

import os
import sys
from pathlib import Path

from localq.errors import CollectionUnwritable, DatabaseDamaged, InvalidArgument

DB_FILE = "localq.db"
VECTORS_FILE = "vectors.npy"


def user_data_dir() -> Path:
    """The platform's per-user data directory, without extra dependencies."""
    if sys.platform == "darwin":
        base = Path.home() / "Library" / "Application Support"
    elif os.name == "nt":
        base = Path(os.environ.get("LOCALAPPDATA", Path.home() / "AppData" / "Local"))
    else:
        base = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")
    return base / "localq"


def collection_dir(explicit: str | os.PathLike | None = None) -> Path:
    if explicit is not None and not os.fspath(explicit):
        # An empty --db (an unset shell variable, "$DB") must not quietly mean the default collection.
        raise InvalidArgument(
            '--db "" names no directory: give the collection directory, or leave --db out for the default one'
        )
    if explicit:
        return Path(explicit).expanduser()
    env = os.environ.get("LOCALQ_HOME")
    if env:
        return Path(env).expanduser()
    return user_data_dir() / "default"


def cache_dir() -> Path:
    """Where derived data that can be recomputed lives (class-name table, prompt vectors)."""
    explicit = os.environ.get("LOCALQ_CACHE")
    if explicit:
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "localq"


def refuse_damaged_location(root: Path, db_path: Path) -> None:
    """One clear line, instead of a silently new collection, when the place looks wrong."""
    if root.exists() and not root.is_dir():
        raise CollectionUnwritable(f"{root} is a file, not a collection directory: give --db a directory")
    if db_path.exists() and not db_path.is_file():
        raise DatabaseDamaged(f"{db_path} is not a file: move it away, or use another --db")
    data = [name for name in (VECTORS_FILE, "vectors.faiss", "tui-drafts") if (root / name).exists()]
    wal = Path(str(db_path) + "-wal")
    wal_has_data = wal.exists() and wal.stat().st_size > 0
    if not data or wal_has_data:
        return
    if not db_path.exists():
        raise DatabaseDamaged(
            f"{db_path} is missing but {root} still holds {', '.join(data)}: restore localq.db from a "
            "backup, or move the directory aside to start a new collection"
        )
    if db_path.stat().st_size == 0:
        raise DatabaseDamaged(
            f"{db_path} is empty (0 bytes) but {root} still holds {', '.join(data)}: the classifiers and "
            "labels are gone from it; restore localq.db from a backup, or move the directory aside to start anew"
        )


def collections_near(root: Path) -> list[Path]:
    """Collections other than ``root`` where a person would look for one: beside ``root``
    and in the user data directory (``localq demo`` builds its own there, ``<data dir>/demo``).
    Only directories holding a localq.db count; unreadable places are passed over."""
    root = root.absolute()
    found: list[Path] = []
    for place in (root.parent, user_data_dir()):
        try:
            children = sorted(place.iterdir())
        except OSError:
            continue
        for child in children:
            try:
                if child != root and child not in found and (child / DB_FILE).is_file():
                    found.append(child)
            except OSError:
                continue
    return found
