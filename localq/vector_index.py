"""Exact inner-product vector index on disk (FAISS ``IndexFlatIP``) with filtered top-k.

Row position == id == SQLite ``images.id``. Rows are never removed from the middle
(``remove_ids`` renumbers, FAISS-NOTES pitfall 8): callers exclude rows with the
``allowed`` mask instead. Only exact search is offered: HNSW and IVF lose results under
a selector (pitfalls 5 and 6).

One query (``search``), measured by ``scripts/bench_search.py``:
- when at least ``_SELECTOR_BELOW_FRACTION`` of the rows are allowed: one BLAS
  matrix-vector product over every row (``X @ q``, the bandwidth floor itself), the
  disallowed scores set to -inf, and ``argpartition``. On an idle 2-core machine FAISS's
  flat scan ran at 1.8-2.0x that floor at 1M rows: with one query FAISS either scans on
  one OpenMP thread, and one core cannot pull the memory bandwidth that OpenBLAS's two
  threads do, or it splits the rows over threads and synchronises per block, which was
  slower still (FAISS-NOTES pitfall 3; 1.6-1.9x the floor even with a passive OMP wait
  policy). The top-k selection costs 5-10% of the product;
- below that fraction, FAISS ``IDSelectorArray`` over ``np.flatnonzero(allowed)`` on one
  thread: on ``IndexFlat`` it is a gather that reads only the allowed rows, so its cost
  follows the allowed fraction (0.02x the floor at 99% seen), where the product above
  still reads every row. At 50% seen it was 1.3x the floor against 1.1x for the product,
  and its cost is about 2.6 x allowed-fraction x floor: the two meet near 40% allowed.
Both return exactly min(k, allowed) rows and never post-filter. On a machine busy with
other processes the two-thread product suffers most (one of its threads waits for the
other); the ratios above are from idle runs, the case a labeling session is in.

Batches (``search_many``) use BLAS instead: any selector sends FAISS down its
sequential per-query path, which was 3x (16 queries) to 10x (500 queries) slower at
100k rows than matrix products over blocks of rows with the disallowed scores set to
-inf. When few rows are allowed the blocks are gathered from the allowed rows only.

The derived id array of the selector path is rebuilt on every call (0.7 ms at 1M rows,
under 1% of a search) rather than cached: callers clear bits of one mask in place between calls,
and a cache keyed on the mask object would then go stale.
"""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np

from localq import trailer_file
from localq.errors import EncoderMismatch, IndexCorrupt

# search: below this allowed fraction FAISS's gather over the allowed rows beats one
# BLAS pass over all of them (module docstring).
_SELECTOR_BELOW_FRACTION = 0.35

# search_many: below this allowed fraction, copying the allowed rows out (read, write,
# read again: about 3x their bytes) costs less than one pass over every row.
_GATHER_BELOW_FRACTION = 0.3

# search_many works through blocks of rows so that the [nq, block] float32 scores and
# the gathered rows each stay under this many bytes.
_SCORE_BLOCK_BYTES = 64 << 20

_EMPTY_IDS = np.empty(0, dtype=np.int64)
_EMPTY_SCORES = np.empty(0, dtype=np.float32)


def _faiss():
    import faiss  # heavy: loaded only when an index is opened

    return faiss


