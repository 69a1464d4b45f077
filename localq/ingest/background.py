"""Index a collection on a background thread while the labeling UI runs.

`localq demo` and `localq train` on a collection whose indexing is unfinished open the
UI at once instead of after the whole run (313 s for Imagenette on 2 cores). A thread,
not a process: the model's torch ops and Pillow's decoding release the GIL, the UI
needs little CPU, and a thread shares the already loaded encoder. Files go in "spread"
order (round-robin over folders) so the first batches of the UI already see every
class; every indexed batch is committed, so quitting mid-way loses nothing and the
next run resumes the same deterministic order.

The collection's meta ``index_pending`` names the folders of an unfinished run (set
when a run starts, cleared when one completes), which is how `localq train` knows there
is something to resume.
"""

from __future__ import annotations

import json
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from localq.collection.collection import Collection
from localq.storage.locking import try_lock

PENDING_KEY = "index_pending"
# The UI's first batch waits for this many indexed images (or the end of indexing): 5
# batches of 32 spread over the folders (16 per Imagenette class), a few seconds on an
# idle machine, enough for a meaningful top 10.
WARMUP_ROWS = 160
LOCK_FILE = "background-index.lock"


@dataclass(frozen=True)
class IndexProgress:
    done: int  # files of this run processed so far
    total: int  # files this run has to process (0 until planned)
    rate: float  # images per second since the run started
    finished: bool
    error: str | None = None

    def describe(self) -> str:
        if self.error:
            return f"indexing stopped: {self.error}"
        if self.finished:
            return f"indexed {self.done}/{self.total}" if self.total else ""
        if not self.total:
            return "indexing: scanning folders"
        return f"indexing {self.done}/{self.total} · {self.rate:.0f} img/s"


def record_pending(collection: Collection, roots: list[str | Path], with_labels: bool) -> None:
    roots = [str(Path(r).expanduser().resolve()) for r in roots]
    collection.set_setting(PENDING_KEY, json.dumps({"roots": roots, "with_labels": with_labels}))


def clear_pending(collection: Collection) -> None:
    collection.set_setting(PENDING_KEY, "")


def pending(collection: Collection) -> dict | None:
    """{"roots": [...], "with_labels": bool} of an unfinished run, or None."""
    raw = collection.setting(PENDING_KEY)
    try:
        data = json.loads(raw) if raw else None
    except ValueError:
        return None
    return data if isinstance(data, dict) and data.get("roots") else None


class BackgroundIndexer:
    """``start()`` indexes ``roots`` into the collection at ``root`` on a thread with its
    own SQLite connection; ``stop()`` ends it after the batch in progress."""

    def __init__(
        self,
        root: str | Path,
        roots: list[str | Path],
        encoder,
        *,
        with_labels: bool = False,
        batch_size: int = 32,
        warmup: int = WARMUP_ROWS,
    ):
        self.root = Path(root)
        self.roots = [Path(r) for r in roots]
        self.encoder = encoder
        self.with_labels = with_labels
        self.batch_size = batch_size
        self.warmup = warmup  # files the UI's first batch waits for
        self._stop = threading.Event()
        self._changed = threading.Condition()
        self._done = self._total = 0
        self._started = 0.0
        self._finished = False
        self._error: str | None = None
        self._thread: threading.Thread | None = None
        self.report = None

    def start(self) -> "BackgroundIndexer":
        self._started = time.perf_counter()
        self._thread = threading.Thread(target=self._run, name="localq-index", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        from localq.errors import LocalqError
        from localq.ingest.indexer import index_paths

        lock = None
        try:
            lock = try_lock(self.root / LOCK_FILE)
            if lock is None:  # another localq process indexes this collection: the UI sees its rows anyway
                self._error = "another localq process is indexing this collection"
                return
            # Load the CNN while the folders are scanned (seconds each; the scan waits on the disk).
            threading.Thread(target=self._load_model, name="localq-load-model", daemon=True).start()
            with Collection.open(self.root, create=True) as coll:
                record_pending(coll, self.roots, self.with_labels)
                self.report = index_paths(
                    coll,
                    self.roots,
                    self.encoder,
                    with_labels=self.with_labels,
                    batch_size=self.batch_size,
                    progress=self._progress,
                    order="spread",
                    stop=self._stop,
                )
                if not self.report.interrupted:
                    clear_pending(coll)
        except LocalqError as exc:
            self._error = str(exc)
        except Exception as exc:  # a bug: the UI shows it on the status line, labeling goes on
            self._error = f"{type(exc).__name__}: {exc}"
        finally:
            if lock is not None:
                os.close(lock)
            with self._changed:
                self._finished = True
                self._changed.notify_all()

    def _load_model(self) -> None:
        try:
            getattr(self.encoder, "model", None)
        except Exception:  # the first batch loads it again and reports what is wrong
            pass

    def _progress(self, done: int, total: int) -> None:
        with self._changed:
            self._done, self._total = done, total
            self._changed.notify_all()

    def progress(self) -> IndexProgress:
        with self._changed:
            elapsed = time.perf_counter() - self._started
            return IndexProgress(
                self._done, self._total, self._done / elapsed if elapsed > 0 else 0.0, self._finished, self._error
            )

    def wait_for(self, files: int | None = None, timeout: float | None = None) -> IndexProgress:
        """Block until ``files`` (default: ``warmup``) files of this run are processed, or
        all of them, or the run ended."""
        files = self.warmup if files is None else files
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._changed:
            while not self._finished and not (self._total and self._done >= min(files, self._total)):
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    break
                self._changed.wait(0.2 if left is None else min(0.2, left))
        return self.progress()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()
