"""How values are written into the collection database: vectors, digests, timestamps.

One place for the on-disk encodings, because more than the Store depends on them: the
integrity check re-reads vector blobs and recomputes the digest chain, and a change here
is a change of file format.
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


def timestamp() -> str:
    """Local time with its UTC offset, as every ``*_at`` column stores it."""
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")
