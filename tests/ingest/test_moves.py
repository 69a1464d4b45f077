"""Labels follow content: a file renamed, moved to another folder, or moved with its whole
folder keeps its image id, and so its labels, seen flags and rounds. A copy (both files
there) is a second, unlabeled image. Real files, the real store and vectors file."""

from __future__ import annotations

import csv
import json
import os
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest
from reliability.helpers import run_cli

from conftest import write_image
from localq.collection.collection import Collection
from localq.ingest.indexer import index_paths
from localq.loop.trainer import Trainer

pytestmark = pytest.mark.slow  # whole CLI processes


def _photos(root: Path) -> Path:
    write_image(root / "church" / "x.png", (200, 30, 30))
    write_image(root / "church" / "y.png", (30, 200, 30))
    write_image(root / "beach" / "z.png", (30, 30, 200))
    return root


def _labelled(tmp_path: Path, encoder, path: Path, score: float = 1.0):
    """A collection of ``photos`` and a classifier that labelled ``path``; (coll, trainer, id)."""
    coll = Collection.open(tmp_path / "coll", create=True)
    index_paths(coll, [tmp_path / "photos"], encoder)
    image_id = coll.id_of_path(path)
    trainer = Trainer.create(coll, "churches", images=[image_id])
    trainer.submit({image_id: score})
    return coll, trainer, image_id


def _state(coll, trainer):
    return (
        trainer.labels(),
        trainer.label_history(),
        sorted(coll.store.seen_ids(trainer.row.id).tolist()),
        [r.round for r in trainer.history()],
    )


def test_a_moved_file_keeps_its_id_labels_seen_flags_and_rounds(tmp_path, colour_encoder):
    photos = _photos(tmp_path / "photos")
    old = photos / "church" / "x.png"
    coll, trainer, image_id = _labelled(tmp_path, colour_encoder, old)
    before = _state(coll, trainer)
    new = photos / "churches-sorted" / "old church.png"
    new.parent.mkdir()
    os.rename(old, new)
    report = index_paths(coll, [photos], colour_encoder)
    assert (report.moved, report.added, report.removed, report.embedded) == (1, 0, 0, 0)
    assert coll.id_of_path(new) == image_id and coll.id_of_path(old) is None
    assert _state(coll, Trainer.open(coll, "churches")) == before
    assert coll.count_live() == 3 and coll.store.n_rows() == 3  # no new row, no new vector
    assert [h.path for h in coll.search(colour_encoder.encode_texts(["red"])[0], k=1)] == [str(new)]


def test_a_whole_folder_moved_keeps_every_id(tmp_path, colour_encoder):
    photos = _photos(tmp_path / "photos")
    coll, trainer, _ = _labelled(tmp_path, colour_encoder, photos / "church" / "x.png")
    ids = {p.name: coll.id_of_path(p) for p in (photos / "church").iterdir()}
    (photos / "2024").mkdir()
    os.rename(photos / "church", photos / "2024" / "church")
    report = index_paths(coll, [photos], colour_encoder)
    assert (report.moved, report.added, report.removed) == (2, 0, 0)
    assert {name: coll.id_of_path(photos / "2024" / "church" / name) for name in ids} == ids


def test_a_copy_is_a_second_unlabelled_image(tmp_path, colour_encoder):
    photos = _photos(tmp_path / "photos")
    original = photos / "church" / "x.png"
    coll, trainer, image_id = _labelled(tmp_path, colour_encoder, original)
    copy = photos / "album" / "x.png"
    copy.parent.mkdir()
    shutil.copy2(original, copy)
    report = index_paths(coll, [photos], colour_encoder)
    assert (report.moved, report.added, report.embedded) == (0, 1, 0)
    assert coll.id_of_path(original) == image_id
    assert coll.id_of_path(copy) not in Trainer.open(coll, "churches").labels()


def test_a_move_and_a_copy_at_once_is_one_move_and_one_new_image(tmp_path, colour_encoder):
    photos = _photos(tmp_path / "photos")
    old = photos / "church" / "x.png"
    coll, trainer, image_id = _labelled(tmp_path, colour_encoder, old)
    (photos / "a").mkdir()
    (photos / "b").mkdir()
    shutil.copy2(old, photos / "b" / "x.png")
    os.rename(old, photos / "a" / "x.png")
    report = index_paths(coll, [photos], colour_encoder, batch_size=1)
    assert (report.moved, report.added, report.removed, report.embedded) == (1, 1, 0, 0)
    ids = {coll.id_of_path(photos / d / "x.png") for d in "ab"}
    assert image_id in ids and len(ids) == 2
    vectors = coll.index.matrix()
    np.testing.assert_array_equal(vectors[min(ids)], vectors[max(ids)])


