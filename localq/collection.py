"""A collection: one directory holding the SQLite store and the FAISS index of its vectors.

This is the object every driver (CLI, TUI, benchmark) opens first. It keeps the FAISS
file consistent with SQLite (the source of truth) and knows which encoder built it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from localq import paths
from localq.errors import CollectionNotFound, EncoderMismatch, IndexCorrupt
from localq.store import Store
from localq.vector_index import VectorIndex


@dataclass(frozen=True)
class Hit:
    id: int
    score: float
    path: str
    label: str | None = None


class Collection:
    def __init__(self, root: Path, store: Store):
        self.root = root
        self.store = store
        meta = store.meta()
        self.model_id: str | None = meta.get("model_id")
        self.dim: int | None = int(meta["dim"]) if "dim" in meta else None
        self.encoder_spec: str | None = meta.get("encoder_spec")
        self.encoder_weights: str | None = meta.get("encoder_weights") or None
        self._index: VectorIndex | None = None
        self._encoder = None
        self._live: np.ndarray | None = None  # cached: reading 1M ids from SQLite costs ~0.2 s
        self._labels: tuple | None = None  # (n_rows, ids, labels, splits) of folder-labeled images

    # -- opening ------------------------------------------------------------------------
    @classmethod
    def open(cls, root: str | Path | None = None, *, create: bool = False) -> "Collection":
        root = paths.collection_dir(root)
        db_path = root / paths.DB_FILE
        if not db_path.exists() and not create:
            raise CollectionNotFound(
                f"no collection at {root}: run `localq index PATH --db {root}` first (or set LOCALQ_HOME)"
            )
        return cls(root, Store(db_path))

    def close(self) -> None:
        self.store.close()

    def reopen(self) -> "Collection":
        """The same collection for another thread (SQLite connections are per thread),
        sharing this one's loaded vector index instead of reading it again (0.5 s for
        Imagenette). Hand it over: only the new object should be used afterwards."""
        other = Collection.open(self.root)
        other._index = self._index
        return other

    def __enter__(self) -> "Collection":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def bind_encoder(self, encoder) -> None:
        """Record the encoder on a new collection; refuse a different one on an existing one."""
        if self.model_id is None:
            self.store.set_meta(
                model_id=encoder.model_id, dim=encoder.dim, encoder_spec=encoder.encoder_spec,
                encoder_weights=encoder.weights or "", created_at=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            )
            self.model_id, self.dim = encoder.model_id, encoder.dim
            self.encoder_spec, self.encoder_weights = encoder.encoder_spec, encoder.weights
        elif encoder.model_id != self.model_id:
            raise EncoderMismatch(
                f"collection {self.root} was built with {self.model_id}, not {encoder.model_id}: "
                f"use --encoder {self.encoder_spec} or another --db"
            )
        self._encoder = encoder

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
            index_path = self.root / paths.INDEX_FILE
            try:
                self._index = VectorIndex.open(index_path, self.dim)
            except IndexCorrupt:
                # SQLite holds every vector: a damaged FAISS file is rebuilt, not fatal.
                index_path.unlink()
                self._index = VectorIndex.open(index_path, self.dim)
            rows_before = self._index.ntotal
            self.sync_index()
            if self._index.ntotal != rows_before:
                self._index.save()
        return self._index

    def sync_index(self) -> None:
        """Bring the FAISS file level with SQLite after a run that was killed mid-way."""
        index, rows = self._index, self.store.n_rows()
        if index.ntotal > rows:
            index.truncate(rows)
        if index.ntotal < rows:
            # `rows` bounds the read: another connection may commit more meanwhile.
            missing = [v for i, v in self.store.vectors_from(index.ntotal) if i < rows]
            index.add(np.stack(missing).astype(np.float32))
        if index.ntotal != rows:
            raise RuntimeError(f"vector index holds {index.ntotal} rows, store {rows}")

    @property
    def n_rows(self) -> int:
        """Rows this object works with: those in its vector index once that is open. A
        background indexer may commit more through its own connection; they count from
        the next ``refresh()``, so every mask matches the index it is applied to."""
        return self._index.ntotal if self._index is not None else self.store.n_rows()

    def refresh(self) -> bool:
        """Take in rows committed by another connection (a background indexer). True if any."""
        if self._index is None or self.store.n_rows() == self._index.ntotal:
            return False
        self.sync_index()
        self.images_changed()
        return True

    def live_mask(self) -> np.ndarray:
        """A fresh copy of the mask of live (not deleted) rows."""
        n = self.n_rows
        if self._live is None or len(self._live) != n:
            mask = self.store.live_mask()
            self._live = np.concatenate([mask, np.zeros(max(0, n - len(mask)), bool)])[:n]
        return self._live.copy()

    def images_changed(self) -> None:
        """Called by writers of the images table (the indexer) to drop cached state."""
        self._live = None
        self._labels = None

    def split_mask(self, split: str) -> np.ndarray:
        """Rows whose folder split is ``split`` (e.g. train)."""
        mask = np.zeros(self.n_rows, dtype=bool)
        ids, _, splits = self._labeled()
        mask[ids[splits == split]] = True
        return mask

    def labeled_rows(self, split: str | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(ids, class labels) of live images with a folder label, in one split or all."""
        ids, labels, splits = self._labeled()
        if split is None:
            return ids, labels
        keep = splits == split
        return ids[keep], labels[keep]

    def labels_of(self, ids) -> list[str | None]:
        """Folder labels of ``ids`` (None where an image has none)."""
        all_ids, labels, _ = self._labeled()
        ids = np.asarray(ids, dtype=np.int64)
        if len(all_ids) == 0:
            return [None] * len(ids)
        pos = np.minimum(np.searchsorted(all_ids, ids), len(all_ids) - 1)  # all_ids is sorted
        found = all_ids[pos] == ids
        return [labels[p] if f else None for p, f in zip(pos, found)]

    def _labeled(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        # Cached like the live mask: evaluation runs every round and SQLite reads cost ~50 ms at 60k.
        n = self.n_rows
        if self._labels is None or self._labels[0] != n:
            rows = [r for r in self.store.labels_with_split() if r[0] < n]
            self._labels = (
                n,
                np.array([r[0] for r in rows], dtype=np.int64),
                np.array([r[1] for r in rows], dtype=object),
                np.array([r[2] for r in rows], dtype=object),
            )
        return self._labels[1:]

    def allowed_mask(self, exclude_seen_of: int | None | bool = False) -> np.ndarray:
        """Live images, minus those seen by classifier ``exclude_seen_of`` (True = by any)."""
        mask = self.live_mask()
        if exclude_seen_of is not False:
            mask[self.store.seen_ids(None if exclude_seen_of is True else exclude_seen_of)] = False
        return mask

    def hits(self, ids: np.ndarray, scores: np.ndarray) -> list[Hit]:
        rows = {r.id: r for r in self.store.images(ids)}
        return [Hit(int(i), float(s), rows[int(i)].path, rows[int(i)].label) for i, s in zip(ids, scores)]

    def search(self, query: np.ndarray, k: int = 10, *, unseen: bool | int = False) -> list[Hit]:
        ids, scores = self.index.search(np.asarray(query, np.float32), k, self.allowed_mask(unseen))
        return self.hits(ids, scores)

    def text_vector(self, text: str) -> np.ndarray:
        """The prompt's vector in this collection's space; a repeated prompt comes from the
        on-disk prompt cache without loading the encoder."""
        from localq import prompt_cache

        if self.model_id is None:
            raise CollectionNotFound(f"collection {self.root} is empty: index some images first")
        return prompt_cache.text_vector(self.model_id, text, lambda t: self.encoder().encode_texts([t])[0])

    def search_text(self, text: str, k: int = 10, *, unseen: bool | int = False) -> list[Hit]:
        return self.search(self.text_vector(text), k, unseen=unseen)

    def search_image(self, path: str | Path, k: int = 10, *, unseen: bool | int = False) -> list[Hit]:
        from localq.imageio import open_image

        return self.search(self.encoder().encode_images([open_image(path)])[0], k, unseen=unseen)

    # -- housekeeping ------------------------------------------------------------------
    def stats(self) -> dict:
        meta = self.store.meta()
        index_file = self.root / paths.INDEX_FILE
        sizes = self.store.file_sizes()
        if index_file.exists():
            sizes[index_file.name] = index_file.stat().st_size
        return {
            "path": str(self.root),
            "model_id": self.model_id,
            "encoder": self.encoder_spec,
            "dim": self.dim,
            "created_at": meta.get("created_at"),
            "images": self.store.count_live(),
            "rows": self.store.n_rows(),
            "seen": self.store.count_seen(),
            "skipped": len(self.store.skipped()),
            "classifiers": len(self.store.classifiers()),
            "bytes": sizes,
            "bytes_total": sum(sizes.values()),
        }
