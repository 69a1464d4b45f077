"""vectors.npy as the collection's vector storage: the one-time move out of SQLite, on a
collection made by localq 0.1.0 (tests/fixtures/collection-0.1.0, made by the script
beside it), and the write order that keeps SQLite and the file in step."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from conftest import ColorEncoder, synthetic_collection
from localq.collection.collection import Collection
from localq.errors import VectorsDamaged
from localq.loop.trainer import Trainer
from localq.storage.rows import NewImage

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


@pytest.fixture
def old_collection(tmp_path) -> Path:
    root = tmp_path / "coll"
    shutil.copytree(FIXTURES / "collection-0.1.0", root)
    return root


def _sqlite(root: Path, sql: str):
    conn = sqlite3.connect(root / "localq.db")
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def _kept(root: Path):
    return (
        _sqlite(root, "SELECT * FROM images ORDER BY id"),
        _sqlite(root, "SELECT * FROM labels ORDER BY 1, 2, 3"),
        _sqlite(root, "SELECT classifier_id, round, weights, bias FROM rounds ORDER BY 1, 2"),
        _sqlite(root, "SELECT * FROM vector_digests ORDER BY end_row"),
    )


def test_a_collection_made_by_0_1_0_moves_its_vectors_once_with_nothing_lost(old_collection):
    expected = np.load(FIXTURES / "vectors-0.1.0.npy")
    before = _kept(old_collection)
    assert _sqlite(old_collection, "SELECT count(*) FROM vectors") == [(len(expected),)]
    with Collection.open(old_collection) as coll:
        np.testing.assert_array_equal(coll.index.matrix(), expected)
        assert coll.check().ok, [f for f in coll.check().findings if not f.ok]
        trainer = Trainer.open(coll, "reds")
        assert trainer.round == 2 and len(trainer.labels()) == 8
        assert coll.search(ColorEncoder().encode_texts(["red"])[0], k=3)
    assert _kept(old_collection) == before  # images, labels, rounds and the digest chain as they were
    assert not _sqlite(old_collection, "SELECT 1 FROM sqlite_master WHERE name = 'vectors'")
    assert not (old_collection / "vectors.faiss").exists()
    np.testing.assert_array_equal(np.load(old_collection / "vectors.npy"), expected)
    moved = (old_collection / "vectors.npy").stat().st_mtime_ns
    with Collection.open(old_collection) as coll:  # once: a second open reads, never rewrites
        coll.bind_encoder(ColorEncoder())
        coll.add_images([NewImage("/new.png", "hnew", 1, 0.0, 1, 1)], ColorEncoder().encode_texts(["blue"]))
        assert coll.rows() == len(expected) + 1 and coll.check().ok
    assert (old_collection / "vectors.npy").stat().st_mtime_ns >= moved
    np.testing.assert_array_equal(np.load(old_collection / "vectors.npy")[: len(expected)], expected)


def test_a_move_killed_before_its_commit_is_done_again(old_collection):
    # The file is renamed into place before the BLOBs are dropped in the same transaction:
    # a kill in between leaves both, and the next open moves them again.
    (old_collection / "vectors.npy").write_bytes(b"a file from the killed move")
    with Collection.open(old_collection) as coll:
        np.testing.assert_array_equal(coll.index.matrix(), np.load(FIXTURES / "vectors-0.1.0.npy"))


def test_a_collection_from_before_the_digest_chain_migrates_through_every_step(old_collection):
    # Older still: no digest chain (m003) nor classifier versions (m004) nor shards (m005).
    conn = sqlite3.connect(old_collection / "localq.db")
    conn.executescript("""
        DROP TABLE vector_digests;
        DROP TABLE ingested_shards;
        DELETE FROM _migrations WHERE name IN ('m003_vector_digests', 'm004_classifier_versions', 'm005_ingested_shards');
        CREATE TABLE c2 (id INTEGER PRIMARY KEY, name TEXT NOT NULL, created_at TEXT, source TEXT,
                         prompt TEXT, prior BLOB, round INTEGER NOT NULL DEFAULT 0, settings TEXT);
        INSERT INTO c2 SELECT id, name, created_at, source, prompt, prior, round, settings FROM classifiers;
        DROP TABLE classifiers;
        ALTER TABLE c2 RENAME TO classifiers;
        CREATE UNIQUE INDEX classifiers_name ON classifiers(name);
    """)
    conn.close()
    with Collection.open(old_collection) as coll:
        np.testing.assert_array_equal(coll.index.matrix(), np.load(FIXTURES / "vectors-0.1.0.npy"))
        report = coll.check()
        assert report.ok, [f for f in report.findings if not f.ok]
        assert Trainer.open(coll, "reds").round == 2


def test_sqlite_never_counts_a_row_the_file_lacks(tmp_path, monkeypatch):
    # The vectors are written and fsynced before SQLite commits: a commit that fails
    # leaves rows past SQLite's count, which the next write goes over.
    coll, _ = synthetic_collection(tmp_path / "c", clusters=2, per_cluster=10, dim=8)
    x = np.eye(8, dtype=np.float32)[:3]
    rows = [NewImage(f"/n/{i}.png", f"n{i}", 1, 0.0, 1, 1) for i in range(3)]

    def refuse(*args, **kwargs):
        raise sqlite3.OperationalError("disk I/O error")

    with monkeypatch.context() as m:
        m.setattr(coll.store, "add_images", refuse)
        with pytest.raises(sqlite3.OperationalError):
            coll.add_images(rows, x)
    assert coll.rows() == 20 and coll.store.n_rows() == 20
    assert coll.check().ok
    ids = coll.add_images(rows[:2], x[1:])
    assert ids == [20, 21]
    np.testing.assert_array_equal(np.load(tmp_path / "c" / "vectors.npy")[20:], x[1:])
    assert coll.check().ok


def test_a_missing_vectors_file_is_named_not_rebuilt(tmp_path):
    coll, _ = synthetic_collection(tmp_path / "c", clusters=2, per_cluster=10, dim=8)
    coll.close()
    (tmp_path / "c" / "vectors.npy").unlink()
    with Collection.open(tmp_path / "c") as again, pytest.raises(VectorsDamaged, match="missing"):
        again.index


def test_repair_embeds_damaged_rows_again_and_zeroes_a_tombstone_whose_file_is_gone(tmp_path, colour_folder):
    from localq.ingest.indexer import index_paths
    from localq.storage.vector_file import header

    with Collection.open(tmp_path / "c", create=True) as coll:
        index_paths(coll, [colour_folder], ColorEncoder(), batch_size=4)
        gone = coll.image_rows([5])[0].path
        Path(gone).unlink()
        index_paths(coll, [colour_folder], ColorEncoder())  # row 5 becomes a tombstone
        assert coll.image_rows([5])[0].deleted
    path = tmp_path / "c" / "vectors.npy"
    good = np.load(path)
    damaged = good.copy()
    damaged[5:7] += 0.25  # row 5 (tombstone, file gone) and row 6 (live, file there)
    path.write_bytes(header(*damaged.shape) + damaged.tobytes())
    with Collection.open(tmp_path / "c") as coll:
        coll.bind_encoder(ColorEncoder())
        assert not coll.check().ok
        report = coll.repair()
        assert report.ok and any("again from their image files" in line for line in report.repaired)
    repaired = np.load(path)
    np.testing.assert_allclose(repaired[6], good[6], atol=1e-6)
    assert not repaired[5].any()
    np.testing.assert_array_equal(np.delete(repaired, [5, 6], axis=0), np.delete(good, [5, 6], axis=0))


_APPENDER = """
import sys
import numpy as np
from localq.storage.vector_file import VectorFile
path, dim, times = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
file = VectorFile.open(path, dim)
for i in range(times):
    file.write(i, np.full((1, dim), i, dtype=np.float32))