def test_identical_files_moved_together_keep_their_own_ids(tmp_path, colour_encoder):
    photos = tmp_path / "photos"
    for folder in ("x", "y"):
        write_image(photos / "old" / folder / "same.png", (90, 90, 90))
    coll = Collection.open(tmp_path / "coll", create=True)
    index_paths(coll, [photos], colour_encoder)
    ids = {f: coll.id_of_path(photos / "old" / f / "same.png") for f in ("x", "y")}
    os.rename(photos / "old", photos / "new")
    report = index_paths(coll, [photos], colour_encoder)
    assert report.moved == 2
    assert {f: coll.id_of_path(photos / "new" / f / "same.png") for f in ("x", "y")} == ids


def test_a_file_moved_from_a_folder_indexed_in_another_run(tmp_path, colour_encoder):
    photos = _photos(tmp_path / "photos")
    old = photos / "church" / "x.png"
    coll = Collection.open(tmp_path / "coll", create=True)
    index_paths(coll, [photos / "church"], colour_encoder)
    index_paths(coll, [photos / "beach"], colour_encoder)
    image_id = coll.id_of_path(old)
    os.rename(old, photos / "beach" / "x.png")
    report = index_paths(coll, [photos / "beach"], colour_encoder)  # the old folder is not indexed now
    assert (report.moved, report.added) == (1, 0)
    assert coll.id_of_path(photos / "beach" / "x.png") == image_id


def test_a_move_over_another_file_replaces_that_image(tmp_path, colour_encoder):
    photos = _photos(tmp_path / "photos")
    x, y = photos / "church" / "x.png", photos / "church" / "y.png"
    coll, trainer, x_id = _labelled(tmp_path, colour_encoder, x)
    y_id = coll.id_of_path(y)
    os.replace(x, y)  # mv x.png y.png
    report = index_paths(coll, [photos], colour_encoder)
    assert (report.moved, report.removed, report.added) == (1, 1, 0)
    assert coll.id_of_path(y) == x_id and not coll.live_mask()[y_id]


def test_a_stopped_run_keeps_gone_images_for_the_next_run_to_place(tmp_path, colour_encoder):
    photos = _photos(tmp_path / "photos")
    old = photos / "church" / "x.png"
    coll, trainer, image_id = _labelled(tmp_path, colour_encoder, old)
    for i in range(3):
        write_image(photos / "new" / f"n{i}.png", (10 * i, 100, 100))
    (photos / "zz").mkdir()
    os.rename(old, photos / "zz" / "x.png")  # scanned last
    stop = threading.Event()
    stop.set()
    first = index_paths(coll, [photos], colour_encoder, batch_size=1, stop=stop)
    assert first.interrupted and first.removed == 0 and coll.live_mask()[image_id]
    again = index_paths(coll, [photos], colour_encoder, batch_size=1)
    assert again.moved == 1 and coll.id_of_path(photos / "zz" / "x.png") == image_id


def test_a_file_that_stops_decoding_keeps_its_labels_in_the_history(tmp_path, colour_encoder):
    photos = _photos(tmp_path / "photos")
    x = photos / "church" / "x.png"
    coll, trainer, image_id = _labelled(tmp_path, colour_encoder, x, score=-1.0)
    history = trainer.label_history()
    x.write_bytes(b"no longer an image")
    report = index_paths(coll, [photos], colour_encoder)
    assert (report.removed, [Path(p).name for p, _ in report.skipped]) == (1, ["x.png"])
    assert not coll.live_mask()[image_id]
    assert Trainer.open(coll, "churches").label_history() == history


def test_cli_reports_moves_and_export_lists_the_new_path(tmp_path, colour_encoder):
    photos = _photos(tmp_path / "photos")
    old = photos / "church" / "x.png"
    coll, trainer, image_id = _labelled(tmp_path, colour_encoder, old)
    coll.close()
    new = photos / "churches-sorted" / "old church.png"
    new.parent.mkdir()
    os.rename(old, new)
    db = tmp_path / "coll"
    proc = run_cli("index", photos, "--db", db, "-q")
    assert proc.returncode == 0, proc.stderr
    assert "0 added, 0 changed, 1 moved, 0 removed, 2 unchanged" in proc.stdout, proc.stdout
    again = run_cli("index", photos, "--db", db, "--json")
    assert json.loads(again.stdout)["moved"] == 0
    out = tmp_path / "export"
    proc = run_cli("export", "churches", "--out", out, "--db", db)
    assert proc.returncode == 0, proc.stderr
    with (out / "churches-labels.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert [(r["id"], r["path"], r["label"]) for r in rows] == [(str(image_id), str(new), "1.0")]
    check = run_cli("check", "--db", db)
    assert check.returncode == 0 and str(old) not in check.stdout + check.stderr
