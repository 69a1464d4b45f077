"""Which image a file found at a new path is, when its content left another path.

People sort their photos: a file renamed, moved to another folder, or a whole folder
moved keeps its content hash. When `localq index` finds a new file whose content is
that of an image whose file is gone, the image moves to the new path and keeps its id,
so its labels, seen flags and rounds (all keyed by id) stay with it.

A file is gone when its path lies under the folders being indexed and the scan did not
find it, or, outside them, when nothing exists at its path any more (a photo moved out
of a folder indexed in an earlier run, into the one indexed now).

A copy, where both files are there, is a second image and starts unlabeled: the same
photo filed in another folder is often there for another use (an album, a shared
folder, a training set kept apart), and a label copied silently would be one the person
never gave. A claimed image is claimed once: of two new copies of a moved file, one is
the move and the other a copy.
"""

from __future__ import annotations

import os
from collections import defaultdict
from pathlib import Path
from typing import Callable, Iterable

from localq.ingest.scan import is_under
from localq.storage.rows import ImageRow


class MovePool:
    """The gone images of one index run, claimable by content hash."""

    def __init__(
        self, gone: Iterable[ImageRow], prefixes: list[str], scanned: set[str], lookup: Callable[[str], list[ImageRow]]
    ):
        """``gone``: live images under ``prefixes`` (the roots) whose files the scan did
        not find. ``lookup(hash)``: the live images with that content, anywhere."""
        self._gone: dict[int, ImageRow] = {}
        self._by_hash: dict[str, list[ImageRow]] = defaultdict(list)
        for row in gone:
            self._gone[row.id] = row
            self._by_hash[row.hash].append(row)
        # Read by decode threads: fixed once built. A file with one of these hashes needs
        # no decoding, its vector is the gone image's.
        self.hashes: frozenset[str] = frozenset(self._by_hash)
        self._prefixes = prefixes
        self._scanned = scanned
        self._lookup = lookup
        self._claimed: set[int] = set()

    def claim(self, digest: str, path: str) -> ImageRow | None:
        """The gone image that the file at ``path`` with content ``digest`` is, if any
        (then it is no longer claimable)."""
        candidates = [r for r in self._by_hash.get(digest, ()) if r.id not in self._claimed]
        if not candidates:
            candidates = [r for r in self._lookup(digest) if r.id not in self._claimed and self._gone_elsewhere(r)]
        if not candidates:
            return None
        # Of several gone images with this content (duplicates moved together), the one
        # whose path ends most like the new one: a folder moved whole keeps its layout.
        best = max(candidates, key=lambda r: (_common_tail(r.path, path), -r.id))
        self._claimed.add(best.id)
        return best

    def release(self, row: ImageRow) -> None:
        """``row`` was not moved after all (another process changed it meanwhile)."""
        self._claimed.discard(row.id)

    def source(self, digest: str) -> ImageRow | None:
        """A gone image with this content, claimed or not: its vector and size serve a
        copy of it that was not decoded."""
        rows = self._by_hash.get(digest)
        return rows[0] if rows else None

    def unclaimed(self) -> list[ImageRow]:
        """The gone images no new file turned out to be: deleted files."""
        return [r for i, r in self._gone.items() if i not in self._claimed]

    def _gone_elsewhere(self, row: ImageRow) -> bool:
        if row.path in self._scanned or any(is_under(row.path, p) for p in self._prefixes):
            return False  # under the roots: gone only if the scan missed it (then it is in _gone)
        return not os.path.lexists(row.path)


def _common_tail(a: str, b: str) -> int:
    n = 0
    for x, y in zip(reversed(Path(a).parts), reversed(Path(b).parts)):
        if x != y:
            break
        n += 1
    return n
