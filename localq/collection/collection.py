"""A collection: one directory holding the SQLite store, its vectors and their search index.

This is the object every driver (CLI, TUI, benchmark) opens first. It keeps the vectors
(vectors.npy, memory-mapped: vector_file.py) in step with SQLite's rows, the IVF file
past a size (upkeep.py) consistent with both, and knows which encoder built it.

Consistency between processes (docs/ARCHITECTURE.md, "Ids"):
- writers hold the collection's write lock (locking.py), write new rows to vectors.npy
  at SQLite's row count and make them durable, then commit SQLite: row i is always
  image i, and SQLite never counts a row the file lacks;
- SQLite records a digest chain of the rows; opening checks the file's first and last
  segments against it (vector_checks.py), `localq check` every segment;
- a reader's view is the rows its index shows: every mask is sized to them, so rows a
  concurrent indexer commits meanwhile are ignored until the next write or open.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from localq.collection import vector_checks
from localq.collection.folder_labels import FolderLabels
from localq.errors import ClassifierNotFound, CollectionNotFound, CollectionUnwritable, EncoderMismatch
from localq.names import check_name
from localq.search import upkeep
from localq.search.exact import VectorIndex
from localq.storage import paths
from localq.storage.locking import OnWait, WriteLock
from localq.storage.store import Store


@dataclass(frozen=True)
class Hit:
    id: int
    score: float
    path: str
    label: str | None = None


class Collection:
    def __init__(self, root: Path, store: Store, lock: WriteLock | None = None):
        self.root = root
        self.store = store
        self.lock = lock if lock is not None else (store.lock or WriteLock(root))
        store.lock = self.lock
        meta = store.meta()
        self.model_id: str | None = meta.get("model_id")
        self.dim: int | None = int(meta["dim"]) if "dim" in meta else None
        self.encoder_spec: str | None = meta.get("encoder_spec")
        self.encoder_weights: str | None = meta.get("encoder_weights") or None
        self._index: VectorIndex | None = None
        self._ivf = upkeep.IvfState()  # the IVF index loaded, or why none is searched
        self._search_kind: str | None = None  # the search_index setting, read once
        self._encoder = None
        self._live: np.ndarray | None = None  # cached: reading 1M ids from SQLite costs ~0.2 s
        self._labels: FolderLabels | None = None

    # -- opening ------------------------------------------------------------------------
    @classmethod
    def open(
        cls, root: str | Path | None = None, *, create: bool = False, on_wait: OnWait | None = None
    ) -> "Collection":
        """Open (or with ``create``, start) the collection at ``root``.

        ``on_wait(message)`` is told when a write has to wait for another process, or is
        about to take minutes (building the IVF index)."""
        root = paths.collection_dir(root)
        db_path = root / paths.DB_FILE
        paths.refuse_damaged_location(root, db_path)
        if not db_path.exists() and not create:
            raise CollectionNotFound(
                f"no collection at {root}: run `localq index PATH --db {root}` first (or set LOCALQ_HOME)"
            )
        if create:
            try:
                root.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise CollectionUnwritable(
                    f"cannot create collection directory {root}: {exc.strerror or exc}"
                ) from None
        lock = WriteLock(root, on_wait)
        return cls(root, Store(db_path, lock), lock)

    @contextmanager
    def writing(self) -> Iterator[None]:
        """Hold the write lock, with the index showing every committed row."""
        with self.lock.hold():
            if self._index is not None:
                self.sync_index()
            yield

    def close(self) -> None:
        self.store.close()

    def reopen(self) -> "Collection":
        """The same collection for another thread (SQLite connections are per thread), sharing
        the loaded indexes. Hand it over: only the new object should be used afterwards."""
        other = Collection.open(self.root, on_wait=self.lock.on_wait)
        other._index, other._ivf = self._index, self._ivf
        return other

    def __enter__(self) -> "Collection":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def bind_encoder(self, encoder) -> None:
        """Record the encoder on a new collection; refuse a different one on an existing one."""
        if self.model_id is None:
            with self.lock.hold():  # another process may be binding this new collection too
                meta = self.store.meta()
                if "model_id" in meta:
                    self.model_id, self.dim = meta["model_id"], int(meta["dim"])
                    self.encoder_spec, self.encoder_weights = (
                        meta.get("encoder_spec"),
                        meta.get("encoder_weights") or None,
                    )
                else:
                    self._record_encoder(encoder)
        if encoder.model_id != self.model_id:
            raise EncoderMismatch(
                f"collection {self.root} was built with {self.model_id}, not {encoder.model_id}: "
                f"use --encoder {self.encoder_spec} or another --db"
            )
        self._encoder = encoder

    def _record_encoder(self, encoder) -> None:
        self.store.set_meta(
            model_id=encoder.model_id,
            dim=encoder.dim,
            encoder_spec=encoder.encoder_spec,
            encoder_weights=encoder.weights or "",
            created_at=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        )
        self.model_id, self.dim = encoder.model_id, encoder.dim
        self.encoder_spec, self.encoder_weights = encoder.encoder_spec, encoder.weights

    def encoder(self):
        """The encoder that built this collection, loaded on first use (it is slow to load)."""
        if self._encoder is None:
            if self.encoder_spec is None:
                raise CollectionNotFound(f"collection {self.root} is empty: index some images first")
            from localq.encoders import load_encoder

            self.bind_encoder(load_encoder(self.encoder_spec, self.encoder_weights))
        return self._encoder

    # -- vectors ------------------------------------------------------------------------
    @property
    def index(self) -> VectorIndex:
        if self._index is None:
            if self.dim is None:
                raise CollectionNotFound(f"collection {self.root} is empty: index some images first")
            self._index = vector_checks.load(self.store, self.root / paths.VECTORS_FILE, self.dim)
        return self._index

    @property
    def searcher(self):
        """What answers top-k queries (VectorIndex's contract): the exact index, or past
        the ``search_index`` setting's threshold the IVF index over it (upkeep.py)."""
        index = self.index
        if not upkeep.wanted(self.search_index(), index.ntotal):
            return index
        return upkeep.for_search(self.store, self.root, index, self._ivf) or index

    @property
    def ivf_problem(self) -> str | None:
        """Why the IVF file is not searched where it would be (None: it is, or not wanted)."""
        return self._ivf.problem

    def search_index(self) -> str:
        """``auto`` (IVF past upkeep.AUTO_IVF_FROM_ROWS rows), ``exact`` or ``ivf``."""
        if self._search_kind is None:
            self._search_kind = upkeep.stored_kind(self.setting(upkeep.SETTING))
        return self._search_kind

    def set_search_index(self, kind: str) -> None:
        """Choose the search index; the next ``save_index`` builds or drops the IVF file."""
        self.set_setting(upkeep.SETTING, upkeep.checked_kind(kind))
        self._search_kind = kind

    def rows(self) -> int:
        """Rows in this process's view (what its index shows): every mask has this length."""
        return self.index.ntotal

    def sync_index(self) -> None:
        """Show the rows SQLite counts now: those other processes committed since this
        view was taken (or fewer, if SQLite was put back to a backup)."""
        index, rows = self.index, self.store.n_rows()
        if index.ntotal != rows:
            index.show(rows)
            self.images_changed()

    def save_index(self) -> None:
        """Build, extend or drop the IVF file as the ``search_index`` setting wants (the
        vectors themselves are durable once written). Writers call it when a run ends,
        not per batch (at 10M rows the file holds 5 GB), and `localq repair`."""
        with self.writing():
            upkeep.save(self.store, self.root, self.index, self._ivf, self.search_index(), self.lock.on_wait)

    def refresh(self) -> bool:
        """Take in rows committed by another connection (a background indexer); True if any."""
        if self._index is None or self.store.n_rows() == self._index.ntotal:
            return False
        self.sync_index()
        return True

    def live_mask(self) -> np.ndarray:
        """A fresh copy of the mask of live (not deleted) rows."""
        n = self.rows()
        if self._live is None or len(self._live) != n:
            self._live = self.store.live_mask(n)
        return self._live.copy()

    def images_changed(self) -> None:
        """Called by writers of the images table (the indexer) to drop cached state."""
        self._live = None
        self._labels = None

    def split_mask(self, split: str) -> np.ndarray:
        """Rows whose folder split is ``split`` (e.g. train)."""
        return self._folder_labels().split_mask(split)

    def labeled_rows(self, split: str | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(ids, class labels) of live images with a folder label, in one split or all."""
        return self._folder_labels().rows(split)

    def labels_of(self, ids) -> list[str | None]:
        """Folder labels of ``ids`` (None where an image has none)."""
        return self._folder_labels().of(ids)

    def _folder_labels(self) -> FolderLabels:
        # Cached like the live mask: evaluation runs every round and SQLite reads cost ~50 ms at 60k.
        n = self.rows()
        if self._labels is None or self._labels.n_rows != n:
            self._labels = FolderLabels(n, self.store.each_label_with_split())
        return self._labels

    def id_of_path(self, path: str | Path) -> int | None:
        """The live image indexed from ``path`` (resolved as the indexer stores it), if any."""
        return self.store.live_id_for_path(str(Path(path).expanduser().resolve()))

    def allowed_mask(self, exclude_seen_of: int | None | bool = False) -> np.ndarray:
        """Live images, minus those seen by classifier ``exclude_seen_of`` (True = by any)."""
        mask = self.live_mask()
        if exclude_seen_of is not False:
            seen = self.store.seen_ids(None if exclude_seen_of is True else exclude_seen_of)
            mask[seen[seen < len(mask)]] = False
        return mask

    def hits(self, ids: np.ndarray, scores: np.ndarray) -> list[Hit]:
        rows = {r.id: r for r in self.store.images(ids)}
        return [Hit(int(i), float(s), rows[int(i)].path, rows[int(i)].label) for i, s in zip(ids, scores)]

    def search(self, query: np.ndarray, k: int = 10, *, unseen: bool | int = False) -> list[Hit]:
        ids, scores = self.searcher.search(np.asarray(query, np.float32), k, self.allowed_mask(unseen))
        return self.hits(ids, scores)

    def text_vector(self, text: str) -> np.ndarray:
        """The prompt's vector in this collection's space; a repeated prompt comes from the
        on-disk prompt cache without loading the encoder."""
        from localq.encoders import prompt_cache

        if self.model_id is None:
            raise CollectionNotFound(f"collection {self.root} is empty: index some images first")
        return prompt_cache.text_vector(self.model_id, text, lambda t: self.encoder().encode_texts([t])[0])

    def search_text(self, text: str, k: int = 10, *, unseen: bool | int = False) -> list[Hit]:
        return self.search(self.text_vector(text), k, unseen=unseen)

    def search_image(self, path: str | Path, k: int = 10, *, unseen: bool | int = False) -> list[Hit]:
        from localq.imageio import open_image

        return self.search(self.encoder().encode_images([open_image(path)])[0], k, unseen=unseen)

    # -- writing images: the vectors file and SQLite in step, in one place ---------------
    def add_images(self, rows: list, vectors: np.ndarray, *, replaces=()) -> list[int]:
        """Add images and their vectors (tombstoning ``replaces`` in the same transaction),
        under the write lock: the vectors to vectors.npy first, durably, then SQLite."""
        with self.writing():  # the view shows every committed row, so the new ones go after them
            index = self.index
            start = index.ntotal
            index.add(vectors)
            try:
                ids = self.store.add_images(rows, vectors, replaces=list(replaces))
            except BaseException:
                index.show(start)  # SQLite does not count them: the next write overwrites them
                raise
            assert not ids or ids[0] == start, (ids[0], start)
            self.images_changed()
        return ids

    def remove_images(self, ids) -> None:
        """Tombstone images: their rows stay (ids are row positions) but never match again."""
        with self.writing():
            self.store.tombstone(ids)
            self.images_changed()

    def move_images(self, moves: list, *, replaces=()) -> None:
        """Give images new paths (id, path, size, mtime, label, split): a file moved or
        renamed keeps its id, so its labels, seen flags and rounds follow it."""
        with self.writing():
            self.store.move_images(moves, replaces=list(replaces))
            self.images_changed()

    def remove_if_unchanged(self, rows) -> int:
        """Tombstone these image rows unless another process moved or removed them since
        they were read (under the write lock); returns how many were tombstoned."""
        with self.writing():
            now = {r.id: r for r in self.store.images([r.id for r in rows])}
            ids = [r.id for r in rows if r.id in now and not now[r.id].deleted and now[r.id].path == r.path]
            if ids:
                self.store.tombstone(ids)
                self.images_changed()
        return len(ids)

    def vector_of_row(self, image_id: int) -> np.ndarray:
        """The vector at row ``image_id``, tombstoned or not (rows are never rewritten)."""
        if image_id >= self.rows():
            self.sync_index()
        return self.index.rows([image_id])[0]

    def live_rows_with_hash(self, digest: str) -> list:
        """Live images with this content hash (where a moved file may have come from)."""
        return self.store.live_rows_with_hash(digest)

    def touch_image(self, image_id: int, size: int, mtime: float) -> None:
        """Record a new size and mtime for a file whose content did not change."""
        self.store.touch(image_id, size, mtime)

    def live_files(self) -> dict:
        """path -> live image row, for the indexer's plan of what changed."""
        return self.store.live_files()

    def live_rows_for(self, paths) -> dict:
        return self.store.live_rows_for(paths)

    def vector_for_content(self, digest: str) -> np.ndarray | None:
        """A live image's vector with this content hash: a copied file is not embedded again."""
        image_id = self.store.live_id_for_hash(digest)
        return None if image_id is None else self.vector_of_row(image_id)

    def record_skips(self, skips: list) -> None:  # files that could not be indexed: (path, reason, size, mtime)
        self.store.record_skips(skips)

    def forget_skips(self, paths) -> None:
        self.store.forget_skips(paths)

    def skip_stats(self) -> dict:
        """path -> (size, mtime) of each skipped file, so an unchanged one is not retried."""
        return self.store.skip_stats()

    def ingested_shards(self, source: str) -> set[str]:
        return self.store.ingested_shards(source)

    def record_ingested_shard(self, source: str, shard: str, rows: int, added: int, npy_bytes: int) -> None:
        self.store.record_ingested_shard(source, shard, rows, added, npy_bytes)

    # -- what drivers may ask (they never touch the store) -----------------------------
    def count_live(self) -> int:
        """Live images committed to SQLite, including rows this process's index has not taken in."""
        return self.store.count_live()

    def image_rows(self, ids) -> list:
        """The SQLite rows (path, hash, label, split, ...) of ``ids``."""
        return self.store.images(ids)

    def folder_label_rows(self) -> list[tuple[int, str, str | None]]:
        """(id, folder label, split) of every live image with a folder label, in this view."""
        labels = self._folder_labels()
        return list(zip(labels.ids.tolist(), labels.labels.tolist(), labels.splits.tolist()))

    def classifier_rows(self) -> list:
        return self.store.classifiers()

    def classifier_id(self, name: str) -> int:
        row = self.store.classifier(check_name(name))
        if row is None:
            raise ClassifierNotFound(f"no classifier named {name!r}: see `localq classifiers`")
        return row.id

    def has_classifier(self, name: str) -> bool:
        return self.store.classifier(check_name(name)) is not None

    def delete_classifier(self, classifier_id: int) -> None:
        """Drop a classifier with its rounds, labels and seen flags (one transaction)."""
        self.store.delete_classifier(classifier_id)

    def reset_seen(self, classifier: str | None = None) -> int:
        """Clear seen flags of one classifier, or of all: every image becomes retrievable again."""
        return self.store.reset_seen(self.classifier_id(classifier) if classifier else None)

    def skipped(self) -> list:
        """Files the indexer could not read, with the reason."""
        return self.store.skipped()

    def setting(self, key: str) -> str | None:
        """A collection-wide value kept in SQLite's meta table (e.g. an unfinished index run)."""
        return self.store.meta().get(key)

    def set_setting(self, key: str, value: str) -> None:
        self.store.set_meta(**{key: value})

    # -- housekeeping ------------------------------------------------------------------
    def check(self):
        """Is the collection whole (localq.collection.integrity): reads everything, writes nothing."""
        from localq.collection import integrity

        return integrity.check(self, self.store)

    def repair(self):
        """Rebuild what is derived from other data (localq.collection.integrity), then check again."""
        from localq.collection import integrity

        return integrity.repair(self, self.store)

    def stats(self) -> dict:
        """Counts, encoder, search index and sizes on disk, without loading the vectors."""
        from localq.collection import stats

        return stats.stats(self, self.store)
