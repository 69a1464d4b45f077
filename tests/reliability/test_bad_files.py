"""Bad files in a folder being indexed: each is skipped and recorded with its reason,
the rest of the batch is indexed, and a re-run neither trips nor reports it again.

Every file here is real (mkfifo, a symlink to /dev/zero, a name that is not UTF-8, a
20000x1 PNG...), indexed through the real CLI, store and FAISS file."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import write_image
from reliability.inprocess import assert_terminal_safe, deadline, invoke, ok_json, runner  # noqa: F401

pytestmark = pytest.mark.reliability("bad files")

GOOD = {"red0.png": (220, 20, 20), "red1.jpg": (200, 30, 30), "blue0.png": (20, 30, 220)}


def good_folder(tmp_path) -> Path:
    folder = tmp_path / "photos"
    for name, rgb in GOOD.items():
        write_image(folder / name, rgb)
    return folder


def index_twice(runner, tmp_path, folder: Path, bad_name: str, reason: str) -> dict:
    """Index ``folder`` twice; return the first run's report after checking both runs."""
    db = tmp_path / "db"
    with deadline(120):
        first = ok_json(runner, "index", folder, "--db", db, "--batch-size", "2")
        again = ok_json(runner, "index", folder, "--db", db, "--batch-size", "2")
    bad = os.path.join(str(folder), bad_name)
    assert [(s["path"], s["reason"]) for s in first["skipped"]] == [(bad, reason)]
    assert first["images"] == first["added"] == len(GOOD)
    # The re-run does not trip, re-embed or re-report: the skip is known.
    assert (again["images"], again["added"], again["unchanged"], again["skipped"]) == (len(GOOD), 0, len(GOOD), [])
    assert again["skipped_known"] == 1
    listed = ok_json(runner, "skipped", "--db", db)["skipped"]
    assert [(s["path"], s["reason"]) for s in listed] == [(bad, reason)]
    text = invoke(runner, "skipped", "--db", db)
    assert text.exit_code == 0 and reason in text.stdout
    assert_terminal_safe(text.output)
    return first


def test_fifo_is_refused_without_opening(runner, tmp_path):
    folder = good_folder(tmp_path)
    os.mkfifo(folder / "x.jpg")  # opening it for reading would block forever: no writer
    index_twice(runner, tmp_path, folder, "x.jpg", "not a regular file: fifo")


def test_symlink_to_dev_zero_is_a_device(runner, tmp_path):
    folder = good_folder(tmp_path)
    (folder / "zero.jpg").symlink_to("/dev/zero")
    index_twice(runner, tmp_path, folder, "zero.jpg", "not a regular file: character device")


def test_socket_is_refused(runner, tmp_path):
    folder = good_folder(tmp_path)
    cwd = os.getcwd()
    os.chdir(folder)  # AF_UNIX paths are limited to ~108 bytes: bind by a relative name
    sock = socket.socket(socket.AF_UNIX)
    try:
        sock.bind("s.png")
    finally:
        os.chdir(cwd)
    try:
        index_twice(runner, tmp_path, folder, "s.png", "not a regular file: socket")
    finally:
        sock.close()


@pytest.mark.parametrize("width", [20000, 60000])
def test_thin_png_is_refused_from_its_header(runner, tmp_path, width):
    folder = good_folder(tmp_path)
    Image.new("L", (width, 1), 128).save(folder / "thin.png")
    assert (folder / "thin.png").stat().st_size < 1000  # a tiny file that used to cost 5 GB
    index_twice(runner, tmp_path, folder, "thin.png", f"extreme aspect ratio: {width}x1")


def test_pixel_bomb_is_refused_from_its_header(runner, tmp_path):
    folder = good_folder(tmp_path)
    Image.new("1", (15000, 15000)).save(folder / "bomb.png")  # 225 MP in a few KB
    index_twice(runner, tmp_path, folder, "bomb.png", "decompression bomb: 15000x15000")


def test_zero_byte_file(runner, tmp_path):
    folder = good_folder(tmp_path)
    (folder / "empty.jpg").write_bytes(b"")
    index_twice(runner, tmp_path, folder, "empty.jpg", "empty file")


