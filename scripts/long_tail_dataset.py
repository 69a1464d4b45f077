"""A long-tailed copy of a ``split/class/file`` data set, for benchmarks on rare classes.

The bench's own data sets give every class a tenth of the pool, so a random batch of
ten holds a positive two times in three, and a cold start is cheap to escape by chance.
In a real collection most concepts are rare: the issue's unseen set had about 1% per
class. This script keeps every class of the pool split but thins them geometrically, as
CIFAR-10-LT does (Cui et al. 2019): in sorted class order, class ``c`` of ``C`` keeps

    n_c = round(n_max * imbalance ** (-c / (C - 1)))

images of that split (at least 1, at most what it has), ``n_max`` being the smallest
class's count so every class can give its share. Which images stay is fixed by the
SHA-256 of each file's name: the same copy on every machine, and no dependence on how
files happen to be numbered. Other splits (the held-out one) are
kept whole, so AP is still measured on a balanced split.

Files are hard links where the file system allows (no space, no copy of the data),
copies otherwise. The destination must not exist yet:

    python scripts/long_tail_dataset.py ../shared/datasets/cifar10 /tmp/lt/cifar10-lt
    localq bench /tmp/lt/cifar10-lt --db /tmp/lt/db/cifar10-lt --out /tmp/lt/report/cifar10-lt
"""

from __future__ import annotations

import argparse
import hashlib
import math
import os
import shutil
import sys
from pathlib import Path

from localq.display import printable  # names as one safe line: undecodable bytes as \xff


def kept_counts(sizes: dict[str, int], imbalance: float) -> dict[str, int]:
    """Images kept per class (sorted class order), geometric from the smallest class's size."""
    classes = sorted(sizes)
    n_max = min(sizes.values())
    last = max(len(classes) - 1, 1)
    return {c: max(1, min(sizes[c], round(n_max * imbalance ** (-i / last)))) for i, c in enumerate(classes)}


def _order_key(path: Path) -> str:
    return hashlib.sha256(path.name.encode("utf-8", "surrogateescape")).hexdigest()


def _place(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:  # another file system, or links refused: copy
        shutil.copy2(src, dst)


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file())


def make_long_tail(src: Path, dst: Path, split: str, imbalance: float) -> dict[str, tuple[int, int]]:
    """Write the long-tailed copy; returns {class: (kept, had)} for ``split``."""
    if not math.isfinite(imbalance) or imbalance < 1:
        raise ValueError("--imbalance must be a number of at least 1 (1 keeps the classes as they are)")
    pool = src / split
    if not pool.is_dir():
        raise ValueError(f"{pool} is not a folder: expected SRC/{split}/CLASS/FILE")
    if dst.exists():
        raise ValueError(f"{dst} already exists: choose a new destination")
    classes = {d.name: _files(d) for d in sorted(pool.iterdir()) if d.is_dir()}
    classes = {c: files for c, files in classes.items() if files}
    if not classes:
        raise ValueError(f"{pool} has no class folder with files in it")
    keep = kept_counts({c: len(files) for c, files in classes.items()}, imbalance)
    try:
        for split_dir in sorted(d for d in src.iterdir() if d.is_dir()):
            for class_dir in sorted(d for d in split_dir.iterdir() if d.is_dir()):
                if split_dir.name == split and class_dir.name in keep:  # listed above: not read again
                    files = sorted(classes[class_dir.name], key=_order_key)[: keep[class_dir.name]]
                else:
                    files = _files(class_dir)
                out = dst / split_dir.name / class_dir.name
                out.mkdir(parents=True, exist_ok=True)
                for f in files:
                    _place(f, out / f.name)
    except BaseException:  # a full disk, an unreadable file, Ctrl-C: no half copy left to mistake for a whole one
        shutil.rmtree(dst, ignore_errors=True)
        raise
    return {c: (keep[c], len(files)) for c, files in classes.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("src", type=Path, help="a split/class/file data set")
    parser.add_argument("dst", type=Path, help="where the long-tailed copy goes (must not exist)")
    parser.add_argument("--split", default="train", help="the split to thin (the bench's pool; default train)")
    parser.add_argument(
        "--imbalance",
        type=float,
        default=100.0,
        help="largest class over smallest after thinning (default 100, as CIFAR-10-LT)",
    )
    args = parser.parse_args(argv)
    try:
        counts = make_long_tail(args.src, args.dst, args.split, args.imbalance)
    except (ValueError, OSError) as exc:
        print(f"error: {printable(exc)}", file=sys.stderr)
        return 1
    total = sum(kept for kept, _ in counts.values())
    print(
        f"{printable(args.dst)}: split {printable(args.split)!r} thinned to {total} images (imbalance {args.imbalance:g})"
    )
    for c, (kept, had) in counts.items():
        print(f"  {printable(c)}\t{kept} of {had}\t{kept / total:.1%} of the pool")
    return 0


if __name__ == "__main__":
    sys.exit(main())
