"""The collection database's connection settings and schema, as named migrations.

Kept apart from store.py so what the tables are (and how an older collection is
upgraded in place) reads in one place, apart from the queries that use them. The
migrations take a sqlite_utils Database, which the Store builds only when a step is
pending: an up-to-date collection never imports sqlite_utils (it imports pandas).
"""

from __future__ import annotations

import hashlib
import sqlite3
import time
from pathlib import Path
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:
    import sqlite_utils

# How long a statement waits for another connection's write lock before failing. Writers
# also hold the collection's file lock (locking.py), so this only covers readers racing a
# commit and processes that bypass the lock.
BUSY_TIMEOUT_S = 60.0


def configure(conn: sqlite3.Connection) -> None:
    """The settings every connection to a collection runs with."""
    conn.execute(f"PRAGMA busy_timeout={int(BUSY_TIMEOUT_S * 1000)}")
    _set_wal(conn)  # readers (TUI, CLI) never block a writer
    conn.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL is durable across process kills
    conn.execute("PRAGMA foreign_keys=ON")


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


# Named migrations, applied in order and recorded in _migrations. Never edit one that
# has shipped: add a new step instead, so existing collections upgrade in place.
def m001_initial(db: sqlite_utils.Database) -> None:
    db["meta"].create({"key": str, "value": str}, pk="key")
    db["images"].create(
        {
            "id": int,
            "path": str,
            "hash": str,
            "size": int,
            "mtime": float,
            "width": int,
            "height": int,
            "label": str,
            "split": str,
            "deleted": int,
            "added_at": str,
        },
        pk="id",
        not_null={"path", "hash", "size", "mtime", "deleted"},
        defaults={"deleted": 0},
    )
    # One live row per path; tombstoned rows keep their id (it is the row position of the vectors).
    db.execute("CREATE UNIQUE INDEX images_live_path ON images(path) WHERE deleted = 0")
    db.execute("CREATE INDEX images_hash ON images(hash) WHERE deleted = 0")
    db["vectors"].create({"id": int, "vector": bytes}, pk="id", foreign_keys=[("id", "images")])
    db["skipped"].create({"path": str, "reason": str, "size": int, "mtime": float, "at": str}, pk="path")


def m002_classifiers(db: sqlite_utils.Database) -> None:
    db["classifiers"].create(
        {
            "id": int,
            "name": str,
            "created_at": str,
            "source": str,
            "prompt": str,
            "prior": bytes,
            "round": int,
            "settings": str,
        },
        pk="id",
        not_null={"name", "round"},
        defaults={"round": 0},
    )
    db.execute("CREATE UNIQUE INDEX classifiers_name ON classifiers(name)")
    # Round 0 holds the starting weights; round r > 0 the weights fitted after batch r.
    db["rounds"].create(
        {
            "classifier_id": int,
            "round": int,
            "weights": bytes,
            "bias": float,
            "strategy": str,
            "n_labels": int,
            "created_at": str,
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
    # in this table mirrors some other state and is rebuilt (see collection/vector_checks.py).
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
    # Embedding shards `localq ingest` has taken in (localq.ingest.shard_ingest): a re-run skips them.
    db["ingested_shards"].create(
        {"source": str, "shard": str, "rows": int, "added": int, "npy_bytes": int, "at": str},
        pk=("source", "shard"),
    )


def m006_vectors_to_file(db: sqlite_utils.Database) -> None:
    # Vectors move out of SQLite into vectors.npy beside it (vector_file.py): as BLOBs a
    # 10M collection put 20 GB inside the database, and every open copied them all into
    # RAM. The file is written whole and renamed into place before the table is dropped
    # in this same transaction, so a crash at any point leaves the BLOBs, or the file
    # and no BLOBs. vectors.faiss, the in-RAM copy's cache, has no use any more.
    from localq.storage import vector_file

    root = Path(db.conn.execute("PRAGMA database_list").fetchone()[2]).parent
    meta = dict(db.conn.execute("SELECT key, value FROM meta"))
    rows = db.conn.execute("SELECT coalesce(max(id) + 1, 0) FROM images").fetchone()[0]
    if rows and "dim" in meta:
        dim = int(meta["dim"])
        vector_file.write_whole(root / VECTORS_FILE, dim, _legacy_blocks(db.conn, rows, dim), rows)
    db.conn.execute("DROP TABLE vectors")
    (root / "vectors.faiss").unlink(missing_ok=True)


def _vector_move_notice(conn: sqlite3.Connection) -> str | None:
    n = conn.execute("SELECT count(*) FROM vectors").fetchone()[0]
    if n < 100_000:
        return None
    return f"moving {n:,} vectors out of localq.db into vectors.npy (once; about a minute per million)"


# Migration steps may carry ``notice(conn)`` (a line shown before a long step) and
# ``frees_space`` (VACUUM once the migrations commit): Store._migrate reads both.
m006_vectors_to_file.notice = _vector_move_notice
m006_vectors_to_file.frees_space = True  # the BLOBs' pages: 20 GB at 10M rows


def _legacy_blocks(conn: sqlite3.Connection, rows: int, dim: int, size: int = 65536):
    # A missing, wrong-length or non-finite vector becomes zeros, as 0.1.0's FAISS copy
    # had it; the digest chain then disagrees and `localq check` names those rows.
    import numpy as np

    from localq.storage.codec import from_blob

    for start in range(0, rows, size):
        block = np.zeros((min(size, rows - start), dim), dtype=np.float32)
        for i, blob in conn.execute("SELECT id, vector FROM vectors WHERE id >= ? AND id < ?", (start, start + size)):
            v = from_blob(blob)
            if v.shape == (dim,) and np.isfinite(v).all():
                block[i - start] = v
        yield block


def m007_labels_by_image(db: sqlite_utils.Database) -> None:
    # Each image's latest label is read every round (Store.current_labels).
    # The primary key orders labels by round, so finding an image's latest label scanned
    # all of a classifier's labels: 1.3 s a call at 7,000 labels. Ordered by image, then
    # round, with the score in the index, it is one pass over the index.
    db.conn.execute("CREATE INDEX IF NOT EXISTS labels_by_image ON labels(classifier_id, image_id, round, score)")


MIGRATIONS: list[Callable[["sqlite_utils.Database"], None]] = [
    m001_initial,
    m002_classifiers,
    m003_vector_digests,
    m004_classifier_versions,
    m005_ingested_shards,
    m006_vectors_to_file,
    m007_labels_by_image,
]

# Where m006 moves the vectors (paths.VECTORS_FILE; a literal here, as a migration must
# keep doing what it did whatever the constant becomes).
VECTORS_FILE = "vectors.npy"


def pending_migrations(conn: sqlite3.Connection) -> list:
    """The steps this database has not recorded yet, in order."""
    # Plain SQL, not sqlite_utils: an up-to-date collection never imports it.
    if not conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = '_migrations'").fetchone():
        return list(MIGRATIONS)
    done = {r[0] for r in conn.execute("SELECT name FROM _migrations")}
    return [step for step in MIGRATIONS if step.__name__ not in done]
