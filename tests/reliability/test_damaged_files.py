"""Fault injection: damaged localq.db and vectors.faiss, unusable --db locations.

Each trial damages one file of a real collection (indexed by the real CLI in a
subprocess, with a classifier, labels and rounds), then runs commands. Either the damage
is repaired from SQLite with search still right, or the command fails with one line and
exit 1. Labels, rounds and vectors are compared before and after."""

from __future__ import annotations

import os
import shutil
import struct

import faiss
import numpy as np
import pytest

from localq.collection import Collection
from localq.trainer import Trainer
from reliability.helpers import (
    assert_one_line_error, faiss_matches_sqlite, run_cli, snapshot, write_folder,
)

damaged = pytest.mark.reliability("damaged files")
permissions = pytest.mark.reliability("permissions")

# Every command that opens a collection (train opens the UI and is covered by the others).
READ_COMMANDS = [
    ("stats",), ("search", "red"), ("classifiers",), ("skipped",), ("predict", "c"),
    ("history", "c"), ("export", "c", "--out", "{tmp}/out"), ("check",),
]
WRITE_COMMANDS = [("index", "{pics}", "-q"), ("undo", "c"), ("reset",), ("repair",)]


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    """Built once: 30 images indexed by the CLI, a classifier "c" with 2 rounds of labels."""
    from conftest import ColorEncoder

    base = tmp_path_factory.mktemp("template")
    pics = write_folder(base / "pics", 30, seed=0)
    db = base / "coll"
    assert run_cli("index", pics, "--db", db, "-q").returncode == 0
    with Collection.open(db) as coll:
        coll.bind_encoder(ColorEncoder())
        t = Trainer.create(coll, "c", prompt="red")
        for score in (1.0, -1.0):
            t.submit({h.id: score for h in t.next_batch(4)})
    return db


@pytest.fixture
def collection(template, tmp_path):
    """A fresh copy of the template collection (its images stay where the template's are)."""
    db = tmp_path / "coll"
    shutil.copytree(template, db)
    return db


def _args(cmd, tmp_path, db):
    return [a.format(tmp=tmp_path, pics=tmp_path / "pics") for a in cmd] + ["--db", str(db)]


def _healthy(db, before):
    before.assert_kept_in(snapshot(db))
    proc = run_cli("check", "--db", db)
    assert proc.returncode == 0, proc.stdout + proc.stderr


# -- localq.db ---------------------------------------------------------------------------------

def _truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _garbage(path):
    path.write_bytes(np.random.default_rng(0).integers(0, 256, path.stat().st_size, dtype=np.uint8).tobytes())


def _zero_header(path):
    with open(path, "r+b") as f:
        f.write(b"\0" * 100)


@damaged
@pytest.mark.parametrize("damage", [_truncate, _garbage, _zero_header], ids=["truncated", "garbage", "no-header"])
def test_a_damaged_database_is_one_line_for_every_command(collection, tmp_path, damage):
    db_file = collection / "localq.db"
    damage(db_file)
    damaged_bytes = db_file.read_bytes()
    for cmd in READ_COMMANDS + WRITE_COMMANDS:
        proc = run_cli(*_args(cmd, tmp_path, collection))
        assert_one_line_error(proc, str(db_file))
        assert db_file.read_bytes() == damaged_bytes, f"{cmd[0]} changed the damaged database"


@damaged
def test_an_empty_database_beside_data_is_never_recreated(collection, tmp_path):
    db_file = collection / "localq.db"
    db_file.write_bytes(b"")
    for cmd in READ_COMMANDS + WRITE_COMMANDS:
        proc = run_cli(*_args(cmd, tmp_path, collection))
        assert_one_line_error(proc, "empty", "backup")
        assert db_file.stat().st_size == 0


@damaged
def test_a_missing_database_beside_data_is_not_replaced(collection, tmp_path):
    (collection / "localq.db").unlink()
    proc = run_cli("index", tmp_path / "pics", "--db", collection, "-q")
    assert_one_line_error(proc, "missing", "backup")
    assert not (collection / "localq.db").exists()


@damaged
def test_an_empty_database_alone_is_a_new_collection(tmp_path):
    pics = write_folder(tmp_path / "pics", 5, seed=1)
    db = tmp_path / "coll"
    db.mkdir()
    (db / "localq.db").write_bytes(b"")
    proc = run_cli("index", pics, "--db", db, "-q")
    assert proc.returncode == 0, proc.stderr
    faiss_matches_sqlite(db)


# -- vectors.faiss -------------------------------------------------------------------------------

def _same_size_other_content(path, _):
    path.write_bytes(np.random.default_rng(1).integers(0, 256, path.stat().st_size, dtype=np.uint8).tobytes())


def _flip_a_vector_byte(path, _):
    data = bytearray(path.read_bytes())
    data[200] ^= 0x40  # inside the vectors; the trailer still claims the old state
    path.write_bytes(bytes(data))


def _truncated(path, _):
    path.write_bytes(path.read_bytes()[:-300])


def _other_dim(path, _):
    index = faiss.IndexFlatIP(64)
    index.add(np.eye(64, dtype=np.float32)[:30])
    faiss.write_index(index, str(path))


