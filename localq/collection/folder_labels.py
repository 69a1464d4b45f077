"""Folder labels (the class and split an image's folders name, `localq index --labels`)
as arrays over a collection's rows: what evaluation and the benchmark read every round."""

from __future__ import annotations

from itertools import islice
from typing import Iterable

import numpy as np

# Rows read from SQLite at a time: 10M (id, label, split) tuples at once held ~3 GB of
# Python objects, which the process kept (runtime.py keeps freed heap for reuse).
_CHUNK_ROWS = 65_536


class FolderLabels:
    """A snapshot of the folder-labeled live images among the first ``n_rows`` rows.

    Stored as codes into each distinct label and split (at 10M rows: ~130 MB, where a
    list of tuples took ~3 GB); ``labels`` is an object array whose items are the
    distinct label strings themselves, shared."""

    def __init__(self, n_rows: int, rows: Iterable[tuple[int, str, str | None]]):
        self.n_rows = n_rows
        label_codes: dict[str, int] = {}
        split_codes: dict[str | None, int] = {}
        ids, labels, splits = [], [], []
        rows = iter(rows)
        while chunk := [r for r in islice(rows, _CHUNK_ROWS) if r[0] < n_rows]:
            ids.append(np.fromiter((r[0] for r in chunk), np.int64, len(chunk)))
            labels.append(
                np.fromiter((label_codes.setdefault(r[1], len(label_codes)) for r in chunk), np.int32, len(chunk))
            )
            splits.append(
                np.fromiter((split_codes.setdefault(r[2], len(split_codes)) for r in chunk), np.int16, len(chunk))
            )
        self.ids = np.concatenate(ids) if ids else np.empty(0, np.int64)  # ascending, as SQLite returns them
        self.labels = _decode(label_codes, labels)
        self._split_codes = np.concatenate(splits) if splits else np.empty(0, np.int16)
        self._split_of = split_codes

    @property
    def splits(self) -> np.ndarray:
        """Each row's split (None where its folders name none), as an object array."""
        return _decode(self._split_of, [self._split_codes])

    def split_mask(self, split: str) -> np.ndarray:
        mask = np.zeros(self.n_rows, dtype=bool)
        mask[self.ids[self._in(split)]] = True
        return mask

    def rows(self, split: str | None = None) -> tuple[np.ndarray, np.ndarray]:
        if split is None:
            return self.ids, self.labels
        keep = self._in(split)
        return self.ids[keep], self.labels[keep]

    def of(self, ids) -> list[str | None]:
        ids = np.asarray(ids, dtype=np.int64)
        if len(self.ids) == 0:
            return [None] * len(ids)
        pos = np.minimum(np.searchsorted(self.ids, ids), len(self.ids) - 1)
        found = self.ids[pos] == ids
        return [self.labels[p] if f else None for p, f in zip(pos, found)]

    def _in(self, split: str) -> np.ndarray:
        code = self._split_of.get(split)
        return self._split_codes == code if code is not None else np.zeros(len(self.ids), bool)


def _decode(codes: dict, parts: list[np.ndarray]) -> np.ndarray:
    vocabulary = np.empty(len(codes), dtype=object)
    for value, code in codes.items():
        vocabulary[code] = value
    return vocabulary[np.concatenate(parts)] if parts else np.empty(0, dtype=object)
