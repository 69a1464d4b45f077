"""Text-prompt vectors cached on disk, keyed by (model_id, prompt).

A repeated prompt then needs no model at all: `localq search "a golf ball"` run twice
imports neither torch nor MiniLM the second time. model_id names the exact vector space
(architecture, weights, text bridge), so a changed encoder can never be served a stale
vector. The cache is one small SQLite file in the user cache directory; any failure to
read or write it (a read-only home, a damaged file) only costs recomputing the vector.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Callable

import numpy as np

from localq.storage.paths import cache_dir

CACHE_FILE = "prompt-vectors.sqlite"


def cache_path() -> Path:
    return cache_dir() / CACHE_FILE


def lookup(model_id: str, prompt: str) -> np.ndarray | None:
    try:
        path = cache_path()
        if not path.is_file():  # raises, rather than answering False, where a parent is not searchable
            return None
        with _connect(path) as conn:
            row = conn.execute(
                "SELECT vector FROM prompts WHERE model_id = ? AND prompt = ?", (model_id, prompt)
            ).fetchone()
    except (OSError, sqlite3.Error):
        return None
    return np.frombuffer(row[0], dtype="<f4").copy() if row else None


def remember(model_id: str, prompt: str, vector: np.ndarray) -> None:
    try:
        path = cache_path()
        path.parent.mkdir(parents=True, exist_ok=True)
        with _connect(path) as conn:
            conn.execute(
                "INSERT OR REPLACE INTO prompts(model_id, prompt, vector) VALUES (?, ?, ?)",
                (model_id, prompt, np.ascontiguousarray(vector, dtype="<f4").tobytes()),
            )
    except (OSError, sqlite3.Error):
        pass


def text_vector(model_id: str, prompt: str, encode: Callable[[str], np.ndarray]) -> np.ndarray:
    """The cached vector of ``prompt`` in ``model_id``'s space, else ``encode(prompt)`` (then cached)."""
    vector = lookup(model_id, prompt)
    if vector is None:
        vector = np.asarray(encode(prompt), dtype=np.float32)
        remember(model_id, prompt, vector)
    return vector


class _connect:
    """A short-lived connection that commits on success and always closes."""

    def __init__(self, path: Path):
        self.conn = sqlite3.connect(str(path), timeout=5)

    def __enter__(self) -> sqlite3.Connection:
        self.conn.execute(
            "CREATE TABLE IF NOT EXISTS prompts (model_id TEXT NOT NULL, prompt TEXT NOT NULL, vector BLOB NOT NULL,"
            " PRIMARY KEY (model_id, prompt))"
        )
        return self.conn

    def __exit__(self, exc_type, *_) -> None:
        try:
            if exc_type is None:
                self.conn.commit()
        finally:
            self.conn.close()
