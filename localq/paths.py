"""Where a collection lives on disk.

A collection is one directory: ``localq.db`` (SQLite) and ``vectors.faiss`` beside it.
Chosen by ``--db DIR``, else ``$LOCALQ_HOME``, else the user's data directory.
"""

import os
import sys
from pathlib import Path

DB_FILE = "localq.db"
INDEX_FILE = "vectors.faiss"


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
