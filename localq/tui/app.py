"""The labeling app: a batch of cards to score, fit, next batch; everything persisted on the way.

Card states: a card starts *unset*. A set score (-1..+1) becomes a label at the next fit;
*skipped* means "no label, don't show it again"; an unset card is neither labeled nor
marked seen, so it can come back in a later batch. Fit submits the set scores and marks
set and skipped cards seen, in one transaction (Trainer.submit).

Nothing typed is lost: the batch on screen with its scores is written to a small draft
file as the user scores (``<collection>/tui-drafts/<classifier>.json``), quitting
submits the set scores as a round, and the next start restores a draft whose round
still matches (after a dropped SSH session, say). Keys typed while the loop is working
(before the first batch is on screen, during a fit) wait in order and apply to the batch
that comes (see ``on_event``).
"""

from __future__ import annotations

import asyncio
import shlex
import sys
import threading
from collections import deque
from pathlib import Path
from typing import Callable

from textual import events
from textual.app import App
from textual.binding import Binding
from textual.worker import Worker

from localq.display import printable
from localq.errors import LocalqError
from localq.tui import bridge, cold_start, drafts
from localq.tui.batch_screen import BatchScreen
from localq.tui.bridge import Batch, Status, TrainerThread
from localq.tui.screens import ConfirmScreen, PredictionsScreen, SaveScreen
from localq.tui.terminal import HALFBLOCK, TerminalGraphics
from localq.tui.thumbnails import ThumbnailCache, detect_colors

TORCH_WARMUP_DELAY_S = 2.0  # after the first batch is shown; a person takes longer to score it
# Keys that act at once even while other keys wait for the batch: quitting must never wait
# behind a slow first batch (it submits what is on screen, the waiting keys applied first).
UNHELD_KEYS = frozenset({"ctrl+c", "ctrl+q", "q"})


