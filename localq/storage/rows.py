"""The typed rows the Store reads and writes.

Kept apart from store.py so the modules that only pass rows around (indexer, ingest,
trainer) can name them without reading the SQL, and so the Store module holds queries only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ImageRow:
    id: int
    path: str
    hash: str
    size: int
    mtime: float
    width: int
    height: int
    label: str | None
    split: str | None
    deleted: bool


@dataclass(frozen=True)
class NewImage:
    path: str
    hash: str
    size: int
    mtime: float
    width: int
    height: int
    label: str | None = None
    split: str | None = None


@dataclass(frozen=True)
class Skip:
    path: str
    reason: str
    at: str


@dataclass(frozen=True)
class ClassifierRow:
    id: int
    name: str
    created_at: str
    source: str
    prompt: str | None
    round: int
    settings: dict


@dataclass(frozen=True)
class RoundRow:
    round: int
    weights: np.ndarray
    bias: float
    strategy: str | None
    n_labels: int
    created_at: str
