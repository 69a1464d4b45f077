"""How values are encoded on disk: vectors (round weights in SQLite; the digest chain of
vectors.npy), digests, timestamps.

One place for the on-disk encodings, because more than the Store depends on them: the
integrity check recomputes the digest chain over vectors.npy, and a change here is a
change of file format.
"""

from __future__ import annotations

import hashlib
import time
from typing import Iterable

import numpy as np


def to_blob(vector: np.ndarray) -> bytes:
    return np.ascontiguousarray(vector, dtype="<f4").tobytes()


def from_blob(blob: bytes) -> np.ndarray:
    return np.frombuffer(blob, dtype="<f4").copy()


def chain_digest(previous: str, blobs: Iterable[bytes]) -> str:
    """The digest chain: sha256(previous digest || the batch's vectors as little-endian f4)."""
    h = hashlib.sha256(previous.encode())
    for b in blobs:
        h.update(b)
    return h.hexdigest()[:32]


# The chain gets an entry at least every this many rows, even inside one large batch (an
# ingested shard): opening a collection verifies its last entry's rows (collection/vector_checks.py),
# which must stay cheap at any size.
DIGEST_SEGMENT_ROWS = 16384


def chain_entries(previous: str, start: int, vectors: np.ndarray) -> list[tuple[int, str]]:
    """The chain's (end_row, digest) entries for ``vectors`` written at rows ``start ..``."""
    entries = []
    for s in range(0, len(vectors), DIGEST_SEGMENT_ROWS):
        segment = vectors[s : s + DIGEST_SEGMENT_ROWS]
        previous = chain_digest(previous, [to_blob(segment)])  # the rows' bytes, as one run
        entries.append((start + s + len(segment), previous))
    return entries


def timestamp() -> str:
    """Local time with its UTC offset, as every ``*_at`` column stores it."""
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")
