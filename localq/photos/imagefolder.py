"""A classifier's images as ``positive/`` and ``negative/`` folders, the layout training code
reads (torchvision's ImageFolder, Hugging Face ``imagefolder``, FiftyOne's directory tree).

Files are hard links where the file system allows (no extra space, instant), else symbolic
links, else copies; ``copy=True`` forces copies (a hard link shares the photo: whatever
writes to the exported file writes to the photo). Names from different folders collide,
so each is made unique within its class folder and ``manifest.csv`` maps it back to the
original path. The photos themselves are only read.
"""

from __future__ import annotations

import csv
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from localq.errors import DiskFull, LocalqError
from localq.loop.trainer import Trainer
from localq.os_errors import SPACE_ERRNOS

CLASSES = ("negative", "positive")  # ImageFolder's class indices sort them this way: 0, 1
MANIFEST = "manifest.csv"


@dataclass
class ImageFolderExport:
    out_dir: Path
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(CLASSES, 0))
    how: dict[str, int] = field(default_factory=lambda: {"hardlink": 0, "symlink": 0, "copy": 0})
    missing: list[str] = field(default_factory=list)

    @property
    def manifest(self) -> Path:
        return self.out_dir / MANIFEST


def planned(trainer: Trainer, *, predicted: bool = False, threshold: float = 0.0) -> list[tuple[int, str, str, float]]:
    """(id, path, class, value) of each image an export would write: labeled images by their
    label's sign (a 0 label is neither), or, with ``predicted``, every live image by its score."""
    coll = trainer.collection
    if predicted:
        ids = np.flatnonzero(coll.live_mask())
        scores = trainer.scores()
        values = {int(i): float(scores[i]) for i in ids}
        classes = {i: CLASSES[v > threshold] for i, v in values.items()}
    else:
        values = {i: s for i, s in trainer.labels().items() if s != 0}
        classes = {i: CLASSES[s > 0] for i, s in values.items()}
    rows = coll.image_rows(sorted(values))
    return [(r.id, r.path, classes[r.id], values[r.id]) for r in rows]


def export_imagefolder(
    trainer: Trainer, out_dir: str | Path, *, predicted: bool = False, threshold: float = 0.0, copy: bool = False
) -> ImageFolderExport:
    """Write ``out_dir/positive``, ``out_dir/negative`` and ``out_dir/manifest.csv``.

    ``out_dir`` must be empty or new: files left from another export would silently join
    the classes. A photo missing from disk is left out and listed in ``missing``."""
    out_dir = Path(out_dir)
    _check_empty(out_dir)
    items = planned(trainer, predicted=predicted, threshold=threshold)
    result = ImageFolderExport(out_dir)
    taken: dict[str, set[str]] = {c: set() for c in CLASSES}
    records = []
    try:
        for cls in CLASSES:
            (out_dir / cls).mkdir(parents=True, exist_ok=True)
        for image_id, path, cls, value in items:
            source = Path(path)
            if not source.is_file():
                result.missing.append(path)
                continue
            name = _unique(source.name, taken[cls])
            target = out_dir / cls / name
            how = _place(source, target, copy=copy)
            result.counts[cls] += 1
            result.how[how] += 1
            records.append(
                {
                    "file": f"{cls}/{name}",
                    "class": cls,
                    "path": path,
                    "id": image_id,
                    "score" if predicted else "label": round(value, 6),
                    "how": how,
                }
            )
        columns = ["file", "class", "path", "id", "score" if predicted else "label", "how"]
        # surrogateescape: a file name that is not UTF-8 is written back as its original bytes.
        with result.manifest.open("w", newline="", errors="surrogateescape") as fh:
            writer = csv.DictWriter(fh, fieldnames=columns)
            writer.writeheader()
            writer.writerows(records)
    except OSError as exc:
        if exc.errno in SPACE_ERRNOS:
            raise DiskFull(
                f"no space left on the disk holding {out_dir}; {len(records)} files were placed before it, "
                "and manifest.csv is not written: remove the folder and export again"
            ) from None
        raise LocalqError(f"cannot write the export into {out_dir}: {exc.strerror or exc}") from None
    return result


def _check_empty(out_dir: Path) -> None:
    try:
        if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
            raise LocalqError(f"{out_dir} is not an empty folder; an image-folder export goes into a new or empty one")
    except OSError as exc:
        raise LocalqError(f"cannot read {out_dir}: {exc.strerror or exc}") from None


def _unique(name: str, taken: set[str]) -> str:
    stem, dot, suffix = name.rpartition(".")
    if not dot:
        stem, suffix = name, ""
    candidate, n = name, 1
    while candidate in taken:
        n += 1
        candidate = f"{stem}-{n}.{suffix}" if dot else f"{stem}-{n}"
    taken.add(candidate)
    return candidate


def _place(source: Path, target: Path, *, copy: bool) -> str:
    """Hard link, else symbolic link, else copy: the cheapest that this file system allows."""
    if not copy:
        try:
            os.link(source, target)
            return "hardlink"
        except OSError as exc:
            if exc.errno in SPACE_ERRNOS:
                raise
        try:
            os.symlink(source.resolve(), target)
            return "symlink"
        except OSError as exc:
            if exc.errno in SPACE_ERRNOS:
                raise
    shutil.copy2(source, target)
    return "copy"
