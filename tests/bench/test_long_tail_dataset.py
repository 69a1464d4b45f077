"""scripts/long_tail_dataset.py: the long-tailed copy the rare-class bench reports run on."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "long_tail_dataset.py"


@pytest.fixture(scope="module")
def lt():
    spec = importlib.util.spec_from_file_location("long_tail_dataset", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _dataset(root: Path, train: dict[str, int], val: int = 2) -> Path:
    for split, counts in (("train", train), ("val", {c: val for c in train})):
        for c, n in counts.items():
            folder = root / split / c
            folder.mkdir(parents=True)
            for i in range(n):
                (folder / f"{c}_{i:03d}.jpg").write_bytes(f"{split}/{c}/{i}".encode())
    return root


def _names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_classes_thin_geometrically_in_sorted_order_from_the_smallest_class(lt, tmp_path):
    src = _dataset(tmp_path / "src", {"b": 12, "a": 10, "c": 8})
    counts = lt.make_long_tail(src, tmp_path / "dst", "train", 4.0)
    # n_max = 8 (the smallest class); a: 8, b: 8 / 4 ** 0.5 = 4, c: 8 / 4 = 2
    assert counts == {"a": (8, 10), "b": (4, 12), "c": (2, 8)}
    for c, (kept, _) in counts.items():
        assert len(_names(tmp_path / "dst" / "train" / c)) == kept
        assert _names(tmp_path / "dst" / "val" / c) == _names(src / "val" / c)  # held-out split whole


def test_the_same_files_stay_on_every_run_and_are_links_not_copies(lt, tmp_path):
    src = _dataset(tmp_path / "src", {"a": 20, "b": 20})
    lt.make_long_tail(src, tmp_path / "one", "train", 10.0)
    lt.make_long_tail(src, tmp_path / "two", "train", 10.0)
    kept = _names(tmp_path / "one" / "train" / "b")
    assert len(kept) == 2 and kept == _names(tmp_path / "two" / "train" / "b")
    assert kept != ["b_000.jpg", "b_001.jpg"]  # chosen by hash, not by numbering
    copy, original = tmp_path / "one" / "train" / "b" / kept[0], src / "train" / "b" / kept[0]
    assert os.stat(copy).st_ino == os.stat(original).st_ino
    assert copy.read_bytes() == original.read_bytes()


def test_bad_arguments_give_one_line_and_exit_1_without_touching_the_destination(lt, tmp_path, capsys):
    src = _dataset(tmp_path / "src", {"a": 3, "b": 3})
    existing = tmp_path / "existing"
    existing.mkdir()
    (existing / "keep.txt").write_text("mine")
    cases = [
        [str(src), str(existing)],
        [str(tmp_path / "missing"), str(tmp_path / "out1")],
        [str(src), str(tmp_path / "out2"), "--split", "nope"],
        [str(src), str(tmp_path / "out3"), "--imbalance", "0.5"],
        [str(src), str(tmp_path / "out4"), "--imbalance", "nan"],
    ]
    for argv in cases:
        assert lt.main(argv) == 1
        err = capsys.readouterr().err
        assert err.startswith("error: ") and err.count("\n") == 1, (argv, err)
    assert _names(existing) == ["keep.txt"]
    assert not any((tmp_path / f"out{i}").exists() for i in (1, 2, 3, 4))


def test_a_copy_that_fails_half_way_leaves_no_destination_behind(lt, tmp_path, monkeypatch):
    src = _dataset(tmp_path / "src", {"a": 5, "b": 5})
    placed = []

    def place_then_fail(source, target):
        if len(placed) == 6:
            raise OSError(28, "No space left on device")
        placed.append(target)
        os.link(source, target)

    monkeypatch.setattr(lt, "_place", place_then_fail)
    with pytest.raises(OSError):
        lt.make_long_tail(src, tmp_path / "dst", "train", 2.0)
    assert placed and not (tmp_path / "dst").exists()


def test_a_class_folder_whose_name_is_not_utf8_is_thinned_and_named_without_a_crash(tmp_path):
    src = tmp_path / "src"
    for split in ("train", "val"):
        for name in (b"ok", b"bad\xff"):
            folder = os.path.join(os.fsencode(src), split.encode(), name)
            os.makedirs(folder)
            for i in range(4):
                with open(os.path.join(folder, b"f%d.jpg" % i), "wb") as f:
                    f.write(b"%d" % i)
    os.mkfifo(src / "train" / "ok" / "not-a-file.jpg")  # skipped, never opened
    env = {**os.environ, "PYTHONIOENCODING": "utf-8"}  # strict: a surrogate in print() would raise
    done = subprocess.run(
        [sys.executable, str(SCRIPT), str(src), str(tmp_path / "dst"), "--imbalance", "4"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "bad\\xff\t4 of 4" in done.stdout and "ok\t1 of 4" in done.stdout
    assert len(os.listdir(os.path.join(os.fsencode(tmp_path), b"dst", b"train", b"bad\xff"))) == 4
