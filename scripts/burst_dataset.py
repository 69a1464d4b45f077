"""A burst copy of a ``split/class/file`` data set: every pool photo joined by near-copies.

Personal collections hold bursts, several shots of one scene a moment apart. A loop that
exploits its query piles up copies of the scenes it already ranks first, so a benchmark
without them overstates what a person gets. This script writes a copy of a data set in
which every image of the pool split comes with ``--copies`` near-copies, each made by:

- a turn of up to 4 degrees either way;
- a crop of 85-97% of each side, at a random place, scaled back to the original size;
- brightness and contrast each within 8%;
- JPEG re-encoding (quality 85-95).

A copy of ``NAME.EXT`` is written as ``NAME.burstI.jpg`` beside it, so ``localq bench``
knows which images show one scene (``localq.bench.scenes``) and can count the labels
spent on a scene already labeled. Everything is seeded by a hash of the file's name:
the same copy on every machine.

``--classes N`` keeps N classes (chosen by a hash of their names), so a burst set stays
small enough to index in minutes; ``--offset M`` skips the first M of that order, so a
held-out set can have other classes than the dev set. ``--copies 0`` writes the same
subset without copies, to compare against. ``--dev-from-pool`` makes a copy for choosing
settings: the held-out split is never read; the pool split's images are divided by a
hash of their names into a new pool (with copies) and a new ``val`` split (without),
a fifth of them in ``val``.

    python scripts/burst_dataset.py ../shared/datasets/tinyimagenet data/bursts/tin --classes 50
    localq bench data/bursts/tin --db data/collections/tin-bursts
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import sys
from pathlib import Path

from localq.display import printable

sys.path.insert(0, str(Path(__file__).resolve().parent))
from long_tail_dataset import _files, _place  # noqa: E402  (hard links else copies; a folder's files)

COPY_MARK = ".burst"
DEV_FRACTION = 0.2


def _hash(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode("utf-8", "surrogateescape")).digest()[:8], "little")


def near_copy(img, rng):
    """One near-copy of a PIL image, by the recipe in the module docstring."""
    from PIL import Image, ImageEnhance

    img = img.convert("RGB")
    w, h = img.size
    # Turned before the crop, so the crop hides most of the corners the turn leaves empty.
    img = img.rotate(rng.uniform(-4.0, 4.0), resample=Image.BICUBIC)
    sx, sy = rng.uniform(0.85, 0.97), rng.uniform(0.85, 0.97)
    cw, ch = max(1, round(w * sx)), max(1, round(h * sy))
    x0, y0 = round(rng.uniform(0, w - cw)), round(rng.uniform(0, h - ch))
    out = img.crop((x0, y0, x0 + cw, y0 + ch)).resize((w, h), Image.BICUBIC)
    out = ImageEnhance.Brightness(out).enhance(rng.uniform(0.92, 1.08))
    return ImageEnhance.Contrast(out).enhance(rng.uniform(0.92, 1.08))


def _write_copies(src: Path, dst_dir: Path, copies: int) -> int:
    import random

    from PIL import Image

    rng = random.Random(_hash(src.name))
    with Image.open(src) as img:
        img.load()
        for i in range(1, copies + 1):
            near_copy(img, rng).save(dst_dir / f"{src.stem}{COPY_MARK}{i}.jpg", quality=rng.randint(85, 95))
    return copies


def make_bursts(
    src: Path,
    dst: Path,
    *,
    split: str = "train",
    copies: int = 4,
    classes: int = 0,
    offset: int = 0,
    dev_from_pool: bool = False,
) -> dict[str, int]:
    """Write the burst copy; returns counts: originals, copies, held-out images."""
    if copies < 0:
        raise ValueError("--copies must be 0 (the same subset, without copies) or more")
    pool = src / split
    if not pool.is_dir():
        raise ValueError(f"{pool} is not a folder: expected SRC/{split}/CLASS/FILE")
    if dst.exists():
        raise ValueError(f"{dst} already exists: choose a new destination")
    names = sorted(d.name for d in pool.iterdir() if d.is_dir() and _files(d))
    if not names:
        raise ValueError(f"{pool} has no class folder with files in it")
    if classes or offset:
        names = sorted(sorted(names, key=_hash)[offset : offset + classes if classes else None])
        if not names:
            raise ValueError(f"--offset {offset} leaves no class of the {split} split")
    counts = {"originals": 0, "copies": 0, "held_out": 0}
    try:
        for class_name in names:
            out = dst / split / class_name
            held = dst / "val" / class_name
            out.mkdir(parents=True)
            for f in _files(pool / class_name):
                if dev_from_pool and _hash(f.name) / 2.0**64 < DEV_FRACTION:
                    held.mkdir(parents=True, exist_ok=True)
                    _place(f, held / f.name)
                    counts["held_out"] += 1
                    continue
                _place(f, out / f.name)
                counts["originals"] += 1
                counts["copies"] += _write_copies(f, out, copies)
        if not dev_from_pool:  # the other splits, whole and without copies
            for split_dir in sorted(d for d in src.iterdir() if d.is_dir() and d.name != split):
                for class_name in names:
                    if (split_dir / class_name).is_dir():
                        (dst / split_dir.name / class_name).mkdir(parents=True)
                        for f in _files(split_dir / class_name):
                            _place(f, dst / split_dir.name / class_name / f.name)
                            counts["held_out"] += 1
    except BaseException:
        shutil.rmtree(dst, ignore_errors=True)  # never leave a half-written set behind
        raise
    return counts


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("src", type=Path, help="a split/class/file data set")
    ap.add_argument("dst", type=Path, help="where to write the burst copy (must not exist)")
    ap.add_argument("--split", default="train", help="the pool split that gets copies (default: train)")
    ap.add_argument("--copies", type=int, default=4, help="near-copies per photo (default: 4)")
    ap.add_argument("--classes", type=int, default=0, help="keep this many classes, chosen by name hash (default: all)")
    ap.add_argument(
        "--offset",
        type=int,
        default=0,
        help="skip this many classes of the hash order first: a set of other classes than --offset 0's",
    )
    ap.add_argument(
        "--dev-from-pool",
        action="store_true",
        help="hold out a fifth of the pool split as val instead of reading the other splits",
    )
    args = ap.parse_args(argv)
    try:
        counts = make_bursts(
            args.src,
            args.dst,
            split=args.split,
            copies=args.copies,
            classes=args.classes,
            offset=args.offset,
            dev_from_pool=args.dev_from_pool,
        )
    except (ValueError, OSError) as exc:
        print(f"burst_dataset: {printable(str(exc))}", file=sys.stderr)
        return 1
    print(
        f"{counts['originals']} photos, {counts['copies']} near-copies, {counts['held_out']} held out "
        f"-> {printable(str(args.dst))}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