"""


def test_a_reader_never_sees_a_half_made_or_half_rewritten_header(tmp_path):
    """Readers take no lock while a writer creates the file and rewrites its header in place
    (this failed once in CI: a UI opened the collection while the indexer made the file)."""
    import subprocess
    import sys

    from localq.storage.vector_file import VectorFile

    path, dim = tmp_path / "vectors.npy", 4
    writer = subprocess.Popen([sys.executable, "-c", _APPENDER, str(path), str(dim), "400"])
    opened, last = 0, 0
    try:
        while writer.poll() is None:
            if path.exists():
                file = VectorFile.open(path, dim)  # raised VectorsDamaged on a torn or empty header
                rows = file.rows_on_disk
                assert rows >= last
                assert (file.rows(rows)[:, 0] == np.arange(rows)).all()
                opened, last = opened + 1, rows
    finally:
        writer.wait()
    assert writer.returncode == 0 and opened > 0
    assert VectorFile.open(path, dim).rows_on_disk == 400


def test_every_write_to_a_new_file_finds_a_whole_header_at_its_path(tmp_path, monkeypatch):
    """The race the test above hunts, made certain: at each write a writer makes, a reader
    opening the path at that instant reads a whole header (the file is made elsewhere and
    renamed into place, not created empty and then given its header)."""
    import localq.storage.vector_file as vector_file

    path, dim, seen = tmp_path / "vectors.npy", 4, []
    real_pwrite = vector_file.os.pwrite

    def pwrite(fd, data, offset):
        seen.append(vector_file.VectorFile.open(path, dim).rows_on_disk)
        return real_pwrite(fd, data, offset)

    monkeypatch.setattr(vector_file.os, "pwrite", pwrite)
    file = vector_file.VectorFile.open(path, dim)
    file.write(0, np.ones((3, dim), dtype=np.float32))
    file.write(3, np.ones((2, dim), dtype=np.float32))
    assert seen and seen[0] == 0 and seen[-1] == 3


def test_a_collection_made_before_the_package_layout_opens_searches_and_trains(tmp_path):
    root = tmp_path / "coll"
    shutil.copytree(FIXTURES / "collection-before-packages", root)
    with Collection.open(root) as coll:
        assert coll.rows() == 18 and coll.search_index() == "exact"
        trainer = Trainer.open(coll, "reds")
        assert len(trainer.labels()) == 8
        batch = trainer.next_batch(4)
        assert len(batch) == 4 and not {h.id for h in batch} & set(trainer.labels())
        trainer.submit({h.id: -1.0 for h in batch})
        assert len(trainer.labels()) == 12 and np.isfinite(trainer.weights).all()
        assert coll.check().ok
