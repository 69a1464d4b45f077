"""Hand-made shards for `localq ingest` are input from elsewhere: FIFOs and devices in
place of files, npy headers that lie about their shape, metadata that no file could
have (NaN times, NUL bytes and control characters in paths), relative paths.

Each trial writes shards in clip-retrieval's layout (real npy and parquet files) beside
a real collection, damages one thing and runs the real CLI in a subprocess with a time
limit: one line naming the file and exit 1, nothing of the shard ingested and nothing
of the collection changed; or, for relative paths, paths taken from the shard folder.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from reliability.helpers import assert_one_line_error, indexed_with_a_round, run_cli, snapshot, write_folder

pytestmark = [pytest.mark.reliability("hostile shards"), pytest.mark.slow]  # whole CLI processes

LIMIT = 120  # seconds: a read blocked on a FIFO fails the trial instead of hanging the suite


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    base = tmp_path_factory.mktemp("shards")
    indexed_with_a_round(base, 10, seed=4)
    more = write_folder(base / "shards" / "pics", 6, seed=9, prefix="s")
    return base, sorted(more.iterdir())


def write_shard(root: Path, key: str, files: list[Path], **columns) -> Path:
    """A clip-retrieval-style shard of ``files``: their colour vectors (float16) and
    metadata image_path, size, mtime; ``columns`` replace or add metadata columns."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from PIL import Image

    from conftest import ColorEncoder

    (root / "img_emb").mkdir(parents=True, exist_ok=True)
    (root / "metadata").mkdir(exist_ok=True)
    vectors = ColorEncoder().encode_images([Image.open(p) for p in files]).astype(np.float16)
    np.save(root / "img_emb" / f"img_emb_{key}.npy", vectors)
    meta = {
        "image_path": [str(p) for p in files],
        "size": [p.stat().st_size for p in files],
        "mtime": [p.stat().st_mtime for p in files],
        **columns,
    }
    pq.write_table(pa.table(meta), root / "metadata" / f"metadata_{key}.parquet")
    return root


@pytest.fixture
def case(template, tmp_path):
    base, _ = template
    db = tmp_path / "coll"
    shutil.copytree(base / "coll", db)
    root = tmp_path / "shards"
    shutil.copytree(base / "shards" / "pics", root / "pics")
    files = sorted((root / "pics").iterdir())
    write_shard(root, "0", files[:3])
    write_shard(root, "1", files[3:])
    return db, root, files, snapshot(db)


def ingest(root, db):
    return run_cli("ingest", root, "--db", db, "--encoder", "lite0", "-q", timeout=LIMIT)


def refused(case, *needles):
    db, root, _, before = case
    assert_one_line_error(ingest(root, db), *needles)
    before.assert_kept_in(snapshot(db))
    with sqlite3.connect(db / "localq.db") as conn:
        assert conn.execute("SELECT count(*) FROM ingested_shards").fetchone()[0] == 0


def test_the_untouched_shards_ingest(case):
    db, root, files, _ = case
    proc = ingest(root, db)
    assert proc.returncode == 0, proc.stderr
    assert "6 added" in proc.stdout


@pytest.mark.parametrize("which", ["img_emb/img_emb_0.npy", "metadata/metadata_0.parquet"])
def test_a_fifo_in_place_of_a_shard_file_is_refused_without_blocking(case, which):
    _, root, _, _ = case
    (root / which).unlink()
    os.mkfifo(root / which)
    refused(case, str(root / which), "FIFO")


def test_a_link_to_a_device_in_place_of_a_shard_file_is_refused(case):
    _, root, _, _ = case
    target = root / "img_emb" / "img_emb_0.npy"
    target.unlink()
    target.symlink_to("/dev/zero")
    refused(case, str(target), "device")


def test_a_directory_named_like_a_shard_is_refused(case):
    _, root, _, _ = case
    (root / "img_emb" / "img_emb_0.npy").unlink()
    (root / "img_emb" / "img_emb_0.npy").mkdir()
    refused(case, str(root / "img_emb" / "img_emb_0.npy"), "directory")


def test_a_fifo_manifest_is_refused_without_blocking(case):
    _, root, _, _ = case
    os.mkfifo(root / "manifest.json")
    refused(case, str(root / "manifest.json"), "FIFO")


@pytest.mark.parametrize("rows", [10**12, 4, 2])
def test_an_npy_header_is_checked_against_the_file_size(case, rows):
    _, root, _, _ = case
    import io

    path = root / "img_emb" / "img_emb_0.npy"
    vectors = np.load(path)
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f2", "fortran_order": False, "shape": (rows, 15)})
    path.write_bytes(header.getvalue() + vectors.tobytes())  # the rows of (3, 15), whatever it claims
    refused(case, str(path), "header promises")


@pytest.mark.parametrize(
    "column,value",
    [
        ("mtime", float("nan")),
        ("mtime", float("inf")),
        ("size", float("nan")),
        ("size", -5),
        ("width", float("-inf")),
    ],
)
def test_metadata_that_no_file_could_have_is_refused(case, column, value):
    _, root, files, _ = case
    import pyarrow as pa

    values = [1.0, value, 2.0] if isinstance(value, float) else [1, value, 2]
    write_shard(root, "0", files[:3], **{column: pa.array(values)})
    refused(case, str(root / "metadata" / "metadata_0.parquet"), "row 1", column)


@pytest.mark.parametrize("bad", ["\x00", "\x1b]0;x\x07", "\n", "\x7f"])
def test_control_characters_in_an_image_path_are_refused(case, bad):
    _, root, files, _ = case
    paths = [str(p) for p in files[:3]]
    paths[2] = str(files[2].parent / f"a{bad}b.png")
    write_shard(root, "0", files[:3], image_path=paths)
    refused(case, str(root / "metadata" / "metadata_0.parquet"), "row 2", "image_path")


def test_relative_image_paths_are_taken_from_the_shard_folder(case):
    db, root, files, _ = case
    write_shard(root, "0", files[:3], image_path=[f"pics/{p.name}" for p in files[:3]])
    write_shard(root, "1", files[3:], image_path=[f"./pics/../pics/{p.name}" for p in files[3:]])
    proc = ingest(root, db)  # run_cli runs from /, where pics/ does not exist
    assert proc.returncode == 0, proc.stderr
    with sqlite3.connect(db / "localq.db") as conn:
        stored = {r[0] for r in conn.execute("SELECT path FROM images WHERE deleted = 0")}
    assert {str(root / "pics" / p.name) for p in files} <= stored
    found = json.loads(run_cli("search", "--image", files[0], "-k", "1", "--db", db, "--json").stdout)
    assert found["results"][0]["path"] == str(root / "pics" / files[0].name)