def _swapped_rows_legacy(path, _):
    """The issue's corruption as an older localq left it: rows out of order, no trailer."""
    index = faiss.read_index(str(path))
    m = faiss.rev_swig_ptr(index.get_xb(), index.ntotal * index.d).reshape(index.ntotal, index.d).copy()
    fresh = faiss.IndexFlatIP(index.d)
    fresh.add(np.roll(m, 7, axis=0))
    faiss.write_index(fresh, str(path))


def _swapped_rows_same_trailer(path, _):
    """Rows permuted, the trailer copied from the good file: the CRC catches it."""
    data = path.read_bytes()
    (length,) = struct.unpack("<Q", data[-16:-8])
    trailer = data[-16 - length:]
    _swapped_rows_legacy(path, _)
    path.write_bytes(path.read_bytes() + trailer)


def _from_another_collection(path, tmp_path):
    other = tmp_path / "other"
    assert run_cli("index", write_folder(tmp_path / "otherpics", 30, seed=9), "--db", other, "-q").returncode == 0
    shutil.copyfile(other / "vectors.faiss", path)


def _an_earlier_save(path, tmp_path):
    """A file saved before the last batches: a valid prefix, caught up from SQLite."""
    shutil.copyfile(path, tmp_path / "saved.faiss")
    assert run_cli("index", write_folder(tmp_path / "pics" / "more", 6, seed=5), "--db", path.parent, "-q").returncode == 0
    shutil.copyfile(tmp_path / "saved.faiss", path)


FAISS_DAMAGE = [_same_size_other_content, _flip_a_vector_byte, _truncated, _other_dim, _swapped_rows_legacy,
                _swapped_rows_same_trailer, _from_another_collection, _an_earlier_save]


@damaged
@pytest.mark.parametrize("damage", FAISS_DAMAGE, ids=lambda f: f.__name__.strip("_"))
def test_a_faiss_file_that_does_not_mirror_sqlite_is_rebuilt_not_used(collection, tmp_path, damage):
    faiss_file = collection / "vectors.faiss"
    damage(faiss_file, tmp_path)
    before = snapshot(collection)
    # A reader answers from SQLite's vectors: each image's own vector finds that image first.
    with Collection.open(collection) as coll:
        for image_id in range(0, coll.store.n_rows(), 5):
            hit = coll.search(coll.store.vectors([image_id])[0], k=1)[0]
            assert hit.id == image_id
    proc = run_cli("search", "red", "--db", collection, "-k", "3")
    assert proc.returncode == 0 and len(proc.stdout.splitlines()) == 3, proc.stderr
    faiss_matches_sqlite(collection)  # no writer was running: the reader saved the rebuilt file
    _healthy(collection, before)


@damaged
@pytest.mark.parametrize("damage", FAISS_DAMAGE, ids=lambda f: f.__name__.strip("_"))
def test_check_reports_and_repair_fixes_a_faiss_file(collection, tmp_path, damage):
    faiss_file = collection / "vectors.faiss"
    damage(faiss_file, tmp_path)
    before = snapshot(collection)
    proc = run_cli("check", "--db", collection)
    if damage is _an_earlier_save:
        assert proc.returncode == 0 and "caught up" in proc.stdout, proc.stdout
    else:
        assert proc.returncode == 1 and "PROBLEM" in proc.stdout and "faiss" in proc.stdout, proc.stdout
    proc = run_cli("repair", "--db", collection)
    assert proc.returncode == 0 and "rebuilt vectors.faiss" in proc.stdout, proc.stdout + proc.stderr
    faiss_matches_sqlite(collection)
    _healthy(collection, before)


@damaged
def test_a_directory_in_place_of_the_faiss_file(collection, tmp_path):
    faiss_file = collection / "vectors.faiss"
    faiss_file.unlink()
    faiss_file.mkdir()
    before = snapshot(collection)
    proc = run_cli("search", "red", "--db", collection, "-k", "2")  # rebuilt in memory
    assert proc.returncode == 0 and len(proc.stdout.splitlines()) == 2, proc.stderr
    more = write_folder(tmp_path / "pics" / "more", 3, seed=4)
    proc = run_cli("index", more, "--db", collection, "-q")  # cannot save over a directory
    assert_one_line_error(proc, "not a regular file")
    assert faiss_file.is_dir()
    faiss_file.rmdir()
    assert run_cli("index", more, "--db", collection, "-q").returncode == 0
    faiss_matches_sqlite(collection)
    after = snapshot(collection)
    assert after.labels == before.labels and after.rounds == before.rounds
    assert set(before.vectors) <= set(after.vectors)


@damaged
def test_a_temp_file_left_by_a_killed_run_is_harmless_and_repair_removes_it(collection):
    (collection / "vectors.faiss.tmp").write_bytes(b"half a file")
    (collection / "vectors.faiss.12345.tmp").write_bytes(b"half a file")
    before = snapshot(collection)
    assert run_cli("search", "red", "--db", collection).returncode == 0
    proc = run_cli("repair", "--db", collection)
    assert proc.returncode == 0 and proc.stdout.count("removed vectors.faiss") == 2, proc.stdout
    assert not list(collection.glob("*.tmp"))
    _healthy(collection, before)


