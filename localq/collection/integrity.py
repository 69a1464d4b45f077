"""`localq check` and `localq repair`: is a collection whole, and fix what can be fixed.

It reads SQLite below the store's API (PRAGMAs, raw rows), so Collection.check() and
Collection.repair() hand it the store: drivers call those, never this module.

``check`` reads everything and writes nothing: SQLite's own integrity check, ids and
vectors (dense ids; vectors.npy holding every row, each finite and, if live, unit-length, and each
segment of the digest chain matching its rows), the IVF file's record, and the
classifiers' rounds, labels and seen flags against each other.

``repair`` holds the write lock and changes only what is derived from other data: the
IVF file (rebuilt from vectors.npy), rows of vectors.npy that no longer match their
digests (embedded again from their image files when those still hold the content
indexed: reembed.py), a classifier's round counter (set to its latest stored
round), seen flags naming images or classifiers that no longer exist, and temporary
files of killed runs. It never deletes a label or a round, and it refuses to touch a
database SQLite itself reports damaged. A vectors.npy missing rows is restored from a
backup, not repaired.
"""

from __future__ import annotations

import sqlite3
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import ContextManager, Iterator, Protocol

import numpy as np

from localq.collection import reembed, vector_checks
from localq.errors import DatabaseDamaged, EncoderMismatch, VectorsDamaged
from localq.search import trailer_file, upkeep
from localq.storage import paths
from localq.storage.codec import chain_digest, from_blob, to_blob
from localq.storage.store import Store, sqlite_failure
from localq.storage.vector_file import VectorFile, release_pages


class Checked(Protocol):
    """What check and repair ask of the collection; Collection passes itself."""

    root: Path
    dim: int | None

    def writing(self) -> ContextManager[None]: ...
    def save_index(self) -> None: ...
    def search_index(self) -> str: ...
    def encoder(self): ...
    def image_rows(self, ids) -> list: ...


NORM_TOLERANCE = 1e-3
_CHUNK = 65536


@dataclass(frozen=True)
class Finding:
    ok: bool
    topic: str  # sqlite, images, vectors, ivf, classifiers, files
    detail: str


@dataclass
class Report:
    findings: list[Finding] = field(default_factory=list)
    repaired: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(f.ok for f in self.findings)

    def add(self, ok: bool, topic: str, detail: str) -> None:
        self.findings.append(Finding(ok, topic, detail))


def check(coll: Checked, store: Store) -> Report:
    with sqlite_errors_named(store):
        return _check(coll, store)


@contextmanager
def sqlite_errors_named(store: Store) -> Iterator[None]:
    """What SQLite raises while checking (a full disk, first: PRAGMA integrity_check may
    need temporary space) as localq's one-line error, never as a finding of damage."""
    try:
        yield
    except sqlite3.Error as exc:
        raise sqlite_failure(store.path, exc) from exc


def _check(coll: Checked, store: Store) -> Report:
    report = Report()
    if not _sqlite_ok(store, report):
        return report  # the rest would read damaged pages
    _check_images(store, report)
    if coll.dim is not None:
        _check_vectors(coll, store, report)
        _check_ivf(coll, store, report)
    _check_classifiers(coll, store, report)
    _check_leftovers(coll, report)
    return report


def repair(coll: Checked, store: Store) -> Report:
    """Fix what is derived (see the module docstring), then check again."""
    done: list[str] = []
    with sqlite_errors_named(store), coll.writing():
        problems = _integrity_problems(store)
        if problems:
            raise DatabaseDamaged(
                f"SQLite reports {store.path} damaged ({problems[0]}); repair rebuilds only what SQLite "
                "holds, so restore localq.db from a backup first (or try `sqlite3 localq.db .recover`)"
            )
        c = store.conn
        if coll.dim is not None:
            file = VectorFile.open(coll.root / paths.VECTORS_FILE, coll.dim)
            matrix = file.rows(store.n_rows())  # VectorsDamaged (rows missing): restore from a backup
            bad = vector_checks.bad_segments(matrix, store.digest_segments(len(matrix)))
            if bad:
                reembed.reembed(coll, file, np.concatenate([np.arange(s, e) for s, e in bad]))
                first = bad[0][0]  # the chain before the first damaged segment stays as it is
                chain = _recomputed_chain(store, matrix, first)
                with store.transaction() as tx:
                    tx.execute("DELETE FROM vector_digests WHERE end_row > ?", (first,))
                    tx.executemany("INSERT INTO vector_digests(end_row, digest) VALUES (?, ?)", chain)
                done.append(
                    f"embedded rows {_ranges(bad)} again from their image files: they no longer "
                    "matched their recorded digests"
                )
            ivf_before = _ivf_state(coll)
            coll.save_index()
            ivf_after = _ivf_state(coll)
            if ivf_after != ivf_before:
                done.append(f"{'rebuilt' if ivf_after else 'deleted'} {upkeep.FILE_NAME}")
        for cid, name, counter, latest in c.execute(
            "SELECT c.id, c.name, c.round, (SELECT max(round) FROM rounds r WHERE r.classifier_id = c.id) FROM classifiers c"
        ).fetchall():
            if latest is not None and counter != latest:
                with store.transaction() as tx:
                    tx.execute("UPDATE classifiers SET round = ?, version = version + 1 WHERE id = ?", (latest, cid))
                done.append(f"classifier {name!r}: round counter {counter} set to its latest stored round {latest}")
        with store.transaction() as tx:
            n = tx.execute(
                "DELETE FROM seen WHERE image_id NOT IN (SELECT id FROM images)"
                " OR classifier_id NOT IN (SELECT id FROM classifiers)"
            ).rowcount
        if n:
            done.append(f"dropped {n} seen flags of images or classifiers that no longer exist")
        for tmp in _leftover_temp_files(coll):  # saves happen under the lock we hold: none is being written
            tmp.unlink(missing_ok=True)
            done.append(f"removed {tmp.name}, left by a killed run")
    report = check(coll, store)
    report.repaired = done
    return report


