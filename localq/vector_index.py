"""Exact inner-product vector index on disk (FAISS ``IndexFlatIP``) with filtered top-k.

Row position == id == SQLite ``images.id``. Rows are never removed from the middle
(``remove_ids`` renumbers, FAISS-NOTES pitfall 8): callers exclude rows with the
``allowed`` mask instead. Only exact search is offered: HNSW and IVF lose results under
a selector (pitfalls 5 and 6).

How a filtered query runs (measured by ``scripts/bench_search.py``):
- few rows allowed: FAISS ``IDSelectorArray`` over the allowed ids. On ``IndexFlat`` it
  is a gather that reads only the allowed rows, so it is far below the one-pass floor;
- most rows allowed: one BLAS pass over every row (``X @ q``, the memory-bandwidth
  floor itself), disallowed scores set to -inf, then ``argpartition``. Per-id selector
  checks inside FAISS's scan cost more than the pass they filter.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from localq.errors import EncoderMismatch, LocalqError

# Below this allowed fraction the gather reads less memory than the full pass costs.
_GATHER_BELOW_FRACTION = 0.35

_EMPTY_IDS = np.empty(0, dtype=np.int64)
_EMPTY_SCORES = np.empty(0, dtype=np.float32)


def _faiss():
    import faiss  # heavy: loaded only when an index is opened

    return faiss


class VectorIndex:
    """A FAISS ``IndexFlatIP`` persisted at ``path``; see the module docstring."""

    def __init__(self, path: Path, index, dim: int):
        self.path = Path(path)
        self._index = index
        self.dim = dim

    # -- lifecycle -------------------------------------------------------------------

    @classmethod
    def open(cls, path: Path, dim: int) -> "VectorIndex":
        """Load the index file at ``path``, or start an empty one if it does not exist."""
        faiss = _faiss()
        path = Path(path)
        if not path.exists():
            return cls(path, faiss.IndexFlatIP(dim), dim)
        try:
            # read_index already returns the concrete class; wrapping it in
            # downcast_index would leave a non-owning wrapper over a freed object.
            index = faiss.read_index(str(path))
        except RuntimeError as exc:
            raise LocalqError(
                f"vector index {path} is unreadable; delete it to rebuild it from the database"
            ) from exc
        if not isinstance(index, faiss.IndexFlatIP):
            raise LocalqError(
                f"vector index {path} is a {type(index).__name__}, not an exact inner-product "
                "index; delete it to rebuild it from the database"
            )
        if index.d != dim:
            raise EncoderMismatch(
                f"vector index {path} holds {index.d}-d vectors but the encoder makes {dim}-d "
                "ones; use the collection's own encoder or index into a new --db"
            )
        return cls(path, index, dim)

    @property
    def ntotal(self) -> int:
        return int(self._index.ntotal)

    def add(self, vectors: np.ndarray) -> None:
        """Append rows; they get ids ``ntotal .. ntotal + n - 1``.

        Invalidates arrays returned earlier by ``matrix()`` (the storage may move).
        """
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[1] != self.dim:
            raise ValueError(f"expected vectors of shape [n, {self.dim}], got {vectors.shape}")
        if not np.isfinite(vectors).all():
            raise ValueError("vectors contain NaN or infinity")
        if len(vectors):
            self._index.add(vectors)

    def save(self) -> None:
        """Write atomically: a crash leaves either the old file or the new one, whole."""
        faiss = _faiss()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        faiss.write_index(self._index, str(tmp))
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
        # Make the rename itself durable.
        dir_fd = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    def truncate(self, n: int) -> None:
        """Drop rows ``>= n`` (the database is behind a crashed run's index file)."""
        if n < 0:
            raise ValueError("n must be >= 0")
        if n < self.ntotal:
            # Removing a tail range keeps every earlier row's position.
            self._index.remove_ids(_faiss().IDSelectorRange(n, self.ntotal))

    def matrix(self) -> np.ndarray:
        """``[ntotal, dim]`` float32 view of FAISS's own storage (no copy).

        Read-only by convention; valid until the next ``add`` or ``truncate``.
        """
        n = self.ntotal
        if n == 0:
            return np.empty((0, self.dim), dtype=np.float32)
        flat = _faiss().rev_swig_ptr(self._index.get_xb(), n * self.dim)
        return flat.reshape(n, self.dim)

    # -- search ----------------------------------------------------------------------

    def search(
        self, query: np.ndarray, k: int, allowed: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-k rows by inner product with ``query`` among the ``allowed`` rows.

        Returns ``(ids int64, scores float32)``, best first, exactly
        ``min(k, allowed.sum())`` of them, never a disallowed id.
        """
        q = self._check_query(query)
        allowed = self._check_mask(allowed)
        n = self.ntotal
        n_allowed = n if allowed is None else int(np.count_nonzero(allowed))
        k = min(int(k), n_allowed)
        if k <= 0:
            return _EMPTY_IDS.copy(), _EMPTY_SCORES.copy()
        if allowed is not None and n_allowed < _GATHER_BELOW_FRACTION * n:
            ids, scores = self._search_gather(q, k, np.flatnonzero(allowed))
        else:
            ids, scores = self._search_full_pass(q, k, allowed)
        return ids, scores

    def search_many(
        self, queries: np.ndarray, k: int, allowed: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Batched ``search``: ``[nq, min(k, allowed)]`` ids and scores."""
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        if queries.ndim != 2 or queries.shape[1] != self.dim:
            raise ValueError(f"expected queries of shape [nq, {self.dim}], got {queries.shape}")
        if not np.isfinite(queries).all():
            raise ValueError("queries contain NaN or infinity")
        allowed = self._check_mask(allowed)
        n = self.ntotal
        n_allowed = n if allowed is None else int(np.count_nonzero(allowed))
        k = min(int(k), n_allowed)
        nq = len(queries)
        if k <= 0 or nq == 0:
            return np.empty((nq, 0), np.int64), np.empty((nq, 0), np.float32)
        X = self.matrix()
        if allowed is not None and n_allowed < _GATHER_BELOW_FRACTION * n:
            row_ids = np.flatnonzero(allowed)
        else:
            row_ids = None
        best_ids = np.empty((nq, 0), np.int64)
        best_scores = np.empty((nq, 0), np.float32)
        # Blocks of rows bound the [nq, block] score matrix; BLAS does each block.
        block = max(1024, (64 << 20) // (4 * nq))
        total = n if row_ids is None else len(row_ids)
        for start in range(0, total, block):
            stop = min(start + block, total)
            if row_ids is None:
                ids = np.arange(start, stop, dtype=np.int64)
                scores = queries @ X[start:stop].T
                if allowed is not None:
                    scores[:, ~allowed[start:stop]] = -np.inf
            else:
                ids = row_ids[start:stop]
                scores = queries @ X[ids].T
            kb = min(k, stop - start)
            top = np.argpartition(scores, -kb, axis=1)[:, -kb:]
            best_ids = np.concatenate([best_ids, ids[top]], axis=1)
            best_scores = np.concatenate([best_scores, np.take_along_axis(scores, top, 1)], axis=1)
            if best_ids.shape[1] > k:
                keep = np.argpartition(best_scores, -k, axis=1)[:, -k:]
                best_ids = np.take_along_axis(best_ids, keep, 1)
                best_scores = np.take_along_axis(best_scores, keep, 1)
        order = np.lexsort((best_ids, -best_scores), axis=1)
        return (
            np.take_along_axis(best_ids, order, 1),
            np.take_along_axis(best_scores, order, 1).astype(np.float32, copy=False),
        )

    # -- internals -------------------------------------------------------------------

    def _check_query(self, query: np.ndarray) -> np.ndarray:
        q = np.ascontiguousarray(query, dtype=np.float32).reshape(-1)
        if q.shape[0] != self.dim:
            raise ValueError(f"expected a query of {self.dim} values, got {q.shape[0]}")
        if not np.isfinite(q).all():
            raise ValueError("query contains NaN or infinity")
        return q

    def _check_mask(self, allowed: np.ndarray | None) -> np.ndarray | None:
        if allowed is None:
            return None
        if not isinstance(allowed, np.ndarray) or allowed.dtype != np.bool_:
            raise TypeError("allowed must be a numpy bool array")
        if allowed.shape != (self.ntotal,):
            raise ValueError(
                f"allowed has shape {allowed.shape}, the index holds {self.ntotal} rows"
            )
        return allowed

    def _search_gather(self, q: np.ndarray, k: int, ids: np.ndarray):
        faiss = _faiss()
        id_array = ids.astype(np.int64, copy=False)
        # The selector reads id_array by pointer: it must stay alive for the call.
        selector = faiss.IDSelectorArray(len(id_array), faiss.swig_ptr(id_array))
        params = faiss.SearchParameters(sel=selector)
        scores, found = self._index.search(q[None, :], k, params=params)
        del selector, id_array
        found, scores = found[0], scores[0]
        if (found < 0).any():
            # FAISS pads with -1 only if a score never beat its heap's initial value
            # (overflowing vectors); the numpy pass still returns k allowed rows.
            mask = np.zeros(self.ntotal, dtype=bool)
            mask[ids] = True
            return self._search_full_pass(q, k, mask)
        return _sorted_best_first(found, scores)

    def _search_full_pass(self, q: np.ndarray, k: int, allowed: np.ndarray | None):
        scores = self.matrix() @ q
        if allowed is not None:
            scores[~allowed] = -np.inf
        top = np.argpartition(scores, -k)[-k:]
        return _sorted_best_first(top.astype(np.int64), scores[top])


def _sorted_best_first(ids: np.ndarray, scores: np.ndarray):
    # Ties broken by id so results are deterministic across runs and code paths.
    order = np.lexsort((ids, -scores))
    return ids[order].astype(np.int64, copy=False), scores[order].astype(np.float32, copy=False)
