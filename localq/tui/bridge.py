"""The bridge between the UI and the Trainer: one "core" thread owns the Trainer; the UI
awaits plain results (Status, Batch) of the operations below.

SQLite connections may only be used by the thread that opened them, and fitting or
searching takes 0.1-1 s, so the app never touches the Trainer itself: every call runs
on a single dedicated "core" thread (which opens its own Collection and Trainer on first
use) and comes back as plain data. One thread also serialises the calls, so a fit queued
behind another sees its result, and quitting can wait for whatever is running.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from localq.collection.collection import Hit

if TYPE_CHECKING:
    from localq.tui.drafts import Draft


@dataclass(frozen=True)
class Status:
    name: str
    round: int
    positives: int
    negatives: int
    strategy: str
    k: int
    ap: float | None = None
    target: str | None = None  # the folder label AP is measured against, as a person reads it ("church")
    prompt: str | None = None
    hint: str | None = None  # "no positives yet: ..." while the loop is cold (see hint())
    phase: str | None = None  # Trainer.phase(): "start", "exploring" or "refining"


@dataclass
class Batch:
    """Images on screen, with what the user entered so far (restored after undo or a crash)."""

    hits: list[Hit]
    scores: dict[int, float] = field(default_factory=dict)
    skipped: set[int] = field(default_factory=set)
    note: str | None = None


class TrainerThread:
    """The core thread: the one thread that owns the Trainer; ``call`` runs an operation there."""

    def __init__(self, open_trainer: Callable[[], object], root: Path | None = None):
        """``open_trainer`` runs on the core thread and returns a Trainer whose collection it opened there."""
        self._open_trainer = open_trainer
        self._trainer = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="localq-core")
        self.root = root

    # -- running -------------------------------------------------------------------------
    def _with_trainer(self, fn, args, kwargs):
        if self._trainer is None:
            self._trainer = self._open_trainer()
        return fn(self._trainer, *args, **kwargs)

    async def call(self, fn: Callable, *args, **kwargs):
        """``fn(trainer, *args, **kwargs)`` on the core thread, awaited without blocking the UI."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._with_trainer, fn, args, kwargs)

    def close(self) -> None:
        def _close():
            if self._trainer is not None:
                self._trainer.collection.close()
                self._trainer = None

        try:
            self._executor.submit(_close).result()
        finally:
            self._executor.shutdown(wait=True)


def hint(summary) -> str | None:
    """The status line's warning while the loop is cold (see ``Trainer.summary``), else None."""
    if not summary.cold:
        return None
    # Short: at 80 columns about 30 cells are left beside the name and counts. The keys are
    # spelled out by the notice after the fit, the footer's "t/m/a steer" and the help (?).
    if summary.positives == 0:
        return "no positives yet: try t, m or a"
    return f"no positives for {summary.rounds_without_positive} rounds: try t, m or a"


# -- operations: each runs on the core thread with the trainer as first argument ---------------


def status(t) -> Status:
    """The status line's content: the classifier's state (what `localq classifiers` lists) and the cold hint."""
    from localq.label_names import readable

    st = t.state()
    return Status(
        name=st.name,
        round=st.round,
        positives=st.labels_positive,
        negatives=st.labels_negative,
        strategy=st.strategy,
        k=t.settings.k,
        ap=st.ap,
        target=readable(st.target) if st.target else None,
        prompt=st.prompt,
        hint=hint(t.summary()),
        phase=t.phase(),
    )


def first_batch(t, k: int | None, strategy: str | None, draft: Draft | None) -> Batch:
    """The draft's batch when it belongs to this round and its images are still unseen, else a new one."""
    if draft is not None and draft.round == t.round and draft.ids:
        hits = t.restore_batch(draft.ids)  # submit() accepts labels for the pending batch only
        if hits:
            kept = {h.id for h in hits}
            return Batch(
                hits,
                {i: s for i, s in draft.scores.items() if i in kept},
                draft.skipped & kept,
                note=f"restored the unsaved batch of round {t.round}",
            )
    return Batch(t.next_batch(k, strategy))


def next_batch(t, k: int | None, strategy: str | None) -> Batch:
    return Batch(t.next_batch(k, strategy))


def fit(t, scores: dict[int, float], seen: list[int], k: int | None, strategy: str | None) -> Batch:
    """Submit a round (fit on all labels, persist, mark seen), then fetch the next batch."""
    t.submit(scores, seen=seen)
    return Batch(t.next_batch(k, strategy))


def submit_only(t, scores: dict[int, float], seen: list[int]) -> int:
    t.submit(scores, seen=seen)
    return t.round


def undo(t) -> Batch:
    """Drop the last round and put its images back on screen with the scores they had."""
    undone = t.undo()
    hits = t.restore_batch(undone.released)
    skipped = {i for i in undone.released if i not in undone.scores}
    return Batch(
        hits,
        undone.scores,
        skipped,
        note=f"undid round {undone.round}: its {len(undone.scores)} labels are back on the cards",
    )


def reset_seen(t) -> int:
    return t.reset_seen()


def set_strategy(t, strategy: str) -> None:
    t.update_settings(strategy=strategy)


def save(t, path: str) -> Path:
    return t.save(Path(path).expanduser())


@dataclass(frozen=True)
class SaveCounts:
    """What the save dialog's actions would touch, counted before it writes."""

    keyword: str
    photos: int
    tag_positives: int
    tag_added: int
    tag_updated: int
    tag_removed: int
    tag_problems: int
    folder_positive: int
    folder_negative: int

    @property
    def tag_changes(self) -> int:
        return self.tag_added + self.tag_updated + self.tag_removed


def save_counts(t) -> SaveCounts:
    from localq.photos.imagefolder import planned
    from localq.photos.tagging import tag_photos

    report = tag_photos(t, dry_run=True)  # reads the sidecars that exist; writes nothing
    classes = [cls for _, _, cls, _ in planned(t)]
    return SaveCounts(
        report.keyword,
        report.photos,
        report.positives,
        report.count("added"),
        report.count("updated"),
        report.count("removed"),
        len(report.problems),
        classes.count("positive"),
        classes.count("negative"),
    )


def tag(t):
    from localq.photos.tagging import tag_photos

    return tag_photos(t)


def export_imagefolder(t, path: str):
    from localq.photos.imagefolder import export_imagefolder as write

    return write(t, Path(path).expanduser())


def predictions(t, limit: int):
    return t.predict(threshold=0.0, limit=limit)
