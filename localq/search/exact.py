"""Exact inner-product search with filtered top-k over a collection's vectors.npy.

Row position == id == SQLite ``images.id``. Rows are never removed: callers exclude rows
with the ``allowed`` mask instead. The rows are memory-mapped from vectors.npy
(vector_file.py), so NumPy and BLAS read them in place and nothing loads them all into
RAM. HNSW and IVF lose results under a selector (docs/faiss-notes.md, pitfalls 5 and 6); the
approximate index past a size is search/ivf.py, which re-ranks from these rows.

One query (``search``), measured by ``scripts/bench_search.py``:
- when at least ``_GATHER_BELOW_FRACTION`` of the rows are allowed: one BLAS
  matrix-vector product over every row (``X @ q``, the bandwidth floor itself), the
  disallowed scores set to -inf, and ``argpartition``. On an idle 2-core machine FAISS's
  flat scan had run at 1.8-2.0x that floor at 1M rows (one OpenMP thread cannot pull
  the bandwidth OpenBLAS's two threads do; docs/faiss-notes.md, pitfall 3). The top-k selection
  costs 5-10% of the product;
- below it, the allowed rows are gathered in blocks and scored: that reads only them,
  so its cost follows the allowed fraction (a few percent of the floor at 99% seen),
  where the product above still reads every row. A gather reads, writes and reads
  again (about 3x the rows' bytes), so the two meet near a third allowed.
Both return exactly min(k, allowed) rows and never post-filter. On a machine busy with
other processes the two-thread product suffers most (one of its threads waits for the
other); the ratios above are from idle runs, the case a labeling session is in.

"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from localq.storage.vector_file import VectorFile, gather_rows, release_pages

# Below this allowed fraction, copying the allowed rows out (read, write, read again:
# about 3x their bytes) costs less than one pass over every row (module docstring).
_GATHER_BELOW_FRACTION = 0.3

# Rows gathered at a time: bounds the copy whatever the allowed count.
_GATHER_BLOCK_ROWS = 65536

# Rows scored at a time by ``scores`` before their pages are let go (512 MB at 512-d).
_SCAN_BLOCK_ROWS = 262144

_EMPTY_IDS = np.empty(0, dtype=np.int64)
_EMPTY_SCORES = np.empty(0, dtype=np.float32)


class VectorIndex:
    """The first ``ntotal`` rows of a VectorFile, searched exactly; see the module docstring."""

    def __init__(self, file: VectorFile, n: int):
        self.file = file
        self.dim = file.dim
        self._matrix = file.rows(n)

    @classmethod
    def open(cls, path: Path, dim: int, n: int | None = None) -> "VectorIndex":
        """The vectors file at ``path`` (no rows if there is none yet), seen up to row ``n``
        (default: every row its header counts)."""
        file = VectorFile.open(path, dim)
        return cls(file, file.rows_on_disk if n is None else n)

    @property
    def path(self) -> Path:
        return self.file.path

    @property
    def ntotal(self) -> int:
        return len(self._matrix)

    def add(self, vectors: np.ndarray) -> None:
        """Append rows to the file, durably; they get ids ``ntotal .. ntotal + n - 1``.

        Invalidates arrays returned earlier by ``matrix()`` (they stay valid, but stop
        at the old row count)."""
        n = self.ntotal
        self.file.write(n, vectors)
        self._matrix = self.file.rows(n + len(vectors))

    def show(self, n: int) -> None:
        """See rows ``0 .. n - 1``: more once another process committed rows, fewer when the
        database was put back to an earlier state (a restored backup)."""
        self._matrix = self.file.rows(n)

    def matrix(self) -> np.ndarray:
        """``[ntotal, dim]`` float32 rows, memory-mapped (no copy). Read-only."""
        return self._matrix

    def rows(self, ids) -> np.ndarray:
        """The rows ``ids`` as a float32 array, in the order asked: the one way to read
        vectors by id (vector_file.gather_rows picks the reads; nothing is left mapped)."""
        return gather_rows(self._matrix, np.asarray(ids, dtype=np.int64).reshape(-1))

    def scores(self, w: np.ndarray, b: float = 0.0, ids=None) -> np.ndarray:
        """``w.x + b`` for the rows ``ids``, or for every row when ``ids`` is None (a block
        at a time, letting each block's pages go after it: a pass over 10M rows, 20 GB,
        never holds them all resident)."""
        w = np.asarray(w, dtype=np.float32).reshape(-1)
        if ids is not None:
            ids = np.asarray(ids, dtype=np.int64).reshape(-1)
            if len(ids) == 0:
                return np.zeros(0, dtype=np.float32)
            return self.rows(ids) @ w + np.float32(b)
        m = self._matrix
        out = np.empty(len(m), dtype=np.float32)
        for start in range(0, len(m), _SCAN_BLOCK_ROWS):
            stop = min(start + _SCAN_BLOCK_ROWS, len(m))
            out[start:stop] = m[start:stop] @ w
            release_pages(m, start, stop)
        if b:
            out += np.float32(b)
        return out

    # -- search ----------------------------------------------------------------------

    def search(self, query: np.ndarray, k: int, allowed: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Top-k rows by inner product with ``query`` among the ``allowed`` rows.

        Returns ``(ids int64, scores float32)``, best first, exactly
        ``min(k, allowed.sum())`` of them, never a disallowed id.
        """
        q, allowed, k, n_allowed = search_request(query, k, allowed, self.dim, self.ntotal)
        if k <= 0:
            return _EMPTY_IDS.copy(), _EMPTY_SCORES.copy()
        n = self.ntotal
        if allowed is None or n_allowed == n:
            return self._search_blas(q, k, None)
        if n_allowed < _GATHER_BELOW_FRACTION * n:
            return self._search_numpy(q, k, np.flatnonzero(allowed))
        return self._search_blas(q, k, allowed)

    def candidates(self, query: np.ndarray, n: int, allowed: np.ndarray | None = None):
        """The ``n`` best allowed rows with their scores, as ``search`` (an approximate
        index answers this from its codes instead: search/ivf.py)."""
        return self.search(query, n, allowed)

    # -- internals -------------------------------------------------------------------

    def _search_blas(self, q: np.ndarray, k: int, allowed: np.ndarray | None):
        with np.errstate(over="ignore", invalid="ignore"):
            scores = self.matrix() @ q
        if allowed is not None:
            np.copyto(scores, -np.inf, where=~allowed)
        top = np.argpartition(scores, -k)[-k:]
        picked = scores[top]
        if np.isnan(picked).any() or (allowed is not None and not allowed[top].all()):
            # Overflowing products (NaN sorts as largest; -inf ties with the masked
            # rows): the gather path cleans NaN and looks at allowed rows only.
            ids = None if allowed is None else np.flatnonzero(allowed)
            return self._search_numpy(q, k, ids)
        return _sorted_best_first(top, picked)

    def _search_numpy(self, q: np.ndarray, k: int, allowed_ids: np.ndarray | None):
        m = self.matrix()
        ids = np.arange(self.ntotal) if allowed_ids is None else allowed_ids
        if allowed_ids is None:
            scores = exact_scores(m, q)
        else:
            scores = np.concatenate(
                [
                    exact_scores(m[allowed_ids[s : s + _GATHER_BLOCK_ROWS]], q)
                    for s in range(0, len(allowed_ids), _GATHER_BLOCK_ROWS)
                ]
            )
        top = np.argpartition(scores, -k)[-k:]
        return _sorted_best_first(ids[top], scores[top])