# -- checks ---------------------------------------------------------------------------------


def _integrity_problems(store: Store) -> list[str]:
    rows = [r[0] for r in store.conn.execute("PRAGMA integrity_check(20)")]
    return [] if rows == ["ok"] else rows


def _sqlite_ok(store: Store, report: Report) -> bool:
    problems = _integrity_problems(store)
    fk = store.conn.execute("PRAGMA foreign_key_check").fetchall()
    if problems:
        report.add(False, "sqlite", f"integrity_check: {'; '.join(problems[:3])}")
        return False
    report.add(not fk, "sqlite", "integrity_check ok" + (f"; {len(fk)} foreign-key violations" if fk else ""))
    return True


def _check_images(store: Store, report: Report) -> None:
    n_rows = store.n_rows()
    n_images = store.conn.execute("SELECT count(*) FROM images").fetchone()[0]
    detail = f"{store.count_live()} live images, {n_rows} rows"
    if n_images != n_rows:
        detail += f"; ids are not dense ({n_images} images for {n_rows} positions)"
    report.add(n_images == n_rows, "images", detail)


def _check_vectors(coll: Checked, store: Store, report: Report) -> None:
    dim, n = coll.dim, store.n_rows()
    try:
        # A fresh look at the file (not this process's view), every row SQLite counts.
        matrix = VectorFile.open(coll.root / paths.VECTORS_FILE, dim).rows(n)
    except (VectorsDamaged, EncoderMismatch) as exc:
        report.add(False, "vectors", str(exc))
        return
    not_finite, bad_norm = [], []
    live = store.live_mask(n)  # a tombstone never matches again: repair may have zeroed it
    for start in range(0, n, _CHUNK):
        block = np.asarray(matrix[start : start + _CHUNK])
        finite = np.isfinite(block).all(axis=1)
        not_finite += (start + np.flatnonzero(~finite)).tolist()
        with np.errstate(over="ignore", invalid="ignore"):
            off = np.abs(np.linalg.norm(block, axis=1) - 1.0) > NORM_TOLERANCE
        bad_norm += (start + np.flatnonzero(off & finite & live[start : start + len(block)])).tolist()
        release_pages(matrix, start, start + len(block))
    detail = f"{n} vectors of {dim}-d in {paths.VECTORS_FILE}"
    for what, ids in (
        ("NaN or infinite", not_finite),
        (f"live, with a norm off 1 by more than {NORM_TOLERANCE:g}", bad_norm),
    ):
        if ids:
            detail += f"; {len(ids)} {what} (ids {_few(ids)}): re-index those files"
    report.add(not (not_finite or bad_norm), "vectors", detail)

    bad = vector_checks.bad_segments(matrix, store.digest_segments(n))
    report.add(
        not bad,
        "vectors",
        "every segment of the digest chain matches its rows"
        if not bad
        else f"rows {_ranges(bad)} do not match their recorded digests (changed outside localq, or disk "
        "damage): `localq repair` embeds them again from their image files",
    )


def _ranges(segments: list[tuple[int, int]]) -> str:
    text = ", ".join(f"{start}..{end - 1}" for start, end in segments[:5])
    return text + (f" and {len(segments) - 5} more ranges" if len(segments) > 5 else "")


def _ivf_state(coll: Checked) -> dict | None:
    return trailer_file.read_state(coll.root / upkeep.FILE_NAME)


