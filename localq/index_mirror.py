"""The FAISS file as a mirror of SQLite's vectors: loading it, judging it, catching it up.

SQLite is the source of truth; the FAISS file is a cache of its vectors that makes search
fast. A file is used only when the record it was saved with (rows, dim, digest of the
SQLite vectors it mirrors, CRC of its own rows) and a spot check of rows agree with the
database; otherwise it is rebuilt from SQLite. Collection is this module's only caller.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from localq.errors import EncoderMismatch, IndexCorrupt
from localq.locking import WriteLock
from localq.store import Store
from localq.vector_index import VectorIndex

# Rows compared with SQLite each time a FAISS file is opened (first, last and random
# ones): a cheap guard on top of the digest and CRC checks.
SPOT_CHECK_ROWS = 16
_REBUILD_CHUNK = 65536


def load(store: Store, path: Path, dim: int, lock: WriteLock) -> tuple[VectorIndex, str | None]:
    """The index mirroring SQLite's rows, and why the file on disk was not used as it was."""
    problem = None
    try:
        index = VectorIndex.open(path, dim)
    except (IndexCorrupt, EncoderMismatch) as exc:
        # SQLite holds every vector and its dim: a damaged FAISS file is rebuilt, not fatal.
        index, problem = None, str(exc)
    # SQLite is read after the file: writers commit SQLite before they save FAISS, so
    # the file never records more rows than SQLite holds by then.
    n = store.n_rows()
    if index is not None and path.exists():
        problem = disagreement(store, index, dim, n)
        if problem:
            index = None
    if index is None:
        index = VectorIndex.empty(path, dim)
    caught_up = index.ntotal < n
    append_from_store(store, index, dim, n)
    if problem or caught_up:
        save_if_free(store, index, lock)
    return index, problem


def disagreement(store: Store, index: VectorIndex, dim: int, n: int) -> str | None:
    """Why the FAISS file does not mirror a state of SQLite's vectors (None: it does)."""
    state, name = index.state, index.path.name
    if state is None:
        return f"{name} does not record which database state it mirrors (an older localq wrote it, or something else did)"
    if state.get("rows") != index.ntotal or state.get("dim") != dim:
        return f"{name} holds {index.ntotal} rows of {index.dim}-d, its record says {state.get('rows')} of {state.get('dim')}-d"
    if index.ntotal > n:
        return f"{name} holds {index.ntotal} rows, the database {n}"
    if state.get("digest") is None or state.get("digest") != store.vectors_digest(index.ntotal):
        return f"{name} mirrors another state of the database than this one (its digest is unknown here)"
    if state.get("crc") != index.content_crc():
        return f"{name} is damaged: its vectors do not match the checksum it was saved with"
    bad = _rows_differing(store, index, _spot_rows(index.ntotal, SPOT_CHECK_ROWS))
    if bad:
        return f"{name} row {bad[0]} differs from the database"
    return None


def append_from_store(store: Store, index: VectorIndex, dim: int, n: int) -> None:
    """Append SQLite's vectors for rows ``index.ntotal .. n - 1`` (a missing one as zeros)."""
    for start in range(index.ntotal, n, _REBUILD_CHUNK):
        stop = min(start + _REBUILD_CHUNK, n)
        block = np.zeros((stop - start, dim), dtype=np.float32)
        for i, v in store.vectors_from(start, stop):
            if v.shape == (dim,) and np.isfinite(v).all():
                block[i - start] = v
        index.add(block)


def save(store: Store, index: VectorIndex) -> None:
    """Write the FAISS file, recording the SQLite state it mirrors (caller holds the lock)."""
    index.save({"digest": store.vectors_digest(index.ntotal)})


def save_if_free(store: Store, index: VectorIndex, lock: WriteLock) -> None:
    # Persist a repaired or caught-up index only when no writer is busy (readers never
    # wait) and the collection is writable; otherwise the fix lives in memory only.
    if not lock.try_acquire():
        return
    try:
        save(store, index)
    except (OSError, IndexCorrupt):
        pass
    finally:
        lock.release()


def _rows_differing(store: Store, index: VectorIndex, ids: np.ndarray) -> list[int]:
    if len(ids) == 0:
        return []
    try:
        stored = store.vectors(ids)
    except KeyError as missing:  # an id without a vector row
        return [int(missing.args[0])]
    m = index.matrix()
    return [int(i) for i, v in zip(ids, stored) if not np.array_equal(m[i], v)]


def _spot_rows(n: int, count: int) -> np.ndarray:
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    rng = np.random.default_rng()
    return np.unique(np.concatenate([[0, n - 1], rng.integers(0, n, size=count)])).astype(np.int64)
