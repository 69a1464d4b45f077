"""Files that change after `localq index`: cut short, rewritten at the same size and
mtime, or with metadata that makes Pillow complain; and a folder that is not there.

A collection never answers a search with content a file no longer holds (but where the
stat-based check cannot see a change: then `--verify` does), and a user never gets
success for a typo. Every run is the real CLI in a subprocess, on real files."""

from __future__ import annotations

import json
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import write_image
from reliability.helpers import assert_one_line_error, run_cli

pytestmark = [pytest.mark.reliability("changed files"), pytest.mark.slow]  # whole CLI processes


def _json(*args) -> dict:
    proc = run_cli(*args, "--json")
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr and "Warning" not in proc.stderr, proc.stderr
    return json.loads(proc.stdout)


def _folder(tmp_path: Path) -> Path:
    folder = tmp_path / "photos"
    write_image(folder / "red.png", (220, 20, 20))
    write_image(folder / "blue.png", (20, 30, 220))
    noise = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(noise).save(folder / "dog.png")  # ~12 KB: a cut at 500 bytes leaves a header
    return folder


def _searched_paths(db: Path) -> set[str]:
    hits = _json("search", "red", "-k", "50", "--db", db)["results"]
    return {h["path"] for h in hits}


def test_a_file_cut_short_after_indexing_leaves_search(tmp_path):
    folder, db = _folder(tmp_path), tmp_path / "db"
    dog = str(folder / "dog.png")
    assert _json("index", folder, "--db", db)["images"] == 3
    assert dog in _searched_paths(db)
    os.truncate(dog, 500)  # truncate -s 500 dog.png
    second = _json("index", folder, "--db", db)
    assert [s["path"] for s in second["skipped"]] == [dog]
    assert (second["images"], second["removed"], second["unchanged"]) == (2, 1, 2)
    assert dog not in _searched_paths(db)
    assert [s["path"] for s in _json("skipped", "--db", db)["skipped"]] == [dog]
    # The next run neither reads it again nor reports it again: it is a known skip.
    third = _json("index", folder, "--db", db)
    assert (third["images"], third["removed"], third["skipped"], third["skipped_known"]) == (2, 0, [], 1)
    # As many images as a fresh index of the same folder holds.
    assert _json("index", folder, "--db", tmp_path / "fresh")["images"] == 2
    check = run_cli("check", "--db", db)
    assert check.returncode == 0, check.stdout + check.stderr


def test_a_file_that_decodes_again_comes_back(tmp_path):
    folder, db = _folder(tmp_path), tmp_path / "db"
    dog = folder / "dog.png"
    whole = dog.read_bytes()
    _json("index", folder, "--db", db)
    os.truncate(dog, 500)
    _json("index", folder, "--db", db)
    dog.write_bytes(whole)
    os.utime(dog, (1, 1))
    back = _json("index", folder, "--db", db)
    assert (back["images"], back["added"]) == (3, 1)
    assert _json("skipped", "--db", db)["skipped"] == []


def test_same_size_and_mtime_keeps_the_old_vector_until_verify(tmp_path):
    # The documented trade-off: a re-run trusts size and mtime; --verify re-reads.
    folder, db = tmp_path / "photos", tmp_path / "db"
    bmp = write_image(folder / "swatch.bmp", (220, 20, 20))  # BMP: same size whatever the colour
    write_image(folder / "other.png", (20, 200, 20))
    _json("index", folder, "--db", db)
    st = bmp.stat()
    write_image(bmp, (20, 30, 220))
    os.utime(bmp, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert bmp.stat().st_size == st.st_size
    plain = _json("index", folder, "--db", db)
    assert (plain["changed"], plain["unchanged"]) == (0, 2)
    top = _json("search", "blue", "-k", "1", "--db", db)["results"][0]
    verified = _json("index", folder, "--verify", "--db", db)
    assert (verified["changed"], verified["unchanged"], verified["embedded"]) == (1, 1, 1)
    now_top = _json("search", "blue", "-k", "1", "--db", db)["results"][0]
    assert now_top["path"] == str(bmp) and now_top["score"] > top["score"]
    again = _json("index", folder, "--verify", "--db", db)
    assert (again["changed"], again["unchanged"], again["embedded"]) == (0, 2, 0)


def test_verify_drops_a_file_that_no_longer_decodes_at_the_same_stat(tmp_path):
    folder, db = _folder(tmp_path), tmp_path / "db"
    dog = folder / "dog.png"
    _json("index", folder, "--db", db)
    st = dog.stat()
    dog.write_bytes(b"x" * st.st_size)  # same size, no image left in it
    os.utime(dog, ns=(st.st_atime_ns, st.st_mtime_ns))
    report = _json("index", folder, "--verify", "--db", db)
    assert (report["images"], report["removed"], [s["path"] for s in report["skipped"]]) == (2, 1, [str(dog)])


def test_a_folder_that_does_not_exist_is_one_line_and_indexes_nothing(tmp_path):
    db = tmp_path / "db"
    proc = run_cli("index", tmp_path / "photoz", "--db", db)
    assert_one_line_error(proc, "photoz", "no such file or directory")
    assert "indexing" not in proc.stdout + proc.stderr and not db.exists()
    # Beside a folder that exists, too: nothing is indexed from either.
    folder = _folder(tmp_path)
    proc = run_cli("index", folder, tmp_path / "photoz", "--db", db)
    assert_one_line_error(proc, "photoz")
    assert not db.exists()


def _png_with_a_huge_broken_exif(path: Path) -> Path:
    """A good 16x16 PNG whose 1 MB eXIf chunk holds 30 tags pointing past the file's end."""
    buf = Image.new("RGB", (16, 16), (200, 30, 30))
    path.parent.mkdir(parents=True, exist_ok=True)
    buf.save(path)
    data = path.read_bytes()

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    ifd = struct.pack(">H", 30) + b"".join(struct.pack(">HHII", 0x9000 + k, 4, 0x1000000, 0x100) for k in range(30))
    exif = b"MM\x00\x2a\x00\x00\x00\x08" + ifd + b"\0\0\0\0" + b"\0" * (1 << 20)
    end_of_ihdr = 8 + 25
    path.write_bytes(data[:end_of_ihdr] + chunk(b"eXIf", exif) + data[end_of_ihdr:])
    return path


def test_a_photo_with_a_huge_broken_exif_is_indexed_without_warnings(tmp_path):
    photo = _png_with_a_huge_broken_exif(tmp_path / "photos" / "exif.png")
    proc = run_cli("index", photo.parent, "--db", tmp_path / "db", "-q")
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == "", proc.stderr  # not 30 of Pillow's UserWarnings
    assert "1 added" in proc.stdout
