"""Fault injection: damaged localq.db and vectors.npy, unusable --db locations.

Each trial damages one file of a real collection (indexed by the real CLI in a
subprocess, with a classifier, labels and rounds), then runs commands. Either the damage
is repaired with search still right, or the command fails with one line and exit 1.
Labels, rounds and vectors are compared before and after."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from localq.collection.collection import Collection
from localq.loop.trainer import Trainer
from localq.storage.vector_file import header
from reliability.helpers import (
    assert_one_line_error,
    run_cli,
    snapshot,
    vectors_match_images,
    write_folder,
)

pytestmark = pytest.mark.slow  # runs every command in a subprocess per damaged file

damaged = pytest.mark.reliability("damaged files")
permissions = pytest.mark.reliability("permissions")

# Every command that opens a collection (train opens the UI and is covered by the others).
READ_COMMANDS = [
    ("stats",),
    ("search", "red"),
    ("classifiers",),
    ("skipped",),
    ("predict", "c"),
    ("history", "c"),
    ("export", "c", "--out", "{tmp}/out"),
    ("check",),
]
WRITE_COMMANDS = [("index", "{pics}", "-q"), ("undo", "c"), ("reset",), ("repair",)]


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    """Built once: 30 images indexed by the CLI, a classifier "c" with 2 rounds of labels."""
    from conftest import ColorEncoder

    base = tmp_path_factory.mktemp("template")
    pics = write_folder(base / "pics", 30, seed=0)
    db = base / "coll"
    assert run_cli("index", pics, "--db", db, "-q", "--batch-size", "8").returncode == 0  # a chain of 4 segments
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
    (tmp_path / "pics").mkdir(exist_ok=True)  # `index` refuses a missing folder before it opens the database
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
    proc = run_cli(*_args(("index", "{pics}", "-q"), tmp_path, collection))
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
    vectors_match_images(db)


# -- vectors.npy: the vectors' only copy -------------------------------------------------------


def _truncated(path, _):
    path.write_bytes(path.read_bytes()[:-300])


def _header_garbage(path, _):
    with open(path, "r+b") as f:
        f.write(b"\x93NUMPY garbage")


def _fewer_rows(path, _):
    rows = np.load(path)
    path.write_bytes(header(len(rows) - 3, rows.shape[1]) + rows[:-3].tobytes())


def _other_dim(path, _):
    path.write_bytes(header(30, 64) + np.eye(64, dtype=np.float32)[:30].tobytes())


def _last_rows_rolled(path, _):
    rows = np.load(path)
    rows[-4:] = np.roll(rows[-4:], 1, axis=0)
    path.write_bytes(header(*rows.shape) + rows.tobytes())


def _from_another_collection(path, tmp_path):
    other = tmp_path / "other"
    assert run_cli("index", write_folder(tmp_path / "otherpics", 30, seed=9), "--db", other, "-q").returncode == 0
    shutil.copyfile(other / "vectors.npy", path)


def _a_directory(path, _):
    path.unlink()
    path.mkdir()


def _missing(path, _):
    path.unlink()


UNUSABLE = [_truncated, _header_garbage, _fewer_rows, _other_dim, _a_directory, _missing]


@damaged
@pytest.mark.parametrize("damage", UNUSABLE, ids=lambda f: f.__name__.strip("_"))
def test_an_unusable_vectors_file_is_one_line_for_every_command_and_loses_nothing(collection, tmp_path, damage):
    # Nothing can rebuild the vectors (they are the only copy): every command that needs
    # them says so in one line, `stats` still answers, and SQLite is not touched.
    before = snapshot(collection)
    damage(collection / "vectors.npy", tmp_path)
    for cmd in (
        ("search", "red"),
        ("predict", "c"),
        ("export", "c", "--out", "{tmp}/out"),
        ("index", "{pics}", "-q"),
        ("repair",),
    ):
        proc = run_cli(*_args(cmd, tmp_path, collection))
        assert_one_line_error(proc, "vectors.npy")
    proc = run_cli("check", "--db", collection)
    assert proc.returncode == 1 and "PROBLEM" in proc.stdout and "vectors.npy" in proc.stdout, proc.stdout
    assert run_cli("stats", "--db", collection).returncode == 0
    before.assert_kept_in(snapshot(collection, vectors=False))


def _middle_row_changed(path, _):
    rows = np.load(path)
    rows[12, 0] += 0.5
    path.write_bytes(header(*rows.shape) + rows.tobytes())


@damaged
@pytest.mark.parametrize(
    "damage", [_middle_row_changed, _last_rows_rolled, _from_another_collection], ids=lambda f: f.__name__.strip("_")
)
def test_rows_that_no_longer_match_their_digests_are_embedded_again_by_repair(collection, tmp_path, damage):
    # Opening verifies the chain's first and last segments (cheap at any size), `check`
    # every segment; `repair` embeds the rows of the failing ones again from their files.
    before = snapshot(collection)
    damage(collection / "vectors.npy", tmp_path)
    search = run_cli("search", "red", "--db", collection, "-k", "3")
    if damage is _middle_row_changed:
        assert search.returncode == 0 and len(search.stdout.splitlines()) == 3, search.stderr
    else:
        assert_one_line_error(search, "do not match the digests")
    proc = run_cli("check", "--db", collection)
    assert proc.returncode == 1 and "do not match their recorded digests" in proc.stdout, proc.stdout
    proc = run_cli("repair", "--db", collection)
    assert proc.returncode == 0 and "again from their image files" in proc.stdout, proc.stdout + proc.stderr
    vectors_match_images(collection)
    _healthy(collection, before)


@damaged
def test_rows_whose_files_changed_are_not_repaired_and_nothing_is_written(collection, tmp_path):
    _middle_row_changed(collection / "vectors.npy", tmp_path)
    damaged_bytes = (collection / "vectors.npy").read_bytes()
    path = Path(image_paths(collection)[12])
    original = path.read_bytes()  # the template's file, shared with the other tests
    try:
        Image.new("RGB", (8, 8), (1, 2, 3)).save(path)  # row 12's file changed since indexing
        proc = run_cli("repair", "--db", collection)
    finally:
        path.write_bytes(original)
    assert_one_line_error(proc, "gone or changed since indexing", "restore vectors.npy from a backup")
    assert (collection / "vectors.npy").read_bytes() == damaged_bytes


def image_paths(db) -> list[str]:
    import sqlite3

    conn = sqlite3.connect(f"file:{db / 'localq.db'}?mode=ro", uri=True)
    try:
        return [p for (p,) in conn.execute("SELECT path FROM images ORDER BY id")]
    finally:
        conn.close()


@damaged
def test_a_temp_file_left_by_a_killed_run_is_harmless_and_repair_removes_it(collection):
    (collection / "vectors.npy.tmp").write_bytes(b"half a file")
    (collection / "vectors.ivf.12345.tmp").write_bytes(b"half a file")
    before = snapshot(collection)
    assert run_cli("search", "red", "--db", collection).returncode == 0
    proc = run_cli("repair", "--db", collection)
    assert proc.returncode == 0 and proc.stdout.count("removed vectors.") == 2, proc.stdout
    assert not list(collection.glob("*.tmp"))
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
    for dirpath, _dirnames, filenames in os.walk(root):
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