class TrainApp(App):
    """Drive one classifier's loop. ``open_trainer`` runs on the core thread (see bridge.py)."""

    TITLE = "localq"
    ENABLE_COMMAND_PALETTE = False
    BINDINGS = [Binding("ctrl+c,ctrl+q", "quit_and_save", "Quit", show=False, priority=True)]

    def __init__(
        self,
        open_trainer: Callable[[], object],
        root: Path,
        *,
        k: int | None = None,
        strategy: str | None = None,
        thumbnails: str = "auto",
        colors: str | None = None,
        cache: ThumbnailCache | None = None,
        background=None,
        graphics: TerminalGraphics | None = None,
    ):
        """``graphics``: what terminal.resolve() found (run_train asks the terminal). Without it,
        ``thumbnails`` kitty|sixel is taken as said, and auto means half-blocks: nothing is probed."""
        super().__init__()
        self.background = background  # a localq.ingest.background.BackgroundIndexer still filling the collection
        self.core = TrainerThread(open_trainer, root)
        self.root = Path(root)
        self.k = k
        self.strategy_override = strategy
        if graphics is None:
            graphics = TerminalGraphics(thumbnails if thumbnails in ("kitty", "sixel") else HALFBLOCK)
        self.graphics = graphics
        self.protocol, self.protocol_note = graphics.protocol, graphics.note
        self._colors = colors
        self.cache = cache or ThumbnailCache()
        self.painter = None
        if graphics.protocol != HALFBLOCK:
            from localq.tui.graphics import Painter

            self.painter = Painter(graphics, self.cache, self._write_graphics)
        self.status: Status | None = None
        self.batch_round: int | None = None  # the round the cards on screen were fetched for
        self.job: Worker | None = None
        self.quitting = False
        # Keys typed while a job (the first batch, a fit) will replace the cards: applied,
        # in order, once it is done. Holding starts at once: the grid is empty until then.
        self._holding_keys = True
        self._held_keys: deque[events.Key] = deque()
        self._releasing_keys = False
        self.exit_note: str | None = None  # the line `localq train` prints after the UI closes

    # -- plumbing ----------------------------------------------------------------------------
    @property
    def color_mode(self) -> str:
        return self._colors or detect_colors(self.console.color_system)

    def _write_graphics(self, data: str) -> None:
        if data and self._driver is not None and not self.is_headless:
            self._driver.write(data)
            self._driver.flush()

    def _display(self, screen, renderable) -> None:
        """Textual's screen update, then the painter's pixels over the cells it rewrote.

        (A private Textual hook: the one place that knows which cells were just rewritten.)"""
        super()._display(screen, renderable)
        if self.painter is not None and renderable is not None and self._running and not self._closed:
            from localq.tui.graphics import touched_regions

            self.painter.after_display(self, touched_regions(renderable))

    def on_resize(self) -> None:
        if self.painter is not None and self.graphics.protocol != HALFBLOCK and not self.is_headless:
            from localq.tui.terminal import cell_size

            if self.painter.set_cell(cell_size()):  # a font change: prepare the images at the new size
                for thumbnail in self.query("Thumbnail"):
                    thumbnail.watch_path()

    async def on_event(self, event: events.Event) -> None:
        """Hold the batch screen's keys while a job is changing its cards (see ``_release_keys``).

        Without this, a score typed right after the status line appeared (the first batch
        still being searched) or during a fit met an empty or frozen grid and was dropped."""
        if (
            isinstance(event, events.Key)
            and not event.is_forwarded
            and event.key not in UNHELD_KEYS
            and (self._holding_keys or self._held_keys or self._releasing_keys)
            and self.screen_stack
            and self.screen is self.screen_stack[0]
        ):
            self._held_keys.append(event)
            return
        await super().on_event(event)

    async def _release_keys(self) -> None:
        """Apply the held keys in the order typed; keys arriving meanwhile queue behind them.
        A held key that starts another job (f) leaves the rest held for that job's batch."""
        self._holding_keys = False
        if self._releasing_keys:
            return
        self._releasing_keys = True
        try:
            while self._held_keys and not self._holding_keys:
                await super().on_event(self._held_keys.popleft())
        finally:
            self._releasing_keys = False

    def get_default_screen(self) -> BatchScreen:
        return BatchScreen()

    @property
    def batch_screen(self) -> BatchScreen:
        return next(s for s in self.screen_stack if isinstance(s, BatchScreen))

    @property
    def busy(self) -> bool:
        return self.job is not None and self.job.is_running

    def run_job(self, label: str, work, *, freeze: bool = False) -> Worker | None:
        """Run ``work`` (a coroutine awaiting the core) as the one job in flight, showing ``label``.

        Not Textual's ``@work(exclusive=True)``: exclusive *cancels* the job in flight, and
        a cancelled fit still finishes on the core thread while the screen never learns of
        it (stale batch, round and draft); here a second job asked for while busy is refused
        instead (keys typed meanwhile wait for the job, see ``on_event``; a modal's answer or
        a click does not), with the busy label, the frozen cards and the error notices around
        every job. Nor
        ``thread=True``: the job updates widgets, which only the UI thread may do, and the
        Trainer calls already run on the core thread (bridge.py)."""
        if self.busy or self.quitting:
            work.close()
            self.notify("still working on the last step: try again in a moment", severity="warning", timeout=2)
            return None
        self._holding_keys = True  # until the job is done: it may replace the cards
        self.job = self.run_worker(self._job(label, work, freeze), group="core", exit_on_error=False)
        return self.job

    async def _job(self, label: str, work, freeze: bool) -> None:
        screen = self.batch_screen
        screen.status_line.busy = label
        if freeze:
            screen.frozen = True
        try:
            await work
        except LocalqError as exc:
            self.notify(str(exc), severity="error", timeout=6)
        except Exception as exc:  # a bug: say so, but keep the app (and the scores on screen) alive
            self.log.error(exc)
            self.notify(f"{type(exc).__name__}: {exc}", title=f"{label} failed", severity="error", timeout=10)
        finally:
            screen.frozen = False
            screen.refresh_bindings()  # the footer hid "x skip" while frozen; focus may not move to redraw it
            screen.status_line.busy = None
            # From the app's message loop, once this worker has ended: a held "f" must not find it busy.
            self.call_later(self._release_keys)

    async def refresh_status(self) -> None:
        self.status = await self.core.call(bridge.status)
        self.batch_screen.status_line.status = self.status

    # -- the batch on screen: the screen's, reached through here --------------------------------
    async def show_batch(self, batch: Batch) -> None:
        # A method of the app on purpose: scripts/bench_startup.py wraps it to time the first batch.
        await self.batch_screen.show_batch(batch)

    def draft_file(self) -> Path | None:
        return drafts.draft_path(self.root, self.status.name) if self.status else None

    # -- actions ----------------------------------------------------------------------------------
    def start(self) -> None:
        if self.protocol_note:
            self.notify(self.protocol_note, severity="warning", timeout=5)
        if self.background is not None:
            self._show_indexing()
            self._indexing_timer = self.set_interval(0.5, self._show_indexing)
        self.run_job("opening the collection", self._start())

    def _show_indexing(self) -> None:
        """Background indexing progress on the status line; each next batch sees the new rows."""
        progress = self.background.progress()
        try:
            self.batch_screen.status_line.extra = progress.describe()
        except StopIteration:  # torn down
            return
        if progress.finished:
            self._indexing_timer.stop()

    async def _start(self) -> None:
        if self.strategy_override:
            await self.core.call(bridge.set_strategy, self.strategy_override)
        await self.refresh_status()
        draft = drafts.read_draft(self.draft_file())
        self.batch_screen.status_line.busy = "searching"
        batch = await self.core.call(bridge.first_batch, self.k, None, draft)
        self.batch_round = self.status.round
        await self.show_batch(batch)
        # The first fit imports torch (seconds on a busy machine): do it while the user looks
        # at the first batch, once its thumbnails are drawn (the import holds the GIL a lot).
        self.set_timer(TORCH_WARMUP_DELAY_S, lambda: threading.Thread(target=_import_torch, daemon=True).start())

    def fit(self) -> None:
        scores, seen = self.batch_screen.entries()
        if not scores:
            self.notify("score at least one image first (←/→, 1/2/3), or x to skip one", severity="warning", timeout=3)
            return
        self.run_job(f"fitting on {len(scores)} new labels", self._fit(scores, seen), freeze=True)

    async def _fit(self, scores: dict[int, float], seen: list[int]) -> None:
        batch = await self.core.call(bridge.fit, scores, seen, self.k, None)
        drafts.drop_draft(self.draft_file())
        await self.refresh_status()
        self.batch_round = self.status.round
        await self.show_batch(batch)
        cold_start.after_fit(self, scores)

    def undo(self) -> None:
        scores, _ = self.batch_screen.entries()
        if scores and not self.busy:
            self.push_screen(
                ConfirmScreen(f"Drop the {len(scores)} scores set on this batch and undo the last round?"),
                lambda yes: yes and self.run_job("undoing", self._undo()),
            )
        else:
            self.run_job("undoing", self._undo())

    async def _undo(self) -> None:
        batch = await self.core.call(bridge.undo)
        await self.refresh_status()
        self.batch_round = self.status.round
        await self.show_batch(batch)
        self.batch_screen.write_draft()

    def switch_strategy(self) -> None:
        from localq.loop.sampling import STRATEGIES

        if self.status is None:
            return
        current = self.status.strategy
        new = STRATEGIES[(STRATEGIES.index(current) + 1) % len(STRATEGIES)] if current in STRATEGIES else STRATEGIES[0]
        scores, seen = self.batch_screen.entries()
        self.run_job(f"strategy {new}", self._switch_strategy(new, refetch=not (scores or seen)))

    async def _switch_strategy(self, strategy: str, refetch: bool) -> None:
        await self.core.call(bridge.set_strategy, strategy)
        await self.refresh_status()
        if refetch:
            await self.show_batch(await self.core.call(bridge.next_batch, self.k, None))
            self.notify(f"strategy: {strategy}", timeout=2)
        else:
            self.notify(f"strategy: {strategy} (from the next batch)", timeout=3)

    def reset_seen(self) -> None:
        if self.status is None:
            return
        self.push_screen(
            ConfirmScreen(f"Make every image retrievable again for {self.status.name!r}? Labels stay."),
            lambda yes: yes and self.run_job("resetting seen flags", self._reset_seen()),
        )

    async def _reset_seen(self) -> None:
        n = await self.core.call(bridge.reset_seen)
        scores, seen = self.batch_screen.entries()
        if not (scores or seen):
            await self.show_batch(await self.core.call(bridge.next_batch, self.k, None))
        self.notify(f"{n} images can be retrieved again", timeout=3)

    def default_save_path(self) -> Path:
        name = self.status.name if self.status else "classifier"
        return self.root / "classifiers" / f"{name}.safetensors"

    def default_folder_path(self) -> Path:
        name = self.status.name if self.status else "classifier"
        return self.root / "exports" / f"{name}-imagefolder"

    def save_classifier(self) -> None:
        self.run_job("counting what saving would touch", self._open_save())

    async def _open_save(self) -> None:
        counts = await self.core.call(bridge.save_counts)
        self.push_screen(SaveScreen(self.default_save_path(), self.default_folder_path(), counts), self._save_chosen)

    def _save_chosen(self, choice: tuple[str, str] | None) -> None:
        if not choice:
            return
        action, path = choice
        if action == "file":
            self.run_job("saving", self._save(path))
        elif action == "tag":
            self.run_job("writing keywords into XMP sidecars", self._tag())
        elif action == "imagefolder":
            self.run_job("exporting an image folder", self._export_folder(path))

    async def _tag(self) -> None:
        report = await self.core.call(bridge.tag)
        changed = len(report.changes)
        problems = f"; {len(report.problems)} could not be used, first: {report.problems[0]}" if report.problems else ""
        self.notify(
            f"keyword {report.keyword!r}: {changed} sidecar{'s' * (changed != 1)} changed "
            f"({report.count('added')} gained it, {report.count('updated')} updated, "
            f"{report.count('removed')} lost it){problems}",
            severity="warning" if report.problems else "information",
            timeout=8,
        )

    async def _export_folder(self, path: str) -> None:
        result = await self.core.call(bridge.export_imagefolder, path)
        missing = f"; {len(result.missing)} photos no longer on disk were left out" if result.missing else ""
        self.notify(
            f"image folder {result.out_dir}: {result.counts['positive']} positive, "
            f"{result.counts['negative']} negative, manifest.csv{missing}",
            timeout=8,
        )

    async def _save(self, path: str) -> None:
        saved = await self.core.call(bridge.save, path)
        self.notify(f"saved {saved}", timeout=6)

    def show_predictions(self) -> None:
        if self.status is None:
            return

        async def load(limit: int):
            return await self.core.call(bridge.predictions, limit)

        self.push_screen(PredictionsScreen(load, self.cache, self.color_mode, self.status))

    # -- quitting ------------------------------------------------------------------------------------
    def action_quit_and_save(self) -> None:
        self.quit_and_save()

    def quit_and_save(self) -> None:
        if self.quitting:
            return
        self.quitting = True
        self.run_worker(self._quit(), group="quit")

    async def _quit(self) -> None:
        if self.job is not None and self.job.is_running:
            try:
                await self.job.wait()  # a running fit holds the batch on screen: let it land
            except Exception:  # its error was shown already; quitting goes on
                pass
        await self._release_keys()  # scores typed before "q" while the batch was coming
        scores, _ = self.batch_screen.entries()
        saved = None  # what quitting itself wrote, for the line printed after the UI closes
        if scores and self.batch_round is not None:
            _, seen = self.batch_screen.entries()
            self.batch_screen.status_line.busy = f"saving {len(scores)} labels"
            try:
                await self.core.call(bridge.submit_only, scores, seen)
                drafts.drop_draft(self.draft_file())
            except LocalqError as exc:
                self.batch_screen.write_draft()
                saved = f"labels kept as a draft for next time: {exc}"
            else:
                saved = f"saved {len(scores)} new label{'' if len(scores) == 1 else 's'}"
                try:
                    await self.refresh_status()  # the round and counts the note names
                except LocalqError:
                    pass  # the labels are saved; the note then names the round before them
        else:
            self.batch_screen.write_draft()  # skips alone are not a round: keep them for next time
            if self.batch_screen.entries()[1] and self.status is not None:
                saved = "skips kept as a draft for next time"
        if self.background is not None:
            self.batch_screen.status_line.busy = "stopping the indexer (everything indexed is saved)"
            await asyncio.to_thread(self.background.stop)
        self.exit_note = quit_note(self.status, saved, self.root)  # run_train prints it once the screen is back
        self.exit()

    async def on_unmount(self) -> None:
        if self.painter is not None:
            self._write_graphics(self.painter.clear())
        self.cache.close()
        if self.background is not None:
            await asyncio.to_thread(self.background.stop)
        await asyncio.to_thread(self.core.close)


