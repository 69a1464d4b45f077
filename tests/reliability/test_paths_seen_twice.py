"""One real file reached twice in one `localq index` run: through a symlink beside it, a
root named twice, a root named through '..', or a root inside another. Each is one image,
counted once as a duplicate path, never a failure; and a refused write is never called
a damaged database.

Every run is the real CLI in a subprocess, on real files and a real collection."""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path

import pytest

from reliability.helpers import run_cli, write_folder

pytestmark = [pytest.mark.reliability("path seen twice"), pytest.mark.slow]  # whole CLI processes


def _photos(tmp_path: Path) -> Path:
    folder = write_folder(tmp_path / "p", 2, seed=1)  # img000.png, img001.png
    write_folder(folder / "sub", 1, seed=2, prefix="deep")  # sub/deep000.png
    return folder


def _layouts(folder: Path):
    return {
        "symlink beside its target": ([folder], lambda: (folder / "link.png").symlink_to("img000.png")),
        "a root named twice": ([folder, folder], lambda: None),
        "a root through '..'": ([folder, folder / ".." / folder.name], lambda: None),
        "a root inside another": ([folder, folder / "sub"], lambda: None),
        "a nested root first": ([folder / "sub", folder], lambda: None),
    }


def _index_json(db: Path, *roots) -> dict:
    proc = run_cli("index", *roots, "--db", db, "--batch-size", "64", "--json")
    assert proc.returncode == 0, proc.stderr
    assert "damaged" not in proc.stderr and "Traceback" not in proc.stderr
    return json.loads(proc.stdout)


@pytest.mark.parametrize(
    "layout",
    [
        "symlink beside its target",
        "a root named twice",
        "a root through '..'",
        "a root inside another",
        "a nested root first",
    ],
)
def test_a_file_reached_twice_is_one_image(tmp_path, layout):
    folder = _photos(tmp_path)
    roots, make = _layouts(folder)[layout]
    make()
    db = tmp_path / "db"
    first = _index_json(db, *roots)
    assert (first["images"], first["added"]) == (3, 3)
    assert first["duplicates"] >= 1
    again = _index_json(db, *roots)  # every re-run works too, and changes nothing
    assert (again["images"], again["added"], again["unchanged"], again["removed"]) == (3, 0, 3, 0)
    conn = sqlite3.connect(f"file:{db / 'localq.db'}?mode=ro", uri=True)
    try:
        paths = [p for (p,) in conn.execute("SELECT path FROM images WHERE deleted = 0")]
    finally:
        conn.close()
    assert len(paths) == len(set(paths)) == 3
    check = run_cli("check", "--db", db)
    assert check.returncode == 0, check.stdout + check.stderr


def test_the_issue_reproduction_says_one_duplicate_path_skipped(tmp_path):
    # cp A.jpg p/a.jpg; cp B.jpg p/c.jpg; ln -s a.jpg p/b.jpg; localq index p --db db
    from PIL import Image

    folder = tmp_path / "p"
    folder.mkdir()
    Image.new("RGB", (16, 16), (200, 10, 10)).save(folder / "a.jpg")
    Image.new("RGB", (16, 16), (10, 10, 200)).save(folder / "c.jpg")
    (folder / "b.jpg").symlink_to("a.jpg")
    db = tmp_path / "db"
    for _ in range(2):
        proc = run_cli("index", folder, "--db", db, "-q")
        assert proc.returncode == 0, proc.stderr
        assert "1 duplicate path skipped" in proc.stdout, proc.stdout
        assert "2 images in" in proc.stdout, proc.stdout
        assert "damaged" not in proc.stderr and "Traceback" not in proc.stderr


def test_a_symlink_to_a_folder_beside_it_adds_nothing_twice(tmp_path):
    folder = _photos(tmp_path)
    (folder / "again").symlink_to(folder / "sub", target_is_directory=True)
    db = tmp_path / "db"
    first = _index_json(db, folder, folder / "again")  # the linked folder named as a root too
    assert first["images"] == 3


def test_a_refused_write_is_not_called_damage():
    # A constraint SQLite refuses is a refused write: the data is whole, `localq check`
    # says so, and telling the user to throw the database away would be wrong.
    from localq.errors import DatabaseDamaged
    from localq.storage.store import sqlite_failure

    conn = sqlite3.connect(":memory:")
    conn.execute("CREATE TABLE t (x UNIQUE)")
    conn.execute("INSERT INTO t VALUES (1)")
    try:
        conn.execute("INSERT INTO t VALUES (1)")
    except sqlite3.IntegrityError as exc:
        error = sqlite_failure(Path("/c/localq.db"), exc)
    assert not isinstance(error, DatabaseDamaged)
    text = str(error)
    assert "damaged" not in text and "UNIQUE constraint failed" in text and "localq check" in text
    assert os.linesep not in text


def test_bad_files_reached_twice_are_reported_once_under_their_real_path(tmp_path):
    folder = _photos(tmp_path)
    (folder / "bad.jpg").write_bytes(b"no jpeg here")
    (folder / "logo.svg").write_text('<svg xmlns="http://www.w3.org/2000/svg"/>')
    db = tmp_path / "db"
    report = _index_json(db, folder, folder / ".." / folder.name)
    assert sorted((s["path"], s["reason"]) for s in report["skipped"]) == [
        (str(folder / "bad.jpg"), "not an image"),
        (str(folder / "logo.svg"), "unsupported format: SVG vector drawing"),
    ]
    assert (report["images"], report["duplicates"]) == (3, 5)
    again = _index_json(db, folder / ".." / folder.name)
    assert (again["skipped"], again["skipped_known"], again["unchanged"]) == ([], 2, 3)
