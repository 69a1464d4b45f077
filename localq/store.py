"""SQLite storage for a collection: images, vectors, skips, classifiers, labels, rounds.

SQLite is the source of truth. Every write that belongs together (a batch of images
with their vectors; a round's labels, seen flags and weights) happens in one
transaction, so a process killed at any point leaves either all of it or none.
"""

from __future__ import annotations

import json
import sqlite3
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np
import sqlite_utils


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


def m003_ingested_shards(db: sqlite_utils.Database) -> None:
    # Embedding shards `localq ingest` has taken in (localq.ingest): a re-run skips them.
    db["ingested_shards"].create(
        {"source": str, "shard": str, "rows": int, "added": int, "npy_bytes": int, "at": str},
        pk=("source", "shard"),
    )


MIGRATIONS: list[Callable[[sqlite_utils.Database], None]] = [m001_initial, m002_classifiers, m003_ingested_shards]


class Store:
    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(str(path), timeout=30, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")  # readers (TUI, CLI) never block a writer
        conn.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL is durable across process kills
        conn.execute("PRAGMA foreign_keys=ON")
        self.path = path
        self.db = sqlite_utils.Database(conn)
        self.conn = conn
        self._migrate()

    def close(self) -> None:
        self.conn.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """All writes inside commit together or not at all."""
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield self.conn
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")

    def _migrate(self) -> None:
        self.db["_migrations"].create({"name": str, "applied_at": str}, pk="name", if_not_exists=True)
        done = {row["name"] for row in self.db["_migrations"].rows}
        for step in MIGRATIONS:
            if step.__name__ in done:
                continue
            with self.transaction():
                step(self.db)
                self.db["_migrations"].insert({"name": step.__name__, "applied_at": _now()})

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
        return [ImageRow(*r[:9], bool(r[9])) for r in self.conn.execute(sql, list(params))]

    def live_mask(self) -> np.ndarray:
        mask = np.zeros(self.n_rows(), dtype=bool)
        ids = np.fromiter((r[0] for r in self.conn.execute("SELECT id FROM images WHERE deleted = 0")), dtype=np.int64)
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
                [(i, m.path, m.hash, m.size, m.mtime, m.width, m.height, m.label, m.split, now) for i, m in zip(ids, images)],
            )
            c.executemany("INSERT INTO vectors(id, vector) VALUES (?, ?)", [(i, to_blob(v)) for i, v in zip(ids, vectors)])
            c.executemany("DELETE FROM skipped WHERE path = ?", [(m.path,) for m in images])
        return ids

    def tombstone(self, ids: Iterable[int]) -> None:
        with self.transaction() as c:
            c.executemany("UPDATE images SET deleted = 1 WHERE id = ?", [(int(i),) for i in ids])

    def touch(self, image_id: int, size: int, mtime: float) -> None:
        """Same content, new stat (a copy or a `touch`): keep the vector."""
        with self.transaction() as c:
            c.execute("UPDATE images SET size = ?, mtime = ? WHERE id = ?", (size, mtime, image_id))

    def vectors_from(self, start_id: int) -> Iterator[tuple[int, np.ndarray]]:
        for i, blob in self.conn.execute("SELECT id, vector FROM vectors WHERE id >= ? ORDER BY id", (start_id,)):
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
                [(p, r, s, m, now) for p, r, s, m in skips],
            )

    def forget_skips(self, paths: Iterable[str]) -> None:
        with self.transaction() as c:
            c.executemany("DELETE FROM skipped WHERE path = ?", [(p,) for p in paths])

    def skipped(self) -> list[Skip]:
        return [Skip(*r) for r in self.conn.execute("SELECT path, reason, at FROM skipped ORDER BY path")]

    def skip_stats(self) -> dict[str, tuple[int | None, float | None]]:
        return {p: (s, m) for p, s, m in self.conn.execute("SELECT path, size, mtime FROM skipped")}

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
                return c.execute("DELETE FROM seen").rowcount
            return c.execute("DELETE FROM seen WHERE classifier_id = ?", (classifier_id,)).rowcount

    def count_seen(self) -> int:
        return self.conn.execute("SELECT count(DISTINCT image_id) FROM seen").fetchone()[0]

    # -- classifiers, rounds, labels --------------------------------------------------
    def create_classifier(self, name: str, *, source: str, prompt: str | None, prior: np.ndarray,
                          weights: np.ndarray, bias: float, settings: dict) -> ClassifierRow:
        with self.transaction() as c:
            cur = c.execute(
                "INSERT INTO classifiers(name, created_at, source, prompt, prior, round, settings) VALUES (?, ?, ?, ?, ?, 0, ?)",
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
            c.execute("UPDATE classifiers SET settings = ? WHERE id = ?", (json.dumps(settings), classifier_id))

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
            c.execute("UPDATE classifiers SET round = ? WHERE id = ?", (round_no, classifier_id))

    def undo_round(self, classifier_id: int, round_no: int) -> None:
        with self.transaction() as c:
            for table in ("labels", "seen", "rounds"):
                c.execute(f"DELETE FROM {table} WHERE classifier_id = ? AND round = ?", (classifier_id, round_no))
            c.execute("UPDATE classifiers SET round = ? WHERE id = ?", (round_no - 1, classifier_id))

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