def quit_note(status: Status | None, saved: str | None, root: Path) -> str | None:
    """One line for the terminal once the UI is gone: what quitting saved, where the
    classifier stands, and the command that carries on from there."""
    if status is None:  # quit before the classifier opened: nothing to say about it
        return saved
    from localq.storage import paths

    resume = f"localq train --classifier {status.name}"
    if Path(root).absolute() != paths.collection_dir().absolute():  # not the collection a bare command opens
        resume += f" --db {shlex.quote(str(root))}"
    where = f"{status.name} is at round {status.round} (+{status.positives}/−{status.negatives} labels)"
    return f"{saved + '; ' if saved else 'nothing new to save; '}{where}; resume with `{resume}`"


def _import_torch() -> None:
    try:
        import torch  # noqa: F401
    except Exception:  # the fit itself will report it
        pass


def run_train(
    collection, trainer, *, k: int | None, strategy: str | None, thumbnails: str = "auto", background=None
) -> None:
    """Open the labeling UI on ``trainer`` (a classifier of ``collection``) and run it until quit.

    The app opens its own connection to the collection on its core thread (SQLite
    connections are per thread); ``collection`` stays open for the caller to close.
    ``background``: a started BackgroundIndexer; the first batch waits for its first
    few hundred images, later batches retrieve from whatever is indexed by then."""
    from localq.tui.terminal import resolve

    graphics = resolve(thumbnails)  # asks the terminal now: once Textual runs, it reads the answers as keys
    app = TrainApp(
        trainer_opener(collection, trainer.name, background),
        Path(collection.root),
        k=k,
        strategy=strategy,
        thumbnails=thumbnails,
        background=background,
        graphics=graphics,
    )
    app.run()
    if app.exit_note:  # one line, unwrapped (Textual's exit message is wrapped at 80 columns off a terminal)
        print(printable(app.exit_note), file=sys.stderr, flush=True)


def trainer_opener(collection, name: str, background=None) -> Callable[[], object]:
    def open_trainer():
        from localq.loop.trainer import Trainer

        # The caller's vector index is already in memory: the core thread takes it over.
        coll = collection.reopen()
        if background is not None and coll.count_live() < background.warmup:
            background.wait_for()  # a first batch from a handful of images would mean little
        return Trainer.open(coll, name)

    return open_trainer
