"""Approximate filtered top-k for large collections: FAISS IVF + SQ8, re-ranked exactly.

Same contract as ``VectorIndex.search``: ``search(query, k, allowed)`` returns
``(ids int64, scores float32)``, best first, exactly ``min(k, allowed.sum())`` of them,
never a disallowed id, and the scores are exact inner products with the float rows.

Why IVF + SQ8. Past a few million rows one exact pass costs more than a labeling loop
can wait for (about 80 ms per million 512-d rows on the 2-core machine, so ~0.8 s at
10M), and the float rows alone outgrow memory (20 GB at 10M x 512). An inverted file
reads only the ``nprobe`` lists nearest the query, and 8-bit scalar quantization keeps
one byte per dimension: 10M x 512 is about 5.2 GB of codes and ids, where IVF-Flat would
hold the 20 GB again. HNSW is not an option: under a selector it lost the "near" results
entirely (docs/faiss-notes.md, pitfall 5). IVF honours ``IDSelectorBitmap`` (packed with
``bitorder="little"``, pitfall 1), which costs one bit per row to build per call (about
1-5 ms at 10M rows). ``nlist`` is ~4*sqrt(n), as autofaiss picks it, and k-means trains
on a sample of about 50 rows per list: training on every row took 207 s at 1M.

Why re-rank. SQ8 scores are off by a little, enough to swap neighbours near the k-th
place (recall 0.98 at 1M without re-ranking, docs/faiss-notes.md). The index over-fetches
``rerank * k`` candidates (past 256 results, one more per result) and scores them
again with the float rows, which may be an ``np.memmap`` of the collection's vectors:
only the candidates' rows are read. Where the best rows' scores lie closer together
than the codes can tell apart, it reads further down their ranking until no row there
could beat the k-th exact score (``_settle``). The rows are read with
``vector_file.gather_rows``, which maps nothing: the index's memory is its codes.

The fallback chain. An IVF search under a selector returns -1 rows when the probed
lists hold fewer allowed rows than asked for (pitfall 6): with a "near" seen set,
exactly the lists nearest the query are the labeled ones. When fewer than the
over-fetch come back, ``nprobe`` is widened 4x at a time up to ``nlist`` (every list:
a full scan of the codes), the over-fetch with it, until a level's re-ranked top-k
equals the one before it: the best allowed rows then lie on the edge of the seen
region, spread over many lists at near-equal scores, and stopping at the first level
that merely fills the over-fetch lost up to all of them in tests. A first probe that
does fill it is not trusted either when its lists are depleted (far fewer of their rows
allowed than of the collection's): the query then sits inside the seen region, and the
best allowed rows lie beyond the lists probed first. When the first probe falls short
and at most a 16th of the rows is allowed, the next search scans every list at once:
under the selector only the allowed rows' codes are decoded. If even ``nlist`` leaves
fewer than ``k`` (only NaN codes could), an exact masked search over the float rows
answers. Small allowed sets (under ``exact_below_rows``) skip the IVF altogether:
gathering a few thousand rows is cheaper than probing any list.

Pools (``candidates``: boundary sampling's 10,000) are ranked by the codes' estimates
and not re-ranked: reading 10,000 float rows at random is what a round cannot afford
at 10M (sampling.py settles the few rows it keeps exactly).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from localq.search import trailer_file
from localq.search.exact import _EMPTY_IDS, _EMPTY_SCORES, _sorted_best_first, exact_scores, search_request
from localq.storage.vector_file import gather_rows, release_pages


def _faiss():
    import faiss  # heavy: loaded only when an IVF index is built or opened

    return faiss


# k-means wants >= 39 training rows per centroid (FAISS warns below); 50 keeps the
# centroids stable while training in a fraction of the time of all rows.
_TRAIN_ROWS_PER_LIST = 50

# Lists probed first: about 1% of them, at least 32. A fixed 32 kept recall@10 at 0.96-1.00
# at 1M (nlist 4,000), but at 10M (nlist 12,649) on the diffuse clusters of
# bench_round.py it fell to 0.79; 128 lists brought it to 1.00 at 11-24 ms a query
# (docs/bench/scale-10m-nprobe32.md, -nprobe128.md).
_MIN_NPROBE = 32
_PROBED_SHARE = 0.01
_DEFAULT_RERANK = 4  # candidates fetched per result asked for
# ...for the first results only: past this many, each further result brings one candidate.
# Re-ranking decides the order near the k-th place, and a large k (boundary sampling asks
# for 10,000 candidates) needs no more spare candidates there than a small one.
_RERANK_SPARE_CAP = 256
_WIDEN = 4  # nprobe grows by this factor after a search short of candidates
# Re-ranking reads past the over-fetch, up to this many rows more, while a row further
# down the codes' ranking could still beat the k-th exact score by more than this many
# RMS errors of the estimates (IvfIndex._settle).
_SETTLE_MAX_ROWS = 4096
_SETTLE_SIGMAS = 4.0
# The probed lists count as depleted (IvfIndex._depleted) when the share of their rows
# still allowed is under this fraction of the share allowed overall.
_DEPLETED_SHARE = 0.5

# Below this many allowed rows, one exact gather over them (at 512-d: 8 MB, ~3 ms)
# beats probing lists that are mostly seen.
_DEFAULT_EXACT_BELOW_ROWS = 4096

# When the first probe falls short and at most this fraction of the rows is allowed, the
# next search scans every list at once instead of widening step by step: under the
# selector FAISS decodes only the allowed rows' codes, so the scan costs about a bitmap
# test per row plus the allowed rows (1M rows: 9 ms at 1% allowed, 26 ms at 1/16). Reading
# the allowed float rows exactly instead would mean, at 10M, up to 1.3 GB read at random
# from vectors.npy, mostly not in the page cache.
_SCAN_ALL_AFTER_SHORT_FRACTION = 1 / 16

_CHUNK_ROWS = 65_536  # rows added or scanned exactly per step: bounded temporary memory


def default_nlist(n: int) -> int:
    """~4*sqrt(n) lists (autofaiss's rule), no more than k-means can train on ``n`` rows."""
    return max(1, min(int(round(4 * math.sqrt(n))), n // 39))


class IvfIndex:
    """IVF-SQ8 over the rows of ``matrix`` (row position == id); see the module docstring."""

    def __init__(
        self,
        index,
        matrix: np.ndarray,
        *,
        nprobe: int | None = None,
        rerank: int = _DEFAULT_RERANK,
        exact_below_rows: int = _DEFAULT_EXACT_BELOW_ROWS,
    ):
        if matrix.ndim != 2 or matrix.dtype != np.float32:
            raise ValueError("matrix must be a 2-d float32 array")
        if index.ntotal != len(matrix) or index.d != matrix.shape[1]:
            raise ValueError(f"the IVF index holds {index.ntotal} x {index.d}, the matrix {matrix.shape}")
        # localq searches one query at a time, and FAISS's default splits a search by query:
        # one core scanned every probed list. Mode 1 splits the probed lists among the
        # threads (a heap each, merged): the same answers, and scans of many lists (near-seen
        # sets) ~0.7x as long on 2 cores (1M, near 50% seen: 131 -> 91 ms).
        index.parallel_mode = 1
        self._index = index
        self.matrix = matrix
        if nprobe is None:
            nprobe = max(_MIN_NPROBE, round(_PROBED_SHARE * self.nlist))
        self.nprobe = max(1, min(int(nprobe), self.nlist))
        self.rerank = max(1, int(rerank))
        self._error_sq, self._error_n = 0.0, 0  # the codes' estimates against exact scores
        self.exact_below_rows = int(exact_below_rows)

    # -- lifecycle -------------------------------------------------------------------

    @classmethod
    def build(
        cls,
        matrix: np.ndarray,
        *,
        nlist: int | None = None,
        seed: int = 0,
        train_rows_per_list: int = _TRAIN_ROWS_PER_LIST,
        **search_options,
    ) -> "IvfIndex":
        """Train on a sample of ``matrix``'s rows and add them all, a chunk at a time."""
        faiss = _faiss()
        n, dim = matrix.shape
        if n == 0:
            raise ValueError("cannot build an IVF index over no rows")
        nlist = default_nlist(n) if nlist is None else max(1, min(int(nlist), n))
        quantizer = faiss.IndexFlatIP(dim)
        index = faiss.IndexIVFScalarQuantizer(
            quantizer, dim, nlist, faiss.ScalarQuantizer.QT_8bit, faiss.METRIC_INNER_PRODUCT
        )
        n_train = min(n, max(nlist * train_rows_per_list, 1000))
        # Sorted ids read the memmap front to back instead of seeking at random.
        sample = np.sort(np.random.default_rng(seed).choice(n, n_train, replace=False))
        train = np.ascontiguousarray(matrix[sample], dtype=np.float32)
        release_pages(matrix, 0, n)
        index.cp.seed = seed
        index.train(train)
        del train
        _add_rows(index, matrix, 0)
        return cls(index, matrix, **search_options)

    def extend(self, matrix: np.ndarray) -> None:
        """The collection grew: add ``matrix``'s rows from ``ntotal`` on to the trained lists.

        ``matrix`` must begin with the rows already indexed. The centroids stay those of
        the rows they were trained on; rebuild once the count has grown a few times over
        (``nlist`` then falls well short of ~4*sqrt(n), and lists grow long)."""
        if matrix.ndim != 2 or matrix.dtype != np.float32 or matrix.shape[1] != self.dim:
            raise ValueError(f"expected a float32 matrix of shape [n, {self.dim}], got {matrix.shape}")
        if len(matrix) < self.ntotal:
            raise ValueError(f"the matrix has {len(matrix)} rows, the index already {self.ntotal}")
        _add_rows(self._index, matrix, self.ntotal)
        self.matrix = matrix

    @classmethod
    def load(cls, path: Path, matrix: np.ndarray, **search_options) -> "IvfIndex":
        """Read an index written by ``save``; it must cover exactly ``matrix``'s rows."""
        faiss = _faiss()
        index = faiss.read_index(str(path))
        if not isinstance(index, faiss.IndexIVFScalarQuantizer):
            raise ValueError(f"{path} holds a {type(index).__name__}, not an IVF-SQ index")
        return cls(index, matrix, **search_options)

    def save(self, path: Path, state: dict | None = None) -> None:
        """Write atomically, with ``state`` (what the rows mirror) in the file's trailer
        (trailer_file.py; read it back with ``trailer_file.read_state``)."""
        faiss = _faiss()
        trailer_file.write_atomically(path, lambda tmp: faiss.write_index(self._index, tmp), dict(state or {}))

    @property
    def ntotal(self) -> int:
        return int(self._index.ntotal)

    @property
    def dim(self) -> int:
        return int(self._index.d)

    @property
    def nlist(self) -> int:
        return int(self._index.nlist)

    # -- search ----------------------------------------------------------------------

    def search(self, query: np.ndarray, k: int, allowed: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Top-k rows by inner product with ``query`` among the ``allowed`` rows.

        Returns ``(ids int64, scores float32)``, best first, exactly
        ``min(k, allowed.sum())`` of them, never a disallowed id.
        """
        return self._answer(query, k, allowed, rerank=True)

    def candidates(self, query: np.ndarray, n: int, allowed: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """About the ``n`` best allowed rows, ranked and scored by the SQ8 codes alone.

        What sampling asks for when it wants a pool to choose from rather than a ranking
        (boundary sampling's 10,000 candidates): re-ranking them would read ``n`` float
        rows at random from vectors.npy, which costs seconds when they are not in the page
        cache (measured at 10M: 2-4 s for 10,000 rows). The estimates are off by about
        2e-4 on average (at most ~3e-3) for unit vectors; the caller re-scores exactly the
        few rows it keeps. Same contract as ``search`` otherwise."""
        return self._answer(query, n, allowed, rerank=False)

    def _answer(self, query, k: int, allowed: np.ndarray | None, rerank: bool):
        q, allowed, k, n_allowed = search_request(query, k, allowed, self.dim, self.ntotal)
        if k <= 0:
            return _EMPTY_IDS.copy(), _EMPTY_SCORES.copy()
        if n_allowed <= self.exact_below_rows:
            return self._exact_search(q, k, allowed)
        return self._widening_search(q, k, allowed, n_allowed, rerank)

    def _exact_search(self, q: np.ndarray, k: int, allowed: np.ndarray | None):
        """Exact masked top-k over the float rows, a chunk at a time (the last resort)."""
        n = self.ntotal
        ids = None if allowed is None else np.flatnonzero(allowed)
        total = n if ids is None else len(ids)
        best_ids, best_scores = _EMPTY_IDS, _EMPTY_SCORES
        for start in range(0, total, _CHUNK_ROWS):
            stop = min(start + _CHUNK_ROWS, total)
            chunk_ids = np.arange(start, stop, dtype=np.int64) if ids is None else ids[start:stop]
            rows = self.matrix[start:stop] if ids is None else gather_rows(self.matrix, chunk_ids)
            scores = exact_scores(rows, q)
            best_ids = np.concatenate([best_ids, chunk_ids])
            best_scores = np.concatenate([best_scores, scores])
            if len(best_ids) > k:
                keep = np.argpartition(best_scores, -k)[-k:]
                best_ids, best_scores = best_ids[keep], best_scores[keep]
        return _sorted_best_first(best_ids, best_scores)

    # -- internals -------------------------------------------------------------------

    def _widening_search(self, q: np.ndarray, k: int, allowed: np.ndarray | None, n_allowed: int, rerank: bool):
        """IVF candidates, re-ranked exactly if ``rerank``; nprobe widens while the probed
        lists fall short.

        A short answer (fewer allowed candidates than asked for, -1 rows from FAISS) means
        the lists nearest the query are (nearly) all seen. The best allowed rows then sit
        on the edge of the seen region, spread over many lists, with scores closer together
        than SQ8 can tell apart. So each widening also asks for 4x the candidates, and the
        search stops only when a level supplies them all and its re-ranked top-k equals the
        previous level's: a wider probe no longer finds anything better. At ``nlist`` every
        list has been read; fewer than ``k`` rows then (only NaN codes could do it) leave
        the answer to the exact search."""
        faiss = _faiss()
        bits = None if allowed is None else np.packbits(allowed, bitorder="little")
        # FAISS reads the bitmap by pointer (pitfall 2): ``bits`` stays referenced here
        # until every search below has returned.
        selector = None if bits is None else faiss.IDSelectorBitmap(len(allowed), faiss.swig_ptr(bits))
        spare = (self.rerank - 1) * min(k, _RERANK_SPARE_CAP) if rerank else 0
        fetch = min(n_allowed, k + spare)
        # The first probe holds about twice the candidates wanted, on average: 32 lists of a
        # 1M-row index hold ~8,000 rows, short of a boundary batch's 10,000 candidates, and
        # each widening from there re-reads every list probed before.
        first = max(self.nprobe, min(self.nlist, math.ceil(2 * fetch * self.nlist / self.ntotal)))
        nprobe, previous = first, None
        while True:
            params = faiss.SearchParametersIVF(nprobe=nprobe)
            if selector is not None:
                params.sel = selector
            # The answer's re-ranking may read further down the codes' ranking than
            # ``fetch`` (_settle), so FAISS keeps a longer list: a deeper heap costs
            # little next to scanning the lists.
            depth = min(n_allowed, fetch + _SETTLE_MAX_ROWS) if rerank else fetch
            estimates, found = self._index.search(q[None, :], depth, params=params)
            keep = found[0] >= 0
            if allowed is not None:
                keep &= allowed[np.maximum(found[0], 0)]  # the selector already did; guards the contract
            found, estimates = found[0][keep], estimates[0][keep]
            # FAISS returns the estimates best first.
            if len(found) >= k:
                ids, scores = (
                    self._rerank(q, k, found[:fetch], estimates[:fetch]) if rerank else (found[:k], estimates[:k])
                )
                if len(found) >= fetch and (
                    previous is not None
                    and np.array_equal(np.sort(previous), np.sort(ids))
                    or previous is None
                    and nprobe == first
                    and (allowed is None or not self._depleted(q, nprobe, allowed, n_allowed))
                ):
                    break
                previous = ids
            if nprobe >= self.nlist:
                if len(found) < k:
                    return self._exact_search(q, k, allowed)
                break
            if nprobe == first and n_allowed <= _SCAN_ALL_AFTER_SHORT_FRACTION * self.ntotal:
                # Few rows allowed and the nearest lists hold too few of them: one scan of
                # every list, which decodes only the allowed rows' codes.
                nprobe = self.nlist
            else:
                nprobe = min(self.nlist, nprobe * _WIDEN)
            fetch = min(n_allowed, fetch * _WIDEN)
        # Only the answer's level reads down the ranking until it is settled: the levels
        # before it are compared with their over-fetch alone.
        return self._settle(q, k, found, estimates, min(len(found), fetch), ids, scores) if rerank else (ids, scores)

    def _depleted(self, q: np.ndarray, nprobe: int, allowed: np.ndarray, n_allowed: int) -> bool:
        """Whether the lists probed first hold far fewer allowed rows than the collection
        does on average: the query sits inside the seen region (a "near" seen set: what a
        session labeled are the query's neighbours), and the best allowed rows lie on its
        edge, in lists further out. A full first answer is then no proof: at 10M with the
        query's nearest 1% seen, it missed every true top-10 row for one query in eight.
        Costs one quantizer search and a look at the probed lists' ids (~1 ms)."""
        faiss = _faiss()
        _, lists = self._index.quantizer.search(q[None, :], nprobe)
        invlists = self._index.invlists
        rows = allowed_rows = 0
        for list_no in lists[0][lists[0] >= 0].tolist():
            size = invlists.list_size(list_no)
            if size == 0:
                continue
            pointer = invlists.get_ids(list_no)
            ids = faiss.rev_swig_ptr(pointer, size)
            ids = ids[ids < len(allowed)]
            allowed_rows += int(np.count_nonzero(allowed[ids]))
            invlists.release_ids(list_no, pointer)
            rows += size
        return rows > 0 and allowed_rows / rows < _DEPLETED_SHARE * n_allowed / len(allowed)

    def _rerank(self, q: np.ndarray, k: int, found: np.ndarray, estimates: np.ndarray):
        """The exact top-k of ``found`` (learning the estimates' error from them)."""
        order = np.argsort(found)  # file order: the (memory-mapped) rows read front to back
        rows = found[order]
        scores = exact_scores(gather_rows(self.matrix, rows), q)
        self._learn_error(scores - estimates[order])
        return _best(rows, scores, k)

    def _settle(
        self,
        q: np.ndarray,
        k: int,
        found: np.ndarray,
        estimates: np.ndarray,
        m: int,
        ids: np.ndarray,
        scores: np.ndarray,
    ):
        """``(ids, scores)``, the exact top-k of ``found[:m]``, completed by reading further
        down the codes' ranking (4x at a time) while a row there could still beat the k-th
        exact score.

        Where the best allowed rows' scores lie close together (a "near" seen set: they sit
        at its edge, all about as far from the query) the codes' errors reorder them, and
        at 1M the 40 best by estimate missed a fifth of the true top 10. A row below
        position m has an estimate under ``estimates[m]``, so it can beat the k-th exact
        score only if its estimate is off by more than the gap: reading stops once the gap
        exceeds ``_SETTLE_SIGMAS`` times the estimates' RMS error, learned from every
        row re-ranked so far. Each step scores only the rows it adds."""
        while m < len(found) and estimates[m] + _SETTLE_SIGMAS * self._rms_error() >= scores[-1]:
            end = min(len(found), m * _WIDEN)
            more_ids, more_scores = self._rerank(q, k, found[m:end], estimates[m:end])
            ids, scores = _best(np.concatenate([ids, more_ids]), np.concatenate([scores, more_scores]), k)
            m = end
        return ids, scores

    def _learn_error(self, errors: np.ndarray) -> None:
        self._error_sq += float(np.dot(errors, errors))
        self._error_n += len(errors)

    def _rms_error(self) -> float:
        return math.sqrt(self._error_sq / self._error_n) if self._error_n else 0.0


def _best(ids: np.ndarray, scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k best of ``ids`` by ``scores``, best first."""
    top = np.argpartition(scores, -k)[-k:] if len(ids) > k else np.arange(len(ids))
    return _sorted_best_first(ids[top], scores[top])


def _add_rows(index, matrix: np.ndarray, start: int) -> None:
    for begin in range(start, len(matrix), _CHUNK_ROWS):
        stop = min(begin + _CHUNK_ROWS, len(matrix))
        index.add(np.ascontiguousarray(matrix[begin:stop], dtype=np.float32))
        release_pages(matrix, begin, stop)
