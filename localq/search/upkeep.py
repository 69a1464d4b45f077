"""The collection's approximate index (``vectors.ivf``): when it is used, how it is kept
in step with SQLite, and when it is trusted.

Past ``AUTO_IVF_FROM_ROWS`` rows one exact pass costs more than a labeling round should
wait (~80-160 ms per million 512-d rows on a 2-core machine), so a collection searches an
IVF-SQ8 index instead (search/ivf.py: re-ranked exactly, widening then exact under "near"
seen sets). The choice is the collection's ``search_index`` setting: ``auto`` (the
default: by size), ``exact`` or ``ivf``, set with ``localq index/ingest --index``.

The file is a cache of vectors.npy's rows: its trailer records the rows it was built
over and the digest SQLite holds for them. A file whose record does not match is never
used (search falls back to exact, which is always right) and is rebuilt by the next
write. Rows added since the file was written are added to it in memory on load, so a
reader always searches every row its exact index holds.

Only writers (holding the collection's write lock) build or save the file: the indexer
and ``ingest`` when they finish a run. A k-means over a sample and one pass to add every
row took 137-207 s at 1M rows (docs/bench/round-1m.md, scale-1m.md), so readers never
build it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from localq.search import trailer_file
from localq.search.exact import VectorIndex
from localq.search.ivf import IvfIndex
from localq.storage.store import Store

SETTING = "search_index"
KINDS = ("auto", "exact", "ivf")
AUTO_IVF_FROM_ROWS = 2_000_000
# The lists were trained on the rows of the last build. Once the collection has grown
# this many times over, nlist falls well short of ~4*sqrt(n) and lists grow long:
# the next write retrains instead of appending.
REBUILD_AFTER_GROWTH = 4
FILE_NAME = "vectors.ivf"
# Measured by scripts/bench_round.py at 1M x 512 (docs/bench/round-1m.md): what a build
# costs, for the notice a writer shows before starting one.
_BUILD_S_PER_MILLION = 150
# A file behind the collection by more than this many rows is not used: adding them on
# every open would cost more than the exact search it saves (rows that a writer without
# the IVF step, or a killed run, left behind). The next `localq index` catches it up.
_CATCH_UP_AT_MOST = 100_000


def checked_kind(kind: str) -> str:
    if kind not in KINDS:
        raise ValueError(f"unknown search index {kind!r}: choose one of {', '.join(KINDS)}")
    return kind


def stored_kind(value: str | None) -> str:
    """The setting as stored; a value this version does not know reads as the default."""
    return value if value in KINDS else "auto"


def wanted(kind: str, rows: int) -> bool:
    """Whether a collection of ``rows`` rows searches the IVF index under setting ``kind``."""
    return kind == "ivf" or (kind == "auto" and rows >= AUTO_IVF_FROM_ROWS)


class ApproximateSearch:
    """The exact index's contract (``search``, ``candidates``, ``rows``, ``scores``,
    ``matrix()``, ``ntotal``) with the IVF's search: what sampling and the Collection use
    when the IVF index is on. Rows and scores by id come from the exact index's rows."""

    def __init__(self, flat: VectorIndex, ivf: IvfIndex, trained_rows: int):
        self.flat = flat
        self.ivf = ivf
        self.trained_rows = trained_rows  # rows the lists were trained on (REBUILD_AFTER_GROWTH)
        self.saved_rows: int | None = None  # rows the file on disk holds, if it holds this index

    @property
    def ntotal(self) -> int:
        return self.flat.ntotal

    def matrix(self) -> np.ndarray:
        return self.flat.matrix()

    def rows(self, ids) -> np.ndarray:
        return self.flat.rows(ids)

    def scores(self, w, b: float = 0.0, ids=None) -> np.ndarray:
        return self.flat.scores(w, b, ids)

    def search(self, query, k: int, allowed: np.ndarray | None = None):
        return self.ivf.search(query, k, allowed)

    def candidates(self, query, n: int, allowed: np.ndarray | None = None):
        return self.ivf.candidates(query, n, allowed)

    def usable_over(self, flat: VectorIndex) -> bool:
        """Built over ``flat``'s rows, none of which went away since (the database put
        back to a backup shows fewer rows)."""
        return self.flat is flat and self.ivf.ntotal <= flat.ntotal

    def in_step(self) -> bool:
        """The IVF covers the exact index's rows over its current mapping (a view that
        grew maps the file anew: the IVF re-ranks from the new mapping)."""
        return self.ivf.ntotal == self.flat.ntotal and self.ivf.matrix.ctypes.data == _data(self.flat)

    def catch_up(self) -> None:
        """Add the exact index's newer rows (and re-point at its storage)."""
        self.ivf.extend(self.flat.matrix())


