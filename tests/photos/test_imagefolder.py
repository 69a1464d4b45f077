"""`localq export --format imagefolder`: folders torchvision's ImageFolder reads back."""

from __future__ import annotations

import csv
import os

import pytest
from reliability.helpers import assert_one_line_error, run_cli

import localq.encoders
from conftest import ColorEncoder

pytestmark = pytest.mark.slow  # whole CLI processes


@pytest.fixture
def labeled(tmp_path, colour_folder, monkeypatch):
    """colour_folder indexed, and "reds": reds +1, greens -1 (blues unlabeled) in one round."""
    monkeypatch.setattr(
        localq.encoders, "load_encoder", lambda spec="lite0", weights=None: ColorEncoder(), raising=False
    )
    db = tmp_path / "db"
    assert run_cli("index", colour_folder, "--labels", "--db", db).returncode == 0
    from localq.collection.collection import Collection
    from localq.loop.trainer import Trainer

    with Collection.open(db) as coll:
        trainer = Trainer.create(coll, "reds", prompt="red")
        labels = coll.labels_of(range(coll.rows()))
        trainer.submit({i: 1.0 if labels[i] == "red" else -1.0 for i in range(coll.rows()) if labels[i] != "blue"})
    return db, colour_folder


def manifest(out):
    with open(out / "manifest.csv", newline="") as fh:
        return {row["file"]: row for row in csv.DictReader(fh)}


def loaded(out):
    """(original path, class) of every sample ImageFolder finds, through the manifest."""
    from torchvision.datasets import ImageFolder

    data = ImageFolder(str(out))
    rows = manifest(out)
    assert data.classes == ["negative", "positive"]
    samples = {}
    for path, index in data.samples:
        rel = os.path.relpath(path, out)
        with open(path, "rb") as a, open(rows[rel]["path"], "rb") as b:
            assert a.read() == b.read()  # the same file's bytes
        samples[rows[rel]["path"]] = data.classes[index]
        assert rows[rel]["class"] == data.classes[index]
    return samples


def test_labels_export_loads_back_in_imagefolder_with_unique_names(tmp_path, labeled):
    db, photos = labeled
    out = tmp_path / "out"
    proc = run_cli("export", "reds", "--format", "imagefolder", "--out", out, "--db", db)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == str(out / "manifest.csv")
    assert proc.stderr.strip() == f"4 positive, 4 negative (labeled) in {out}: 8 hard links"
    expected = {str(p): "positive" for p in photos.rglob("red*.png")} | {
        str(p): "negative" for p in photos.rglob("green*.png")
    }
    assert loaded(out) == expected
    # train/red/red0.png and val/red/red0.png meet in positive/: both kept, under two names
    assert sorted(os.listdir(out / "positive")) == ["red0-2.png", "red0.png", "red1.png", "red2.png"]
    first = next(iter((out / "positive").iterdir()))
    assert os.stat(first).st_nlink == 2  # a hard link: no extra space


def test_predicted_export_with_copies(tmp_path, labeled):
    db, photos = labeled
    out = tmp_path / "pred"
    proc = run_cli("export", "reds", "--format", "imagefolder", "--predicted", "--copy", "--out", out, "--db", db)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.strip() == f"4 positive, 8 negative (predicted) in {out}: 12 copies"
    samples = loaded(out)
    assert {p for p, c in samples.items() if c == "positive"} == {str(p) for p in photos.rglob("red*.png")}
    assert len(samples) == 12
    assert all(os.stat(p).st_nlink == 1 and not p.is_symlink() for p in (out / "negative").iterdir())
    assert {r["how"] for r in manifest(out).values()} == {"copy"}


def test_symlinks_where_hard_links_fail(tmp_path, labeled, monkeypatch):
    from localq.collection.collection import Collection
    from localq.loop.trainer import Trainer
    from localq.photos import imagefolder

    def no_link(*args):
        raise OSError(18, "Invalid cross-device link")

    monkeypatch.setattr(os, "link", no_link)
    db, photos = labeled
    with Collection.open(db) as coll:
        result = imagefolder.export_imagefolder(Trainer.open(coll, "reds"), tmp_path / "sym")
    assert result.how == {"hardlink": 0, "symlink": 8, "copy": 0}
    assert loaded(tmp_path / "sym")


def test_a_folder_with_files_in_it_is_refused(tmp_path, labeled):
    db, _ = labeled
    out = tmp_path / "busy"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    proc = run_cli("export", "reds", "--format", "imagefolder", "--out", out, "--db", db)
    assert_one_line_error(proc, "is not an empty folder")
    assert os.listdir(out) == ["keep.txt"]
    proc = run_cli("export", "reds", "--predicted", "--out", tmp_path / "x", "--db", db)
    assert proc.returncode == 2 and "--predicted and --copy go with --format imagefolder" in proc.stderr
