"""Put a classifier's positives where photo managers look: keywords in XMP sidecars.

Each photo the run covers (the collection, or the files under the given paths) either
carries the classifier's keyword (a positive) or not: a photo no longer predicted loses
the keyword a previous run gave it, so re-running after more rounds brings the set up to
date. Each sidecar's edit is worked out by localq.photos.xmp and written in batches by its
SidecarWriter; a sidecar that cannot be used is reported and the others are still written. A full disk stops the run. Two runs on one
collection take turns on the collection's tag lock.
"""

from __future__ import annotations

import os
import stat
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np

from localq.errors import CollectionBusy, CollectionUnwritable, DiskFull, LocalqError, SidecarProblem
from localq.ingest.scan import is_under
from localq.loop.trainer import Trainer
from localq.photos import xmp
from localq.storage.locking import lock_timeout, wait_for_flock

TAG_LOCK_FILE = "tag.lock"


@dataclass(frozen=True)
class Change:
    photo: str
    sidecar: Path
    action: str  # added, updated, removed
    score: float


@dataclass
class TagReport:
    keyword: str
    positives: int = 0
    photos: int = 0
    changes: list[Change] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    skipped_files: list[tuple[str, str]] = field(default_factory=list)  # (path, reason): not decodable

    def count(self, action: str) -> int:
        return sum(c.action == action for c in self.changes)


def tag_photos(
    trainer: Trainer,
    paths: Sequence[str | Path] = (),
    *,
    threshold: float = 0.0,
    keyword: str | None = None,
    style: str = xmp.STYLES[0],
    remove: bool = False,
    dry_run: bool = False,
    on_wait: Callable[[str], None] | None = None,
    on_change: Callable[[Change], None] | None = None,
    on_problem: Callable[[str], None] | None = None,
) -> TagReport:
    """Bring the sidecars of the covered photos in line with the classifier's predictions.

    ``remove`` takes this classifier's keyword out of every covered sidecar. ``dry_run``
    reports the same changes and writes nothing. Raises DiskFull (after the sidecars
    already written) and CollectionBusy; every other problem is per sidecar."""
    keyword = keyword if keyword is not None else trainer.name
    if not keyword.strip() or "|" in keyword:
        raise LocalqError(
            f"keyword {keyword!r} cannot be used: it must not be empty or hold '|' "
            "(the hierarchy separator photo managers read)"
        )
    report = TagReport(keyword)
    scored = _scores(trainer, paths, report)
    report.photos = len(scored)
    report.positives = sum(1 for _, s in scored if s > threshold)
    photo_of: dict[Path, tuple[str, float]] = {}  # sidecar -> (photo, score), for the report

    def done(edit: xmp.Edit) -> None:
        photo, score = photo_of[edit.sidecar]
        change = Change(photo, edit.sidecar, edit.action, score)
        report.changes.append(change)
        if on_change:
            on_change(change)

    def problem(message: str) -> None:
        report.problems.append(message)
        if on_problem:
            on_problem(message)

    lock = nullcontext() if dry_run else tag_lock(trainer.collection.root, on_wait)
    writer = xmp.SidecarWriter(on_done=done, on_problem=lambda edit, message: problem(message))
    with lock:
        try:
            for photo, score in scored:
                positive = score > threshold and not remove
                tag = xmp.Tag(trainer.name, keyword, score, trainer.round) if positive else None
                sidecar = xmp.sidecar_path(photo, style)
                if writer.holds(sidecar):  # photo.xmp style: a.jpg and a.png share a.xmp; read it written
                    writer.flush()
                try:
                    if positive:
                        _check_photo(photo)
                    edit = xmp.plan(sidecar, trainer.name, tag, build=not dry_run)
                except SidecarProblem as exc:
                    problem(str(exc))
                    continue
                if edit is None:
                    continue
                photo_of[sidecar] = (photo, score)
                if dry_run:
                    done(edit)
                else:
                    writer.add(edit)
            writer.flush()
        except DiskFull as exc:
            raise DiskFull(
                f"{exc}; {len(report.changes)} sidecars were written before it, re-run when there is space"
            ) from None
    return report


def _scores(trainer: Trainer, paths: Sequence[str | Path], report: TagReport) -> list[tuple[str, float]]:
    """(photo path, score) of every photo the run covers."""
    coll = trainer.collection
    live = np.flatnonzero(coll.live_mask())
    scores = trainer.scores()
    rows = coll.image_rows(live)
    if not paths:
        return [(r.path, float(scores[r.id])) for r in rows]
    from localq.imageio import is_image_path

    roots = [str(Path(p).expanduser().resolve()) for p in paths]
    inside = [(r.path, float(scores[r.id])) for r in rows if any(is_under(r.path, root) for root in roots)]
    known = {p for p, _ in inside}
    outside = []
    for root in map(Path, roots):
        files = sorted(f for f in root.rglob("*") if is_image_path(f) and f.is_file()) if root.is_dir() else [root]
        outside += [str(f) for f in files if str(f) not in known]
    if outside:  # files not in the collection are embedded now, as `localq predict PATHS` does
        preds, bad = trainer.predict_files(outside, -np.inf)
        report.skipped_files += bad
        inside += [(p.path, p.score) for p in preds]
    return inside


def _check_photo(photo: str) -> None:
    try:
        mode = os.stat(photo).st_mode
    except FileNotFoundError:
        raise SidecarProblem(
            f"{photo} no longer exists; run `localq index` on its folder to update the collection"
        ) from None
    except OSError as exc:
        raise SidecarProblem(f"cannot reach {photo}: {exc.strerror or exc}") from None
    if stat.S_ISDIR(mode):
        raise SidecarProblem(
            f"{photo} is a folder now, not a photo; run `localq index` on its folder to update the collection"
        )


@contextmanager
def tag_lock(root: Path, on_wait: Callable[[str], None] | None = None) -> Iterator[None]:
    """One `localq tag` run per collection at a time. Its own lock, not the collection's
    write lock: a tag run can take minutes, and training and indexing must go on meanwhile.
    flock: the kernel drops it when the process dies, even by kill -9."""
    path = Path(root) / TAG_LOCK_FILE
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        raise CollectionUnwritable(f"cannot write to collection {root}: {exc.strerror or exc} ({path})") from None
    timeout = lock_timeout()
    waiting = f"waiting for another `localq tag` run on {root} to finish (up to {timeout:g} s, LOCALQ_LOCK_TIMEOUT)"
    try:
        if not wait_for_flock(fd, timeout, on_wait, waiting):
            raise CollectionBusy(
                f"another `localq tag` run on {root} did not finish within {timeout:g} s; "
                "try again when it has, or raise LOCALQ_LOCK_TIMEOUT"
            )
        yield
    finally:
        os.close(fd)
