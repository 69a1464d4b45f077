"""SQLite storage for a collection: images, vectors, skips, classifiers, labels, rounds.

SQLite is the source of truth. Every write that belongs together (a batch of images
with their vectors; a round's labels, seen flags and weights) happens in one
transaction, so a process killed at any point leaves either all of it or none.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable, Iterator

import numpy as np

if TYPE_CHECKING:
    import sqlite_utils

from localq.errors import (
    CollectionBusy, CollectionUnwritable, DatabaseDamaged, LocalqError, StaleClassifier,
)
from localq.pathcodec import from_db, to_db


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


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def to_blob(vector: np.ndarray) -> bytes:
    return np.ascontiguousarray(vector, dtype="<f4").tobytes()


def from_blob(blob: bytes) -> np.ndarray:
    return np.frombuffer(blob, dtype="<f4").copy()


# Named migrations, applied in order and recorded in _migrations. Never edit one that
# has shipped: add a new step instead, so existing collections upgrade in place.
def m001_initial(db: sqlite_utils.Database) -> None:
    db["meta"].create({"key": str, "value": str}, pk="key")
    db["images"].create(
        {
            "id": int, "path": str, "hash": str, "size": int, "mtime": float,
            "width": int, "height": int, "label": str, "split": str,
            "deleted": int, "added_at": str,
        },
        pk="id",
        not_null={"path", "hash", "size", "mtime", "deleted"},
        defaults={"deleted": 0},
    )
    # One live row per path; tombstoned rows keep their id (it is the FAISS position).
    db.execute("CREATE UNIQUE INDEX images_live_path ON images(path) WHERE deleted = 0")
    db.execute("CREATE INDEX images_hash ON images(hash) WHERE deleted = 0")
    db["vectors"].create({"id": int, "vector": bytes}, pk="id", foreign_keys=[("id", "images")])
    db["skipped"].create({"path": str, "reason": str, "size": int, "mtime": float, "at": str}, pk="path")


def m002_classifiers(db: sqlite_utils.Database) -> None:
    db["classifiers"].create(
        {
            "id": int, "name": str, "created_at": str, "source": str, "prompt": str,
            "prior": bytes, "round": int, "settings": str,
        },
        pk="id",
        not_null={"name", "round"},
        defaults={"round": 0},
    )
    db.execute("CREATE UNIQUE INDEX classifiers_name ON classifiers(name)")
    # Round 0 holds the starting weights; round r > 0 the weights fitted after batch r.
    db["rounds"].create(
        {
            "classifier_id": int, "round": int, "weights": bytes, "bias": float,
            "strategy": str, "n_labels": int, "created_at": str,
        },
        pk=("classifier_id", "round"),
        foreign_keys=[("classifier_id", "classifiers")],
    )
    # Every label ever given, stamped with its round: undo deletes one round's rows and
    # the earlier labels of a relabelled image come back untouched.
    db["labels"].create(
        {"classifier_id": int, "round": int, "image_id": int, "score": float, "at": str},
        pk=("classifier_id", "round", "image_id"),
        foreign_keys=[("classifier_id", "classifiers"), ("image_id", "images")],
    )
    db["seen"].create(
        {"classifier_id": int, "image_id": int, "round": int},
        pk=("classifier_id", "image_id"),
        foreign_keys=[("classifier_id", "classifiers"), ("image_id", "images")],
    )


def m003_vector_digests(db: sqlite_utils.Database) -> None:
    # A running digest of every vector, one entry per committed batch (end_row = rows so
    # far). The FAISS file records the (rows, digest) it mirrors; a file whose pair is not
    # in this table mirrors some other state and is rebuilt (see vector_state.py).
    db["vector_digests"].create({"end_row": int, "digest": str}, pk="end_row")
    h, n = hashlib.sha256(b""), 0
    for (blob,) in db.conn.execute("SELECT vector FROM vectors ORDER BY id"):
        h.update(blob)
        n += 1
    if n:  # the rows so far count as one batch
        db.conn.execute("INSERT INTO vector_digests(end_row, digest) VALUES (?, ?)", (n, h.hexdigest()[:32]))


def m004_classifier_versions(db: sqlite_utils.Database) -> None:
    # Bumped by every write to a classifier's rounds, labels, seen flags or settings, so a
    # Trainer in another process notices that its in-memory state is stale.
    # ``incarnation`` tells a classifier from a later one of the same name (SQLite reuses
    # the id of a deleted row).
    db.conn.execute("ALTER TABLE classifiers ADD COLUMN version INTEGER NOT NULL DEFAULT 0")
    db.conn.execute("ALTER TABLE classifiers ADD COLUMN incarnation TEXT")
    db.conn.execute("UPDATE classifiers SET incarnation = lower(hex(randomblob(8)))")


def m005_ingested_shards(db: sqlite_utils.Database) -> None:
    # Embedding shards `localq ingest` has taken in (localq.ingest): a re-run skips them.
    db["ingested_shards"].create(
        {"source": str, "shard": str, "rows": int, "added": int, "npy_bytes": int, "at": str},
        pk=("source", "shard"),
    )


MIGRATIONS: list[Callable[["sqlite_utils.Database"], None]] = [
    m001_initial, m002_classifiers, m003_vector_digests, m004_classifier_versions, m005_ingested_shards,
]


def chain_digest(previous: str, blobs: Iterable[bytes]) -> str:
    """The digest chain: sha256(previous digest || the batch's vectors as little-endian f4)."""
    h = hashlib.sha256(previous.encode())
    for b in blobs:
        h.update(b)
    return h.hexdigest()[:32]


def sqlite_failure(path: Path, exc: sqlite3.Error) -> LocalqError:
    """A one-line, actionable error for what SQLite raised on ``path``."""
    name = getattr(exc, "sqlite_errorname", "") or ""
    msg = str(exc)
    if name.startswith("SQLITE_BUSY") or "locked" in msg:
        return CollectionBusy(f"{path} stayed locked by another process ({msg}); try again when it finishes")
    if name.startswith(("SQLITE_READONLY", "SQLITE_CANTOPEN", "SQLITE_PERM", "SQLITE_IOERR")) or "readonly" in msg \
            or "unable to open" in msg:
        return CollectionUnwritable(
            f"cannot use {path}: {msg}; localq needs write access to the collection directory and its files, "
            "even to search (SQLite keeps its write-ahead log and shared memory there)"
        )
    return DatabaseDamaged(
        f"collection database {path} is damaged ({msg}): restore it from a backup, or move it aside "
        f"(mv {path} {path}.broken) and re-index into a new collection; `localq check` says what else is affected"
    )


# How long a statement waits for another connection's write lock before failing. Writers
# also hold the collection's file lock (locking.py), so this only covers readers racing a
# commit and processes that bypass the lock.
BUSY_TIMEOUT_S = 60.0


class Store:
    def __init__(self, path: Path, lock=None):
        """``lock``: the collection's WriteLock; every write transaction holds it."""
        self.path = path
        self.lock = lock
        try:
            conn = sqlite3.connect(str(path), timeout=BUSY_TIMEOUT_S, isolation_level=None)
        except sqlite3.Error as exc:
            raise sqlite_failure(path, exc) from None
        try:
            conn.execute(f"PRAGMA busy_timeout={int(BUSY_TIMEOUT_S * 1000)}")
            self._set_wal(conn)  # readers (TUI, CLI) never block a writer
            conn.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL is durable across process kills
            conn.execute("PRAGMA foreign_keys=ON")
            self.conn = conn
            self._db = None
            self._migrate()
        except sqlite3.Error as exc:
            conn.close()
            raise sqlite_failure(path, exc) from None

    @staticmethod
    def _set_wal(conn: sqlite3.Connection) -> None:
        # Switching to WAL needs an exclusive lock and SQLite does not run the busy
        # handler for it: two processes creating one collection at once would see
        # "database is locked" at once. Retry for as long as the busy timeout.
        deadline = time.monotonic() + BUSY_TIMEOUT_S
        while True:
            try:
                conn.execute("PRAGMA journal_mode=WAL")
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def close(self) -> None:
        self.conn.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """All writes inside commit together or not at all, under the collection's write lock."""
        with self.lock.hold() if self.lock is not None else nullcontext():
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                yield self.conn
            except BaseException:
                self.conn.execute("ROLLBACK")
                raise
            self.conn.execute("COMMIT")

    @property
    def db(self) -> "sqlite_utils.Database":
        """sqlite_utils, for migrations only: importing it imports pandas when installed
        (0.6-1.4 s measured), which every `localq search` paid."""
        if self._db is None:
            import sqlite_utils

            self._db = sqlite_utils.Database(self.conn)
        return self._db

    def _migrate(self) -> None:
        if self._pending_migrations():
            with self.transaction():
                # Re-read under the lock: another process may have migrated meanwhile.
                self.db["_migrations"].create({"name": str, "applied_at": str}, pk="name", if_not_exists=True)
                for step in self._pending_migrations():
                    step(self.db)
                    self.db["_migrations"].insert({"name": step.__name__, "applied_at": _now()})

    def _pending_migrations(self) -> list:
        # Plain SQL, not sqlite_utils: an up-to-date collection never imports it.
        if not self.conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = '_migrations'").fetchone():
            return list(MIGRATIONS)
        done = {r[0] for r in self.conn.execute("SELECT name FROM _migrations")}
        return [step for step in MIGRATIONS if step.__name__ not in done]

    # -- metadata ---------------------------------------------------------------
    def meta(self) -> dict[str, str]:
        return {r[0]: r[1] for r in self.conn.execute("SELECT key, value FROM meta")}

    def set_meta(self, **values: object) -> None:
        with self.transaction() as c:
            c.executemany(
                "INSERT INTO meta(key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                [(k, str(v)) for k, v in values.items()],
            )

    # -- images -------------------------------------------------------------------
    def n_rows(self) -> int:
        """Rows ever assigned, tombstones included: the FAISS index must hold this many."""
        return self.conn.execute("SELECT coalesce(max(id) + 1, 0) FROM images").fetchone()[0]

    def count_live(self) -> int:
        return self.conn.execute("SELECT count(*) FROM images WHERE deleted = 0").fetchone()[0]

    def live_files(self) -> dict[str, ImageRow]:
        return {r.path: r for r in self._image_rows("WHERE deleted = 0")}

    def images(self, ids: Iterable[int]) -> list[ImageRow]:
        """Rows for ``ids``, in the order given (unknown ids are left out)."""
        ids = [int(i) for i in ids]
        if not ids:
            return []
        by_id = {}
        for chunk in _chunks(ids, 900):  # SQLite's bound-parameter limit
            marks = ",".join("?" * len(chunk))
            by_id.update({r.id: r for r in self._image_rows(f"WHERE id IN ({marks})", chunk)})
        return [by_id[i] for i in ids if i in by_id]

    def _image_rows(self, where: str, params: Iterable = ()) -> list[ImageRow]:
        sql = f"SELECT id, path, hash, size, mtime, width, height, label, split, deleted FROM images {where}"
        return [ImageRow(r[0], from_db(r[1]), *r[2:9], bool(r[9])) for r in self.conn.execute(sql, list(params))]

    def live_mask(self, n: int | None = None) -> np.ndarray:
        """Live rows among the first ``n`` (default: all): a reader sizes every mask to
        the rows its FAISS snapshot holds, whatever a concurrent indexer has added since."""
        n = self.n_rows() if n is None else n
        mask = np.zeros(n, dtype=bool)
        ids = np.fromiter(
            (r[0] for r in self.conn.execute("SELECT id FROM images WHERE deleted = 0 AND id < ?", (n,))), dtype=np.int64)
        mask[ids] = True
        return mask

    def labels_by_id(self) -> dict[int, str]:
        """Folder-derived class label of every live image that has one."""
        rows = self.conn.execute("SELECT id, label FROM images WHERE deleted = 0 AND label IS NOT NULL")
        return dict(rows.fetchall())

    def labels_with_split(self) -> list[tuple[int, str, str | None]]:
        """(id, label, split) of every live image with a folder label."""
        rows = self.conn.execute("SELECT id, label, split FROM images WHERE deleted = 0 AND label IS NOT NULL ORDER BY id")
        return rows.fetchall()

    def live_id_for_path(self, path: str) -> int | None:
        row = self.conn.execute("SELECT id FROM images WHERE path = ? AND deleted = 0", (to_db(path),)).fetchone()
        return row[0] if row else None

    def live_vector_for_hash(self, digest: str) -> np.ndarray | None:
        """Identical content already embedded: reuse its vector instead of re-encoding."""
        row = self.conn.execute(
            "SELECT v.vector FROM images i JOIN vectors v ON v.id = i.id WHERE i.hash = ? AND i.deleted = 0 LIMIT 1",
            (digest,),
        ).fetchone()
        return from_blob(row[0]) if row else None

    def add_images(self, images: list[NewImage], vectors: np.ndarray, replaces: Iterable[int] = ()) -> list[int]:
        """Insert images and their vectors in one transaction; ids are the next dense positions.

        ``replaces``: rows of changed files, tombstoned in the same transaction so a path
        is never live twice nor missing."""
        assert len(images) == len(vectors)
        with self.transaction() as c:
            c.executemany("UPDATE images SET deleted = 1 WHERE id = ?", [(int(i),) for i in replaces])
            start = c.execute("SELECT coalesce(max(id) + 1, 0) FROM images").fetchone()[0]
            ids = list(range(start, start + len(images)))
            now = _now()
            c.executemany(
                "INSERT INTO images(id, path, hash, size, mtime, width, height, label, split, deleted, added_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 0, ?)",
                [(i, to_db(m.path), m.hash, m.size, m.mtime, m.width, m.height, m.label, m.split, now) for i, m in zip(ids, images)],
            )
            blobs = [to_blob(v) for v in vectors]
            c.executemany("INSERT INTO vectors(id, vector) VALUES (?, ?)", list(zip(ids, blobs)))
            if ids:
                c.execute("INSERT INTO vector_digests(end_row, digest) VALUES (?, ?)",
                          (ids[-1] + 1, chain_digest(self._digest_at(c, start) or "", blobs)))
            c.executemany("DELETE FROM skipped WHERE path = ?", [(to_db(m.path),) for m in images])
        return ids

    def vectors_digest(self, end_row: int) -> str | None:
        """The digest of vectors ``0 .. end_row - 1`` if a batch ended there (None if not)."""
        return self._digest_at(self.conn, end_row)

    @staticmethod
    def _digest_at(conn, end_row: int) -> str | None:
        if end_row == 0:
            return ""
        row = conn.execute("SELECT digest FROM vector_digests WHERE end_row = ?", (end_row,)).fetchone()
        return row[0] if row else None

    def vector_digests(self) -> list[tuple[int, str]]:
        return self.conn.execute("SELECT end_row, digest FROM vector_digests ORDER BY end_row").fetchall()

    def live_rows_for(self, paths: Iterable[str]) -> dict[str, ImageRow]:
        """Live rows of these paths now (another process may have indexed them meanwhile)."""
        out: dict[str, ImageRow] = {}
        for chunk in _chunks(list(paths), 900):
            marks = ",".join("?" * len(chunk))
            out.update({r.path: r for r in self._image_rows(f"WHERE deleted = 0 AND path IN ({marks})",
                                                             [to_db(p) for p in chunk])})
        return out

    def tombstone(self, ids: Iterable[int]) -> None:
        with self.transaction() as c:
            c.executemany("UPDATE images SET deleted = 1 WHERE id = ?", [(int(i),) for i in ids])

    def touch(self, image_id: int, size: int, mtime: float) -> None:
        """Same content, new stat (a copy or a `touch`): keep the vector."""
        with self.transaction() as c:
            c.execute("UPDATE images SET size = ?, mtime = ? WHERE id = ?", (size, mtime, image_id))

    def vectors_from(self, start_id: int, stop_id: int | None = None) -> Iterator[tuple[int, np.ndarray]]:
        stop = self.n_rows() if stop_id is None else stop_id
        for i, blob in self.conn.execute(
                "SELECT id, vector FROM vectors WHERE id >= ? AND id < ? ORDER BY id", (start_id, stop)):
            yield i, from_blob(blob)

    def vectors(self, ids: Iterable[int]) -> np.ndarray:
        ids = [int(i) for i in ids]
        out = {}
        for chunk in _chunks(ids, 900):
            marks = ",".join("?" * len(chunk))
            out.update({i: from_blob(b) for i, b in self.conn.execute(f"SELECT id, vector FROM vectors WHERE id IN ({marks})", chunk)})
        return np.stack([out[i] for i in ids]) if ids else np.zeros((0, 0), np.float32)

    # -- ingested shards -------------------------------------------------------------
    def ingested_shards(self, source: str) -> set[str]:
        return {r[0] for r in self.conn.execute("SELECT shard FROM ingested_shards WHERE source = ?", (source,))}

    def record_ingested_shard(self, source: str, shard: str, rows: int, added: int, npy_bytes: int) -> None:
        with self.transaction() as c:
            c.execute(
                "INSERT OR REPLACE INTO ingested_shards(source, shard, rows, added, npy_bytes, at) VALUES (?, ?, ?, ?, ?, ?)",
                (source, shard, rows, added, npy_bytes, _now()),
            )

    # -- skipped files --------------------------------------------------------------
    def record_skips(self, skips: list[tuple[str, str, int | None, float | None]]) -> None:
        if not skips:
            return
        now = _now()
        with self.transaction() as c:
            c.executemany(
                "INSERT INTO skipped(path, reason, size, mtime, at) VALUES (?, ?, ?, ?, ?)"
                " ON CONFLICT(path) DO UPDATE SET reason = excluded.reason, size = excluded.size,"
                " mtime = excluded.mtime, at = excluded.at",
                # A reason quoting a decoder's message may carry a name's undecodable bytes.
                [(to_db(p), r.encode("utf-8", "backslashreplace").decode("utf-8"), s, m, now) for p, r, s, m in skips],
            )

    def forget_skips(self, paths: Iterable[str]) -> None:
        with self.transaction() as c:
            c.executemany("DELETE FROM skipped WHERE path = ?", [(to_db(p),) for p in paths])

    def skipped(self) -> list[Skip]:
        return [Skip(from_db(p), r, at) for p, r, at in self.conn.execute("SELECT path, reason, at FROM skipped ORDER BY path")]

    def skip_stats(self) -> dict[str, tuple[int | None, float | None]]:
        return {from_db(p): (s, m) for p, s, m in self.conn.execute("SELECT path, size, mtime FROM skipped")}

    # -- seen flags ---------------------------------------------------------------
    def seen_ids(self, classifier_id: int | None = None) -> np.ndarray:
        """Seen by one classifier, or by any classifier when None."""
        if classifier_id is None:
            rows = self.conn.execute("SELECT DISTINCT image_id FROM seen")
        else:
            rows = self.conn.execute("SELECT image_id FROM seen WHERE classifier_id = ?", (classifier_id,))
        return np.fromiter((r[0] for r in rows), dtype=np.int64)

    def reset_seen(self, classifier_id: int | None = None) -> int:
        with self.transaction() as c:
            if classifier_id is None:
                c.execute("UPDATE classifiers SET version = version + 1")
                return c.execute("DELETE FROM seen").rowcount
            c.execute("UPDATE classifiers SET version = version + 1 WHERE id = ?", (classifier_id,))
            return c.execute("DELETE FROM seen WHERE classifier_id = ?", (classifier_id,)).rowcount

    def count_seen(self) -> int:
        return self.conn.execute("SELECT count(DISTINCT image_id) FROM seen").fetchone()[0]

    # -- classifiers, rounds, labels --------------------------------------------------
    def create_classifier(self, name: str, *, source: str, prompt: str | None, prior: np.ndarray,
                          weights: np.ndarray, bias: float, settings: dict) -> ClassifierRow:
        with self.transaction() as c:
            if c.execute("SELECT 1 FROM classifiers WHERE name = ?", (name,)).fetchone():
                # Checked under the write lock: another process may have created it meanwhile.
                raise LocalqError(f"classifier {name!r} exists: open it, or choose another name")
            cur = c.execute(
                "INSERT INTO classifiers(name, created_at, source, prompt, prior, round, settings, incarnation)"
                " VALUES (?, ?, ?, ?, ?, 0, ?, lower(hex(randomblob(8))))",
                (name, _now(), source, prompt, to_blob(prior), json.dumps(settings)),
            )
            c.execute(
                "INSERT INTO rounds(classifier_id, round, weights, bias, strategy, n_labels, created_at) VALUES (?, 0, ?, ?, NULL, 0, ?)",
                (cur.lastrowid, to_blob(weights), float(bias), _now()),
            )
        return self.classifier(name)

    def classifier(self, name: str) -> ClassifierRow | None:
        row = self.conn.execute(
            "SELECT id, name, created_at, source, prompt, round, settings FROM classifiers WHERE name = ?", (name,)
        ).fetchone()
        return ClassifierRow(*row[:6], json.loads(row[6] or "{}")) if row else None

    def classifiers(self) -> list[ClassifierRow]:
        rows = self.conn.execute("SELECT id, name, created_at, source, prompt, round, settings FROM classifiers ORDER BY name")
        return [ClassifierRow(*r[:6], json.loads(r[6] or "{}")) for r in rows]

    def classifier_prior(self, classifier_id: int) -> np.ndarray:
        return from_blob(self.conn.execute("SELECT prior FROM classifiers WHERE id = ?", (classifier_id,)).fetchone()[0])

    def update_settings(self, classifier_id: int, settings: dict) -> None:
        with self.transaction() as c:
            c.execute("UPDATE classifiers SET settings = ?, version = version + 1 WHERE id = ?",
                      (json.dumps(settings), classifier_id))

    def classifier_version(self, classifier_id: int) -> tuple[str, int] | None:
        """(incarnation, changes so far) of this classifier; None if it no longer exists."""
        row = self.conn.execute("SELECT incarnation, version FROM classifiers WHERE id = ?", (classifier_id,)).fetchone()
        return (row[0], row[1]) if row else None

    def delete_classifier(self, classifier_id: int) -> None:
        with self.transaction() as c:
            for table in ("labels", "seen", "rounds"):
                c.execute(f"DELETE FROM {table} WHERE classifier_id = ?", (classifier_id,))
            c.execute("DELETE FROM classifiers WHERE id = ?", (classifier_id,))

    def rounds(self, classifier_id: int) -> list[RoundRow]:
        rows = self.conn.execute(
            "SELECT round, weights, bias, strategy, n_labels, created_at FROM rounds WHERE classifier_id = ? ORDER BY round",
            (classifier_id,),
        )
        return [RoundRow(r, from_blob(w), b, s, n, t) for r, w, b, s, n, t in rows]

    def latest_round(self, classifier_id: int) -> RoundRow:
        """The newest round only: reading every round's weights grows with the history."""
        r, w, b, s, n, t = self.conn.execute(
            "SELECT round, weights, bias, strategy, n_labels, created_at FROM rounds WHERE classifier_id = ?"
            " ORDER BY round DESC LIMIT 1", (classifier_id,)).fetchone()
        return RoundRow(r, from_blob(w), b, s, n, t)

    def commit_round(self, classifier_id: int, round_no: int, scores: dict[int, float], seen: Iterable[int],
                     weights: np.ndarray, bias: float, strategy: str | None) -> None:
        """A round's labels, seen flags and fitted weights, all or nothing."""
        now = _now()
        with self.transaction() as c:
            self._expect_round(c, classifier_id, round_no - 1)
            c.executemany(
                "INSERT INTO labels(classifier_id, round, image_id, score, at) VALUES (?, ?, ?, ?, ?)",
                [(classifier_id, round_no, int(i), float(s), now) for i, s in scores.items()],
            )
            c.executemany(
                "INSERT OR IGNORE INTO seen(classifier_id, image_id, round) VALUES (?, ?, ?)",
                [(classifier_id, int(i), round_no) for i in seen],
            )
            n_labels = c.execute(
                "SELECT count(DISTINCT image_id) FROM labels WHERE classifier_id = ?", (classifier_id,)
            ).fetchone()[0]
            c.execute(
                "INSERT INTO rounds(classifier_id, round, weights, bias, strategy, n_labels, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (classifier_id, round_no, to_blob(weights), float(bias), strategy, n_labels, now),
            )
            c.execute("UPDATE classifiers SET round = ?, version = version + 1 WHERE id = ?", (round_no, classifier_id))

    def undo_round(self, classifier_id: int, round_no: int) -> None:
        """Drop round ``round_no``, refused unless it is the latest (checked in the transaction)."""
        with self.transaction() as c:
            self._expect_round(c, classifier_id, round_no)
            for table in ("labels", "seen", "rounds"):
                c.execute(f"DELETE FROM {table} WHERE classifier_id = ? AND round = ?", (classifier_id, round_no))
            c.execute("UPDATE classifiers SET round = ?, version = version + 1 WHERE id = ?", (round_no - 1, classifier_id))

    @staticmethod
    def _expect_round(c, classifier_id: int, round_no: int) -> None:
        # The last line of defence against a writer working from a stale view: the
        # Trainer checks first and reloads; this catches anything that slipped past.
        row = c.execute("SELECT name, round FROM classifiers WHERE id = ?", (classifier_id,)).fetchone()
        if row is None:
            raise StaleClassifier("the classifier was deleted by another process")
        if row[1] != round_no:
            raise StaleClassifier(
                f"classifier {row[0]!r} is at round {row[1]}, not {round_no}: another process changed it; reopen it")

    def current_labels(self, classifier_id: int) -> dict[int, float]:
        """Each image's most recent label for this classifier."""
        rows = self.conn.execute(
            "SELECT image_id, score FROM labels l WHERE classifier_id = ? AND round = "
            "(SELECT max(round) FROM labels WHERE classifier_id = l.classifier_id AND image_id = l.image_id)",
            (classifier_id,),
        )
        return dict(rows.fetchall())

    def label_history(self, classifier_id: int) -> list[tuple[int, int, float]]:
        rows = self.conn.execute(
            "SELECT round, image_id, score FROM labels WHERE classifier_id = ? ORDER BY round, image_id", (classifier_id,)
        )
        return rows.fetchall()

    # -- sizes --------------------------------------------------------------------------
    def file_sizes(self) -> dict[str, int]:
        out = {}
        for suffix in ("", "-wal", "-shm"):
            p = Path(str(self.path) + suffix)
            if p.exists():
                out[p.name] = p.stat().st_size
        return out


def _chunks(items: list, size: int) -> Iterator[list]:
    for start in range(0, len(items), size):
        yield items[start:start + size]
