"""Folder labels (the class and split an image's folders name, `localq index --labels`)
as arrays over a collection's rows: what evaluation and the benchmark read every round."""

from __future__ import annotations

import numpy as np


class FolderLabels:
    """A snapshot of the folder-labeled live images among the first ``n_rows`` rows."""

    def __init__(self, n_rows: int, rows: list[tuple[int, str, str | None]]):
        rows = [r for r in rows if r[0] < n_rows]
        self.n_rows = n_rows
        self.ids = np.array([r[0] for r in rows], dtype=np.int64)  # ascending, as SQLite returns them
        self.labels = np.array([r[1] for r in rows], dtype=object)
        self.splits = np.array([r[2] for r in rows], dtype=object)

    def split_mask(self, split: str) -> np.ndarray:
        mask = np.zeros(self.n_rows, dtype=bool)
        mask[self.ids[self.splits == split]] = True
        return mask

    def rows(self, split: str | None = None) -> tuple[np.ndarray, np.ndarray]:
        if split is None:
            return self.ids, self.labels
        keep = self.splits == split
        return self.ids[keep], self.labels[keep]

    def of(self, ids) -> list[str | None]:
        ids = np.asarray(ids, dtype=np.int64)
        if len(self.ids) == 0:
            return [None] * len(ids)
        pos = np.minimum(np.searchsorted(self.ids, ids), len(self.ids) - 1)
        found = self.ids[pos] == ids
        return [self.labels[p] if f else None for p, f in zip(pos, found)]
