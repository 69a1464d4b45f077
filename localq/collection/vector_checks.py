"""Opening vectors.npy against SQLite: the rows a process sees, and the checks made on open.

vectors.npy is the vectors' only copy (vector_file.py); SQLite records their digest
chain, one entry per committed batch and at least every DIGEST_SEGMENT_ROWS rows
(storage/codec.py). Opening checks what stays cheap at any size: the header (dim, at
least SQLite's row count) and the chain's first and last segments. That catches a file
from another collection, an older copy put back, and a write the disk tore. `localq
check` verifies every segment (``bad_segments``). Collection is this module's only caller.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from localq.errors import VectorsDamaged
from localq.search.exact import VectorIndex
from localq.storage.codec import chain_digest, to_blob
from localq.storage.store import Store
from localq.storage.vector_file import release_pages

# A segment longer than this (a chain written by localq 0.1.0 as one entry) is left to
# `localq check` rather than read on every open.
MAX_VERIFIED_ON_OPEN = 65536


def load(store: Store, path: Path, dim: int) -> VectorIndex:
    """The first ``n`` rows of ``path``, n = SQLite's row count; VectorsDamaged if the file
    cannot be what SQLite's rows were written with."""
    n = store.n_rows()
    if n and not path.exists():
        raise VectorsDamaged(
            f"{path} is missing but the database has {n} images: restore it from a backup "
            "(it is the only copy of the vectors), or index the images into a new --db"
        )
    index = VectorIndex.open(path, dim, n)
    bad = bad_segments(index.matrix(), store.digest_segments(n, edges_only=True), longest=MAX_VERIFIED_ON_OPEN)
    if bad:
        start, end = bad[0]
        raise VectorsDamaged(
            f"{path} rows {start}..{end - 1} do not match the digests the database recorded "
            "for them (a file from another collection, an older copy, or disk damage): "
            "restore it from a backup; `localq check` lists every damaged row range"
        )
    return index


def bad_segments(
    matrix: np.ndarray, segments: list[tuple[int, str, int, str]], longest: int | None = None
) -> list[tuple[int, int]]:
    """The (start, end) row ranges among the chain's ``segments`` (Store.digest_segments)
    whose rows in ``matrix`` do not hash to the digest SQLite recorded; a segment over
    ``longest`` rows is not read."""
    bad = []
    for start, previous, end, digest in segments:
        if longest is not None and end - start > longest:
            continue
        if chain_digest(previous, [to_blob(matrix[start:end])]) != digest:
            bad.append((start, end))
        release_pages(matrix, start, end)  # `check` reads every row once: 20 GB at 10M
    return bad