def _check_ivf(coll: Checked, store: Store, report: Report) -> None:
    path, n = coll.root / upkeep.FILE_NAME, store.n_rows()
    wanted = upkeep.wanted(coll.search_index(), n)
    if not path.exists():
        if wanted:
            report.add(
                True,
                "ivf",
                f"no {path.name}: searches are exact (right, slower) until "
                "`localq repair` or the next `localq index` builds it",
            )
        return
    state = trailer_file.read_state(path)
    problem = upkeep.disagreement(store, state, coll.dim, n)
    if problem:
        report.add(not wanted, "ivf", f"{problem}: never searched; `localq repair` rebuilds it")
    elif not wanted:
        report.add(
            True,
            "ivf",
            f"{path.name} is not used under the setting {coll.search_index()!r}: `localq repair` deletes it",
        )
    else:
        rows = state["rows"]
        report.add(
            True,
            "ivf",
            f"{path.name} indexes {rows} rows"
            + (f"; the {n - rows} newer ones are added to it on open" if rows < n else ""),
        )


def _recomputed_chain(store: Store, matrix: np.ndarray, first: int) -> list[tuple[int, str]]:
    """The chain's entries past row ``first`` (a segment's start), recomputed over
    ``matrix`` with the batch boundaries SQLite recorded: the rows before it are not read
    again."""
    segments = [seg for seg in store.digest_segments(len(matrix)) if seg[0] >= first]
    ends = [end for _, _, end, _ in segments]
    if len(matrix) > first and (not ends or ends[-1] != len(matrix)):
        ends.append(len(matrix))
    chain, start = [], first
    digest = segments[0][1]  # ``first`` starts a segment of the chain (bad_segments found it)
    for end in ends:
        digest = chain_digest(digest, [to_blob(matrix[start:end])])
        release_pages(matrix, start, end)
        chain.append((end, digest))
        start = end
    return chain


def _check_classifiers(coll: Checked, store: Store, report: Report) -> None:
    c, dim = store.conn, coll.dim
    classifiers = c.execute("SELECT id, name, round FROM classifiers ORDER BY name").fetchall()
    problems = []
    for cid, name, counter in classifiers:
        rounds = [r[0] for r in c.execute("SELECT round FROM rounds WHERE classifier_id = ? ORDER BY round", (cid,))]
        if rounds != list(range(len(rounds))) or not rounds:
            problems.append(f"{name!r}: rounds {_few(rounds)} are not 0..n")
        elif counter != rounds[-1]:
            problems.append(f"{name!r}: round counter {counter}, latest stored round {rounds[-1]}")
        for rnd, blob, bias in c.execute("SELECT round, weights, bias FROM rounds WHERE classifier_id = ?", (cid,)):
            w = from_blob(blob)
            if (
                (dim is not None and w.shape != (dim,))
                or not np.isfinite(w).all()
                or bias is None
                or not np.isfinite(bias)
            ):
                problems.append(f"{name!r}: round {rnd} has weights of {w.shape} or a non-finite value")
        late = c.execute(
            "SELECT count(*) FROM labels WHERE classifier_id = ? AND round NOT IN "
            "(SELECT round FROM rounds WHERE classifier_id = ?)",
            (cid, cid),
        ).fetchone()[0]
        if late:
            problems.append(f"{name!r}: {late} labels of a round that does not exist")
    checks = (
        (
            "labels of images that do not exist",
            "SELECT count(*) FROM labels WHERE image_id NOT IN (SELECT id FROM images)",
        ),
        (
            "labels of classifiers that do not exist",
            "SELECT count(*) FROM labels WHERE classifier_id NOT IN (SELECT id FROM classifiers)",
        ),
        ("labels outside [-1, 1]", "SELECT count(*) FROM labels WHERE NOT (score BETWEEN -1 AND 1)"),
        (
            "seen flags of images or classifiers that do not exist",
            "SELECT count(*) FROM seen WHERE image_id NOT IN (SELECT id FROM images)"
            " OR classifier_id NOT IN (SELECT id FROM classifiers)",
        ),
    )
    for what, sql in checks:
        count = c.execute(sql).fetchone()[0]
        if count:
            problems.append(f"{count} {what}")
    n_labels = c.execute("SELECT count(*) FROM labels").fetchone()[0]
    detail = f"{len(classifiers)} classifiers, {n_labels} labels"
    report.add(not problems, "classifiers", detail + ("; " + "; ".join(problems) if problems else ""))


def _leftover_temp_files(coll: Checked) -> list[Path]:
    return sorted(coll.root.glob(paths.VECTORS_FILE + ".tmp")) + sorted(coll.root.glob(upkeep.FILE_NAME + ".*.tmp"))


def _check_leftovers(coll: Checked, report: Report) -> None:
    leftovers = _leftover_temp_files(coll)
    if leftovers:
        # Not an error: a running writer may own one; repair (under the lock) removes them.
        report.add(
            True,
            "files",
            f"{len(leftovers)} temporary index files ({leftovers[0].name}...): "
            "`localq repair` removes those left by killed runs",
        )


def _few(ids: list) -> str:
    return ", ".join(str(i) for i in ids[:5]) + (", ..." if len(ids) > 5 else "")