def exact_scores(rows: np.ndarray, q: np.ndarray) -> np.ndarray:
    """``rows @ q`` as float32, where a product that overflows (NaN, which would sort as
    the best score) ranks last instead."""
    with np.errstate(over="ignore", invalid="ignore"):
        scores = np.asarray(rows, dtype=np.float32) @ q
    return np.nan_to_num(scores, nan=-np.inf).astype(np.float32, copy=False)


def search_request(query, k: int, allowed: np.ndarray | None, dim: int, n: int):
    """A search's checked inputs, shared by every index: ``(query, allowed, k, n_allowed)``
    with ``k`` clamped to the allowed count (0: the answer is empty)."""
    q, allowed = checked_query(query, dim), checked_mask(allowed, n)
    n_allowed = n if allowed is None else int(np.count_nonzero(allowed))
    return q, allowed, min(int(k), n_allowed), n_allowed


def checked_query(query: np.ndarray, dim: int) -> np.ndarray:
    """``query`` as a contiguous float32 vector of ``dim`` finite values (else ValueError)."""
    q = np.ascontiguousarray(query, dtype=np.float32).reshape(-1)
    if q.shape[0] != dim:
        raise ValueError(f"expected a query of {dim} values, got {q.shape[0]}")
    if not np.isfinite(q).all():
        raise ValueError("query contains NaN or infinity")
    return q


def checked_mask(allowed: np.ndarray | None, n: int) -> np.ndarray | None:
    """``allowed`` as given if it is a bool mask over the ``n`` rows (None: every row)."""
    if allowed is None:
        return None
    if not isinstance(allowed, np.ndarray) or allowed.dtype != np.bool_:
        raise TypeError("allowed must be a numpy bool array")
    if allowed.shape != (n,):
        raise ValueError(f"allowed has shape {allowed.shape}, the index holds {n} rows")
    return allowed


def _sorted_best_first(ids: np.ndarray, scores: np.ndarray):
    # Ties broken by id so results are deterministic across runs and code paths.
    order = np.lexsort((ids, -scores))
    return ids[order].astype(np.int64, copy=False), scores[order].astype(np.float32, copy=False)