def load(store: Store, path: Path, flat: VectorIndex) -> tuple[ApproximateSearch | None, str | None]:
    """The IVF index over ``flat``'s rows from ``path``, and why it was not usable if not."""
    if not path.exists():
        return None, None
    state = trailer_file.read_state(path)
    problem = disagreement(store, state, flat.dim, flat.ntotal)
    if problem:
        return None, problem
    rows = int(state["rows"])
    try:
        ivf = IvfIndex.load(path, flat.matrix()[:rows])
    except (RuntimeError, OSError, MemoryError, ValueError) as exc:
        return None, f"{path.name} is unreadable ({type(exc).__name__}); the next `localq index` rebuilds it"
    trained = state.get("trained_rows")
    search = ApproximateSearch(flat, ivf, trained if isinstance(trained, int) and trained > 0 else rows)
    search.saved_rows = rows
    search.catch_up()
    return search, None


def disagreement(store: Store, state: dict | None, dim: int, n_rows: int) -> str | None:
    """Why a file with this record does not index a prefix of the collection's ``n_rows``
    rows (None: it does)."""
    if state is None:
        return f"{FILE_NAME} does not record which database state it indexes"
    rows = state.get("rows")
    if not isinstance(rows, int) or state.get("dim") != dim:
        return f"{FILE_NAME} has an unreadable record"
    if rows > n_rows:
        return f"{FILE_NAME} indexes {rows} rows, the collection {n_rows}"
    if n_rows - rows > max(_CATCH_UP_AT_MOST, rows // 10):
        return f"{FILE_NAME} indexes {rows} of {n_rows} rows; `localq index` updates it"
    if state.get("digest") is None or state.get("digest") != store.vectors_digest(rows):
        return f"{FILE_NAME} indexes another state of the database than this one"
    return None


@dataclass
class IvfState:
    """What one Collection knows of its IVF index: the one loaded, or why there is none."""

    search: ApproximateSearch | None = None
    problem: str | None = None
    judged_rows: int = -1  # the exact index's rows when ``problem`` was found


def for_search(store: Store, root: Path, flat: VectorIndex, state: IvfState) -> ApproximateSearch | None:
    """The IVF index to search ``flat``'s rows with (loaded once, then kept in step with
    ``flat``), or None (``state.problem`` says why): the caller then searches ``flat``."""
    current = state.search
    if current is not None and current.usable_over(flat):
        if not current.in_step():
            current.catch_up()
        return current
    if state.problem is not None and state.judged_rows == flat.ntotal:
        # Judged for this view: not read again until the view grows (a file a concurrent
        # writer saved ahead of this process's rows becomes usable after a refresh).
        return None
    state.search, state.problem = load(store, root / FILE_NAME, flat)
    state.judged_rows = flat.ntotal
    return state.search


def save(
    store: Store, root: Path, flat: VectorIndex, state: IvfState, kind: str, notice: Callable[[str], None] | None = None
) -> None:
    """Bring the file level with ``flat`` (the caller holds the write lock): add the new
    rows to a usable index or train a new one, and save it; or, where the collection
    does not want one, delete the file (at 10M rows it holds 5 GB)."""
    path = root / FILE_NAME
    state.problem = None
    if not wanted(kind, flat.ntotal) or flat.ntotal == 0:
        path.unlink(missing_ok=True)
        state.search = None
        return
    current = state.search
    if current is None or not current.usable_over(flat):
        current, _ = load(store, path, flat)
    if current is None or flat.ntotal > REBUILD_AFTER_GROWTH * current.trained_rows:
        if notice is not None:
            notice(
                f"building the IVF search index over {flat.ntotal:,} vectors "
                f"(about {_BUILD_S_PER_MILLION / 60:.1f} min per million on 2 cores)"
            )
        current = ApproximateSearch(flat, IvfIndex.build(flat.matrix()), flat.ntotal)
    elif not current.in_step():
        current.catch_up()
    if current.saved_rows != current.ivf.ntotal:
        record = {
            "rows": current.ivf.ntotal,
            "dim": flat.dim,
            "trained_rows": current.trained_rows,
            "digest": store.vectors_digest(current.ivf.ntotal),
        }
        current.ivf.save(path, record)
        current.saved_rows = current.ivf.ntotal
    state.search = current


def _data(flat: VectorIndex) -> int:
    m = flat.matrix()
    return m.ctypes.data if m.size else 0
