"""scripts/burst_dataset.py: burst copies for the near-copy bench, and how the bench reads them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from localq.bench.scenes import scene_of

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "burst_dataset.py"


def _dataset(root: Path, classes=("a", "b", "c"), train=5, val=2) -> Path:
    rng = np.random.default_rng(0)
    for split, n in (("train", train), ("val", val)):
        for c in classes:
            folder = root / split / c
            folder.mkdir(parents=True)
            for i in range(n):
                pixels = rng.integers(0, 255, size=(48, 64, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(folder / f"{c}_{i}.png" if split == "train" else folder / f"v{c}_{i}.png")
    return root


def _run(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True, text=True)


def _files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_every_pool_photo_gets_near_copies_and_the_held_out_split_none(tmp_path):
    src = _dataset(tmp_path / "src")
    done = _run(src, tmp_path / "dst", "--copies", "2")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("15 photos, 30 near-copies, 6 held out")
    names = _files(tmp_path / "dst" / "train" / "a")
    assert names == sorted([f"a_{i}.png" for i in range(5)] + [f"a_{i}.burst{j}.jpg" for i in range(5) for j in (1, 2)])
    assert _files(tmp_path / "dst" / "val" / "a") == ["va_0.png", "va_1.png"]
    with Image.open(tmp_path / "dst" / "train" / "a" / "a_0.burst1.jpg") as copy:
        assert copy.size == (64, 48)  # a crop scaled back to the photo's size
    # Seeded by the file name: the same copy every time.
    again = _run(src, tmp_path / "dst2", "--copies", "2")
    assert again.returncode == 0
    for name in ("a_0.burst1.jpg", "c_4.burst2.jpg"):
        assert (tmp_path / "dst" / "train" / name[0] / name).read_bytes() == (
            tmp_path / "dst2" / "train" / name[0] / name
        ).read_bytes()


def test_dev_from_pool_never_reads_the_held_out_split_and_offset_picks_other_classes(tmp_path):
    src = _dataset(tmp_path / "src", classes=tuple("abcdef"), train=10)
    assert _run(src, tmp_path / "dev", "--classes", "3", "--dev-from-pool", "--copies", "1").returncode == 0
    dev = tmp_path / "dev"
    val = {p.name for p in (dev / "val").rglob("*.png")}
    assert val and not any(n.startswith("v") for n in val)  # held out from train; the val split is not read
    assert not val & {p.name for p in (dev / "train").rglob("*")}  # held out, not in the pool
    assert _run(src, tmp_path / "other", "--classes", "3", "--offset", "3", "--copies", "0").returncode == 0
    assert not set(_files(dev / "train")) & set(_files(tmp_path / "other" / "train"))
    assert not list((tmp_path / "other").rglob("*.burst*"))  # --copies 0: the same subset, no copies


def test_bad_arguments_get_one_line_and_exit_1(tmp_path):
    src = _dataset(tmp_path / "src")
    (tmp_path / "exists").mkdir()
    for args, words in (
        ((src, tmp_path / "exists"), "already exists"),
        ((tmp_path / "nowhere", tmp_path / "d"), "is not a folder"),
        ((src, tmp_path / "d2", "--copies", "-1"), "--copies"),
        ((src, tmp_path / "d3", "--offset", "9"), "--offset"),
    ):
        done = _run(*args)
        assert done.returncode == 1 and words in done.stderr and len(done.stderr.splitlines()) == 1, done.stderr
        assert "Traceback" not in done.stderr


@pytest.mark.parametrize(
    "path, scene",
    [
        ("/p/a/x_1.jpg", "/p/a/x_1"),
        ("/p/a/x_1.burst3.jpg", "/p/a/x_1"),
        ("/p/b/x_1.burst3.jpg", "/p/b/x_1"),  # another folder: another scene
        ("/p/a/burst.jpg", "/p/a/burst"),
    ],
)
def test_the_bench_reads_a_scene_from_the_copy_mark(path, scene):
    assert scene_of(path) == scene