@pytest.mark.parametrize("name", ["cut.jpg", "cut.png"])
def test_truncated_image(runner, tmp_path, name):
    folder = good_folder(tmp_path)
    whole = tmp_path / f"whole{Path(name).suffix}"
    noise = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(noise).save(whole)
    data = whole.read_bytes()
    (folder / name).write_bytes(data[: len(data) // 2])
    index_twice(runner, tmp_path, folder, name, "truncated image")


def test_svg_is_listed_as_unsupported(runner, tmp_path):
    folder = good_folder(tmp_path)
    (folder / "logo.svg").write_text('<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"/>')
    (folder / "notes.txt").write_text("not an image, and not pretending to be one")
    index_twice(runner, tmp_path, folder, "logo.svg", "unsupported format: SVG vector drawing")


def test_video_is_listed_as_unsupported(runner, tmp_path):
    folder = good_folder(tmp_path)
    (folder / "clip.mov").write_bytes(b"\x00\x00\x00\x14ftypqt  ")
    index_twice(runner, tmp_path, folder, "clip.mov", "unsupported format: video")


def test_garbage_with_an_invalid_utf8_name(runner, tmp_path):
    folder = good_folder(tmp_path)
    name = os.fsdecode(b"bad\xff\xfe.jpg")
    (folder / name).write_bytes(b"this is no jpeg")
    first = index_twice(runner, tmp_path, folder, name, "not an image")
    text = invoke(runner, "skipped", "--db", tmp_path / "db").stdout
    assert "bad\\xff\\xfe.jpg\tnot an image" in text  # shown as `ls -b` would
    assert os.path.exists(os.fsencode(first["skipped"][0]["path"]))  # JSON keeps the exact bytes


@pytest.mark.parametrize("raw_name", [b"bad\xff\xfe.jpg", b"caf\xe9.png", b"\x80\x81.png"])
def test_image_with_an_invalid_utf8_name_is_indexed(runner, tmp_path, raw_name):
    folder = good_folder(tmp_path)
    path = os.path.join(os.fsencode(folder), raw_name)
    Image.new("RGB", (16, 16), (230, 10, 10)).save(path, format="PNG")
    db = tmp_path / "db"
    with deadline(120):
        first = ok_json(runner, "index", folder, "--db", db)
        again = ok_json(runner, "index", folder, "--db", db)
    assert (first["added"], first["skipped"]) == (len(GOOD) + 1, [])
    assert (again["added"], again["unchanged"], again["skipped"]) == (0, len(GOOD) + 1, [])
    found = ok_json(runner, "search", "red", "-k", "10", "--db", db)["results"]
    by_bytes = {os.fsencode(r["path"]): r for r in found}
    assert path in by_bytes  # stored losslessly: the JSON path names the very file
    shown = invoke(runner, "search", "red", "-k", "10", "--db", db)
    assert shown.exit_code == 0
    assert_terminal_safe(shown.output)
    escaped = "".join(chr(b) if b < 0x80 else f"\\x{b:02x}" for b in raw_name)
    assert escaped in shown.stdout
    # Deleting it tombstones it like any other file.
    os.unlink(path)
    assert ok_json(runner, "index", folder, "--db", db)["removed"] == 1


def test_folder_with_an_invalid_utf8_name_gives_a_label(runner, tmp_path):
    root = tmp_path / "photos"
    write_image(root / "red" / "a.png", (220, 20, 20))
    odd = os.path.join(os.fsencode(root), b"r\xe9d")
    os.makedirs(odd)
    Image.new("RGB", (16, 16), (200, 20, 20)).save(os.path.join(odd, b"b.png"))
    db = tmp_path / "db"
    first = ok_json(runner, "index", root, "--labels", "--db", db)
    assert (first["added"], first["skipped"]) == (2, [])
    labels = {r["label"] for r in ok_json(runner, "search", "red", "-k", "2", "--db", db)["results"]}
    assert labels == {"red", "r\\xe9d"}


def test_heic_written_by_pillow_heif_is_indexed(runner, tmp_path):
    import pillow_heif

    folder = good_folder(tmp_path)
    pillow_heif.from_pillow(Image.new("RGB", (64, 48), (230, 10, 10))).save(str(folder / "phone.heic"), quality=90)
    pillow_heif.from_pillow(Image.new("RGB", (64, 48), (10, 10, 230))).save(str(folder / "phone2.HEIF"), quality=90)
    db = tmp_path / "db"
    first = ok_json(runner, "index", folder, "--db", db)
    assert (first["added"], first["skipped"]) == (len(GOOD) + 2, [])
    top = ok_json(runner, "search", "red", "-k", "3", "--db", db)["results"]
    assert str(folder / "phone.heic") in {r["path"] for r in top}  # decoded as the red it is
    assert ok_json(runner, "index", folder, "--db", db)["unchanged"] == len(GOOD) + 2


def test_avif_is_indexed(runner, tmp_path):
    from localq.imageio import IMAGE_EXTENSIONS

    assert ".avif" in IMAGE_EXTENSIONS, "this Pillow has no AVIF codec"
    folder = good_folder(tmp_path)
    Image.new("RGB", (64, 48), (10, 10, 230)).save(folder / "pic.avif", quality=90)
    first = ok_json(runner, "index", folder, "--db", tmp_path / "db")
    assert (first["added"], first["skipped"]) == (len(GOOD) + 1, [])
    top = ok_json(runner, "search", "blue", "-k", "2", "--db", tmp_path / "db")["results"]
    assert str(folder / "pic.avif") in {r["path"] for r in top}


def test_every_kind_at_once_in_one_batch(runner, tmp_path):
    """All the bad kinds in one folder, batches of 2: every good file still lands."""
    folder = good_folder(tmp_path)
    os.mkfifo(folder / "a-fifo.jpg")
    (folder / "b-zero.jpg").symlink_to("/dev/zero")
    (folder / "c-broken.jpg").symlink_to(folder / "nowhere.jpg")
    Image.new("L", (60000, 1)).save(folder / "d-thin.png")
    (folder / "e-empty.png").write_bytes(b"")
    (folder / "f.svg").write_text("<svg/>")
    (folder / os.fsdecode(b"g-\xff.jpg")).write_bytes(b"garbage")
    (folder / "h-\x1b]0;title\x07.png").write_bytes(b"garbage")
    db = tmp_path / "db"
    with deadline(120):
        first = invoke(runner, "index", folder, "--db", db, "--batch-size", "2", "--quiet")
        again = ok_json(runner, "index", folder, "--db", db, "--batch-size", "2")
    assert first.exit_code == 0, first.output
    assert "3 added" in first.stdout and "8 skipped" in first.stdout
    assert_terminal_safe(first.output)
    assert (again["images"], again["skipped_known"]) == (3, 7)  # the broken link is re-reported: no stat
    assert len(ok_json(runner, "skipped", "--db", db)["skipped"]) == 8


def test_predict_on_files_skips_the_undecodable_one(runner, tmp_path):
    folder = good_folder(tmp_path)
    db = tmp_path / "db"
    ok_json(runner, "index", folder, "--db", db)
    from localq.collection.collection import Collection
    from localq.loop.trainer import Trainer

    with Collection.open(db) as coll:
        Trainer.create(coll, "reds", prompt="red")
    new = tmp_path / "new"
    write_image(new / "n-red.png", (240, 0, 0))
    (new / "n-bad.jpg").write_bytes(b"not a jpeg")
    os.mkfifo(new / "n-fifo.png")
    with deadline(60):
        result = invoke(runner, "predict", "reds", new, "--db", db, "--threshold", "-100", "--json")
    assert result.exit_code == 0, result.output
    assert [Path(p["path"]).name for p in json.loads(result.stdout)["predictions"]] == ["n-red.png"]
    assert "skipped " in result.stderr and "n-bad.jpg: not an image" in result.stderr
    assert "n-fifo.png: not a regular file: fifo" in result.stderr