@damaged
def test_an_old_collection_is_migrated_and_its_faiss_file_checked(collection):
    """A collection written before the digest chain: migration records it, the file is rebuilt once."""
    import sqlite3

    before = snapshot(collection)
    conn = sqlite3.connect(collection / "localq.db")
    conn.execute("DROP TABLE vector_digests")
    conn.execute("DELETE FROM _migrations WHERE name IN ('m003_vector_digests', 'm004_classifier_versions')")
    conn.execute("CREATE TABLE c2 (id INTEGER PRIMARY KEY, name TEXT NOT NULL, created_at TEXT, source TEXT,"
                 " prompt TEXT, prior BLOB, round INTEGER NOT NULL DEFAULT 0, settings TEXT)")
    conn.execute("INSERT INTO c2 SELECT id, name, created_at, source, prompt, prior, round, settings FROM classifiers")
    conn.execute("DROP TABLE classifiers")
    conn.execute("ALTER TABLE c2 RENAME TO classifiers")
    conn.execute("CREATE UNIQUE INDEX classifiers_name ON classifiers(name)")
    conn.commit()
    conn.close()
    _swapped_rows_legacy(collection / "vectors.faiss", None)
    proc = run_cli("search", "red", "--db", collection)
    assert proc.returncode == 0, proc.stderr
    faiss_matches_sqlite(collection)
    _healthy(collection, before)


# -- where --db points -------------------------------------------------------------------------------

@damaged
@pytest.mark.parametrize("cmd", [("index", "{pics}", "-q"), ("stats",), ("search", "red")], ids=lambda c: c[0])
def test_db_pointing_at_a_file_is_one_line(tmp_path, cmd):
    write_folder(tmp_path / "pics", 2, seed=0)
    target = tmp_path / "a-file"
    target.write_text("not a collection")
    proc = run_cli(*_args(cmd, tmp_path, target))
    assert_one_line_error(proc, "is a file")
    assert target.read_text() == "not a collection"


@pytest.fixture
def public_dir(tmp_path):
    """A directory the unprivileged user can reach (pytest's tmp dirs are 0700 root)."""
    import tempfile

    path = tempfile.mkdtemp(prefix="localq-perm-", dir="/tmp")
    os.chmod(path, 0o755)
    yield __import__("pathlib").Path(path)
    shutil.rmtree(path, ignore_errors=True)


def _chmod_tree(root, dir_mode, file_mode):
    for dirpath, dirnames, filenames in os.walk(root):
        os.chmod(dirpath, dir_mode)
        for name in filenames:
            os.chmod(os.path.join(dirpath, name), file_mode)


@permissions
def test_a_read_only_collection_reads_or_fails_in_one_line_and_never_writes(public_dir, colour_encoder):
    pics = write_folder(public_dir / "pics", 12, seed=2)
    db = public_dir / "coll"
    assert run_cli("index", pics, "--db", db, "-q").returncode == 0
    with Collection.open(db) as coll:
        coll.bind_encoder(colour_encoder)
        t = Trainer.create(coll, "c", prompt="red")
        t.submit({h.id: 1.0 for h in t.next_batch(3)})
    _chmod_tree(public_dir / "pics", 0o755, 0o644)
    _chmod_tree(db, 0o555, 0o444)
    before = snapshot(db)
    listing = sorted(os.listdir(db))
    for cmd in (("search", "red"), ("stats",), ("classifiers",), ("check",)):
        proc = run_cli(*cmd, "--db", db, as_nobody=True)
        if proc.returncode != 0:
            assert_one_line_error(proc, str(db))
    for cmd in (("index", pics, "-q"), ("reset",), ("undo", "c"), ("repair",)):
        proc = run_cli(*cmd, "--db", db, as_nobody=True)
        assert_one_line_error(proc, str(db))
    assert sorted(os.listdir(db)) == listing
    before.assert_kept_in(snapshot(db))


@permissions
def test_a_read_only_parent_is_one_line(public_dir):
    pics = write_folder(public_dir / "pics", 3, seed=3)
    _chmod_tree(public_dir / "pics", 0o755, 0o644)
    parent = public_dir / "locked"
    parent.mkdir()
    os.chmod(parent, 0o555)
    proc = run_cli("index", pics, "--db", parent / "new" / "coll", "-q", as_nobody=True)
    assert_one_line_error(proc, "cannot create collection directory", "Permission denied")
    assert os.listdir(parent) == []


@permissions
def test_a_read_only_database_file_in_a_writable_directory_is_one_line(public_dir):
    pics = write_folder(public_dir / "pics", 3, seed=4)
    _chmod_tree(public_dir / "pics", 0o755, 0o644)
    db = public_dir / "coll"
    assert run_cli("index", pics, "--db", db, "-q").returncode == 0
    _chmod_tree(db, 0o777, 0o444)
    before = snapshot(db)
    proc = run_cli("reset", "--db", db, as_nobody=True)
    assert_one_line_error(proc, str(db))
    before.assert_kept_in(snapshot(db))