class VectorIndex:
    """A FAISS ``IndexFlatIP`` persisted at ``path``; see the module docstring."""

    def __init__(self, path: Path, index, dim: int, state: dict | None = None):
        self.path = Path(path)
        self._index = index
        self.dim = dim
        # What the file says it mirrors (rows, digest, crc of its vectors), as save()
        # wrote it; None for a new index or a file without a trailer.
        self.state = state

    # -- lifecycle -------------------------------------------------------------------

    @classmethod
    def open(cls, path: Path, dim: int) -> "VectorIndex":
        """Load the index file at ``path``, or start an empty one if it does not exist."""
        faiss = _faiss()
        path = Path(path)
        if not path.exists():
            return cls(path, faiss.IndexFlatIP(dim), dim)
        if not path.is_file():
            raise IndexCorrupt(f"vector index {path} is not a regular file; move it away to rebuild it from the database")
        try:
            # read_index already returns the concrete class; wrapping it in
            # downcast_index would leave a non-owning wrapper over a freed object.
            index = faiss.read_index(str(path))
        except (RuntimeError, OSError, MemoryError) as exc:
            raise IndexCorrupt(
                f"vector index {path} is unreadable; delete it to rebuild it from the database"
            ) from exc
        if not isinstance(index, faiss.IndexFlatIP):
            raise IndexCorrupt(
                f"vector index {path} is a {type(index).__name__}, not an exact inner-product "
                "index; delete it to rebuild it from the database"
            )
        if index.d != dim:
            raise EncoderMismatch(
                f"vector index {path} holds {index.d}-d vectors but the encoder makes {dim}-d "
                "ones; use the collection's own encoder or index into a new --db"
            )
        return cls(path, index, dim, trailer_file.read_state(path))

    @classmethod
    def empty(cls, path: Path, dim: int) -> "VectorIndex":
        """A new index with no rows, to be saved at ``path`` (whatever is there now)."""
        return cls(Path(path), _faiss().IndexFlatIP(dim), dim)

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

    def content_crc(self) -> int:
        """CRC-32 of the vectors (about 2.4 GB/s: 0.1 s per 100k 512-d rows)."""
        m = self.matrix()
        return zlib.crc32(memoryview(np.ascontiguousarray(m)).cast("B")) if m.size else 0

    def save(self, state: dict | None = None) -> None:
        """Write atomically: a crash leaves either the old file or the new one, whole.

        ``state`` (what the rows mirror) is stored in the file's trailer with the rows'
        count and CRC (trailer_file.py)."""
        if self.path.exists() and not self.path.is_file():
            raise IndexCorrupt(f"cannot save the vector index: {self.path} is not a regular file; move it away")
        state = {**(state or {}), "rows": self.ntotal, "dim": self.dim, "crc": self.content_crc()}
        faiss = _faiss()
        trailer_file.write_atomically(self.path, lambda tmp: faiss.write_index(self._index, tmp), state)
        self.state = state

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
        q, allowed, k, n_allowed = search_request(query, k, allowed, self.dim, self.ntotal)
        if k <= 0:
            return _EMPTY_IDS.copy(), _EMPTY_SCORES.copy()
        n = self.ntotal
        if allowed is None or n_allowed == n:
            return self._search_blas(q, k, None)
        if n_allowed < _SELECTOR_BELOW_FRACTION * n:
            return self._search_faiss(q, k, np.flatnonzero(allowed).astype(np.int64, copy=False))
        return self._search_blas(q, k, allowed)

    def search_many(
        self, queries: np.ndarray, k: int, allowed: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Batched ``search``: ``[nq, min(k, allowed)]`` ids and scores."""
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        if queries.ndim != 2 or queries.shape[1] != self.dim:
            raise ValueError(f"expected queries of shape [nq, {self.dim}], got {queries.shape}")
        if not np.isfinite(queries).all():
            raise ValueError("queries contain NaN or infinity")
        allowed = checked_mask(allowed, self.ntotal)
        n = self.ntotal
        n_allowed = n if allowed is None else int(np.count_nonzero(allowed))
        k = min(int(k), n_allowed)
        nq = len(queries)
        if k <= 0 or nq == 0:
            return np.empty((nq, 0), np.int64), np.empty((nq, 0), np.float32)
        if nq == 1:
            ids, scores = self.search(queries[0], k, allowed)
            return ids[None, :], scores[None, :]
        X = self.matrix()
        row_ids = None
        if allowed is not None and n_allowed < _GATHER_BELOW_FRACTION * n:
            row_ids = np.flatnonzero(allowed)
        total = n if row_ids is None else len(row_ids)
        # Blocks of rows bound both the [nq, block] score matrix and the gathered copy.
        block = max(1, min(65536, _SCORE_BLOCK_BYTES // (4 * max(nq, self.dim))))
        best_ids = np.empty((nq, 0), np.int64)
        best_scores = np.empty((nq, 0), np.float32)
        with np.errstate(over="ignore", invalid="ignore"):
            for start in range(0, total, block):
                stop = min(start + block, total)
                if row_ids is None:
                    ids = np.arange(start, stop, dtype=np.int64)
                    rows = X[start:stop]
                else:
                    ids = row_ids[start:stop]
                    rows = X[ids]
                # [rows, nq] order: OpenBLAS ran this shape 1.4x faster than Q @ rows.T
                # here; the transposed copy is small and makes the top-k scan contiguous.
                scores = np.ascontiguousarray((rows @ queries.T).T)
                if row_ids is None and allowed is not None:
                    # Adding 0 / -inf per column is one pass; boolean column assignment
                    # was 5x slower.
                    scores += np.where(allowed[start:stop], 0.0, -np.inf).astype(np.float32)
                kb = min(k, stop - start)
                top = np.argpartition(scores, -kb, axis=1)[:, -kb:]
                best_ids = np.concatenate([best_ids, ids[top]], axis=1)
                best_scores = np.concatenate(
                    [best_scores, np.take_along_axis(scores, top, 1)], axis=1
                )
                if best_ids.shape[1] > k:
                    keep = np.argpartition(best_scores, -k, axis=1)[:, -k:]
                    best_ids = np.take_along_axis(best_ids, keep, 1)
                    best_scores = np.take_along_axis(best_scores, keep, 1)
        if allowed is not None and not allowed[best_ids].all():
            # Only reachable when overflowing products tie allowed rows with the -inf
            # given to disallowed ones; the per-query path still owes k allowed rows.
            allowed_ids = np.flatnonzero(allowed)
            pairs = [self._search_numpy(q, k, allowed_ids) for q in queries]
            return np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs])
        order = np.lexsort((best_ids, -best_scores), axis=1)
        return (
            np.take_along_axis(best_ids, order, 1),
            np.take_along_axis(best_scores, order, 1).astype(np.float32, copy=False),
        )

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

    def _search_faiss(self, q: np.ndarray, k: int, allowed_ids: np.ndarray | None):
        faiss = _faiss()
        params = None
        if allowed_ids is not None:
            # The selector reads allowed_ids by pointer: both stay referenced until
            # the search returns (FAISS-NOTES pitfall 2).
            selector = faiss.IDSelectorArray(len(allowed_ids), faiss.swig_ptr(allowed_ids))
            params = faiss.SearchParameters(sel=selector)
        previous_threads = faiss.omp_get_max_threads()
        faiss.omp_set_num_threads(1)
        try:
            scores, found = self._index.search(q[None, :], k, params=params)
        finally:
            faiss.omp_set_num_threads(previous_threads)
        found, scores = found[0], scores[0]
        if (found < 0).any():
            # FAISS pads with -1 when scores are NaN (products of huge vectors overflow);
            # the caller is still owed min(k, allowed) allowed rows.
            return self._search_numpy(q, k, allowed_ids)
        return _sorted_best_first(found, scores)

    def _search_numpy(self, q: np.ndarray, k: int, allowed_ids: np.ndarray | None):
        ids = np.arange(self.ntotal) if allowed_ids is None else allowed_ids
        rows = self.matrix() if allowed_ids is None else self.matrix()[allowed_ids]
        scores = exact_scores(rows, q)
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
