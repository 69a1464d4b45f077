"""The labeling app: a batch of cards to score, fit, next batch; everything persisted on the way.

Card states: a card starts *unset*. A set score (-1..+1) becomes a label at the next fit;
*skipped* means "no label, don't show it again"; an unset card is neither labeled nor
marked seen, so it can come back in a later batch. Fit submits the set scores and marks
set and skipped cards seen, in one transaction (Trainer.submit).

Nothing typed is lost: the batch on screen with its scores is written to a small draft
file as the user scores (``<collection>/tui-drafts/<classifier>.json``), quitting
submits the set scores as a round, and the next start restores a draft whose round
still matches (after a dropped SSH session, say).
"""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Callable

from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.widgets import Footer
from textual.worker import Worker

from localq.errors import LocalqError
from localq.tui import cold_start
from localq.tui import core as ops
from localq.tui.core import Batch, Core, Draft, Status
from localq.tui.screens import ConfirmScreen, GridScreen, HelpScreen, PredictionsScreen, PreviewScreen, SaveScreen
from localq.tui.terminal import HALFBLOCK, TerminalGraphics
from localq.tui.thumbnails import ThumbnailCache, detect_colors
from localq.tui.widgets import Card, StatusLine

DRAFT_DELAY_S = 0.3  # coalesce a burst of key presses into one small file write
TORCH_WARMUP_DELAY_S = 2.0  # after the first batch is shown; a person takes longer to score it


class BatchScreen(cold_start.ColdStartActions, GridScreen):
    BINDINGS = [
        # Short names: the whole footer fits in 80 columns.
        # Priority, like the card keys: "3 f" typed fast fits with the 3 in it, in key order.
        Binding("f,enter", "fit", "fit", key_display="f", priority=True),
        Binding("u", "undo", "undo", priority=True),
        Binding("p,space", "preview", "view", key_display="p", priority=True),
        Binding("s", "strategy", "strategy", priority=True),
        Binding("r", "reset_seen", "reset", priority=True),
        Binding("w", "save", "save", priority=True),
        Binding("v", "predictions", "preds", priority=True),
        *cold_start.BINDINGS,  # t prompt, m like, a example
        Binding("q", "quit", "quit", priority=True),
        Binding("question_mark", "help", "keys", key_display="?", show=False, priority=True),  # named in the status line
    ]

    def compose(self) -> ComposeResult:
        yield StatusLine(id="status")
        yield from self.compose_grid()
        yield Footer(compact=True)

    @property
    def status_line(self) -> StatusLine:
        return self.query_one("#status", StatusLine)

    def on_mount(self) -> None:
        self.app.start()

    def action_fit(self) -> None:
        self.app.fit()

    def action_undo(self) -> None:
        self.app.undo()

    def action_preview(self) -> None:
        i = self.focused_index()
        if i is not None:
            self.app.push_screen(PreviewScreen(self.cards(), i), lambda index: self._focus_at(index or 0))

    def action_strategy(self) -> None:
        self.app.switch_strategy()

    def action_reset_seen(self) -> None:
        self.app.reset_seen()

    def action_save(self) -> None:
        self.app.save_classifier()

    def action_predictions(self) -> None:
        self.app.show_predictions()

    def action_quit(self) -> None:
        self.app.quit_and_save()

    def action_help(self) -> None:
        self.app.push_screen(HelpScreen(KEYS_HELP))

    def on_card_changed(self, message: Card.Changed) -> None:
        self.app.entries_changed()


KEYS_HELP = """\
←/→ h/l      score −/+ 0.25            click bar    set the score there
1 2 3 - 0 +  set −1 / 0 / +1           backspace    unset
tab/j        next card                 shift+tab/k  previous card
↑/↓          a row up / down           x            skip (no label)
f / enter    fit + next batch          u            undo the last round
p / space    preview (j/k, esc)        s            next strategy
r            reset seen flags          w            save the classifier
v            predictions               q            quit, saving scores
""" + cold_start.KEYS_HELP + """

Cards start unset; unset cards get no label and may come back later;
skipped ones get no label and are not shown again."""


class TrainApp(App):
    """Drive one classifier's loop. ``open_trainer`` runs on the core thread (see core.py)."""

    TITLE = "localq"
    ENABLE_COMMAND_PALETTE = False
    BINDINGS = [Binding("ctrl+c,ctrl+q", "quit_and_save", "Quit", show=False, priority=True)]

    def __init__(self, open_trainer: Callable[[], object], root: Path, *, k: int | None = None,
                 strategy: str | None = None, thumbnails: str = "auto", colors: str | None = None,
                 cache: ThumbnailCache | None = None, background=None, graphics: TerminalGraphics | None = None):
        """``graphics``: what terminal.resolve() found (run_train asks the terminal). Without it,
        ``thumbnails`` kitty|sixel is taken as said, and auto means half-blocks: nothing is probed."""
        super().__init__()
        self.background = background  # a localq.background.BackgroundIndexer still filling the collection
        self.core = Core(open_trainer, root)
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
        self._draft_timer = None

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

    def get_default_screen(self) -> BatchScreen:
        return BatchScreen()

    @property
    def batch_screen(self) -> BatchScreen:
        return next(s for s in self.screen_stack if isinstance(s, BatchScreen))

    @property
    def busy(self) -> bool:
        return self.job is not None and self.job.is_running

    def run_job(self, label: str, work, *, freeze: bool = False) -> Worker | None:
        """Run ``work`` (a coroutine awaiting the core) as the one job in flight, showing ``label``."""
        if self.busy or self.quitting:
            work.close()
            self.notify("still working on the last step: try again in a moment", severity="warning", timeout=2)
            return None
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

    async def refresh_status(self) -> None:
        self.status = await self.core.call(ops.status)
        self.batch_screen.status_line.status = self.status

    # -- the batch on screen -----------------------------------------------------------------
    def entries(self) -> tuple[dict[int, float], list[int]]:
        """(scores to submit, ids to mark seen) from the cards."""
        scores, seen = {}, []
        for card in self.batch_screen.cards():
            if card.score is not None:
                scores[card.hit.id] = card.score
                seen.append(card.hit.id)
            elif card.skipped:
                seen.append(card.hit.id)
        return scores, seen

    async def show_batch(self, batch: Batch) -> None:
        screen = self.batch_screen
        # Reuse the cards on screen: mounting ten new ones (forty widgets) stalled the UI
        # for ~0.5 s after each fit on a busy two-core machine.
        cards = screen.cards()
        for card, hit in zip(cards, batch.hits):
            card.load(hit, batch.scores.get(hit.id), hit.id in batch.skipped)
        if len(cards) > len(batch.hits):
            await screen.grid.remove_children(cards[len(batch.hits):])
            cards = cards[:len(batch.hits)]
        elif len(cards) < len(batch.hits):
            extra = [
                Card(hit, self.cache, self.color_mode, thumb_height=screen.thumb_rows,
                     score=batch.scores.get(hit.id), skipped=hit.id in batch.skipped)
                for hit in batch.hits[len(cards):]
            ]
            await screen.grid.mount_all(extra)
            cards += extra
        screen.relayout()
        screen.query_one("#scroll").scroll_home(animate=False)
        if cards:
            screen.show_empty(None)
            screen.set_focus(cards[0])
        else:
            screen.show_empty(
                "No unseen images left for this classifier.\n\n"
                "r: reset seen flags (labels stay) and see them again    v: predictions    w: save    q: quit"
            )
        if batch.note:
            self.notify(batch.note, timeout=4)

    def entries_changed(self) -> None:
        if self._draft_timer is not None:
            self._draft_timer.stop()
        self._draft_timer = self.set_timer(DRAFT_DELAY_S, self.write_draft)

    def draft_file(self) -> Path | None:
        return ops.draft_path(self.root, self.status.name) if self.status else None

    def write_draft(self) -> None:
        path = self.draft_file()
        if path is None or self.batch_round is None or not any(isinstance(s, BatchScreen) for s in self.screen_stack):
            return  # not started yet, or already torn down
        scores, _ = self.entries()
        cards = self.batch_screen.cards()
        skipped = {c.hit.id for c in cards if c.skipped}
        try:
            if scores or skipped:
                ops.write_draft(path, Draft(self.batch_round, [c.hit.id for c in cards], scores, skipped))
            else:
                ops.drop_draft(path)
        except OSError as exc:  # a read-only collection: labels still persist at fit and quit
            self.notify(f"could not write the draft file: {exc}", severity="warning")

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
            await self.core.call(ops.set_strategy, self.strategy_override)
        await self.refresh_status()
        draft = ops.read_draft(self.draft_file())
        self.batch_screen.status_line.busy = "searching"
        batch = await self.core.call(ops.first_batch, self.k, None, draft)
        self.batch_round = self.status.round
        await self.show_batch(batch)
        # The first fit imports torch (seconds on a busy machine): do it while the user looks
        # at the first batch, once its thumbnails are drawn (the import holds the GIL a lot).
        self.set_timer(TORCH_WARMUP_DELAY_S, lambda: threading.Thread(target=_import_torch, daemon=True).start())

    def fit(self) -> None:
        scores, seen = self.entries()
        if not scores:
            self.notify("score at least one image first (←/→, 1/2/3), or x to skip one", severity="warning", timeout=3)
            return
        self.run_job(f"fitting on {len(scores)} new labels", self._fit(scores, seen), freeze=True)

    async def _fit(self, scores: dict[int, float], seen: list[int]) -> None:
        batch = await self.core.call(ops.fit, scores, seen, self.k, None)
        ops.drop_draft(self.draft_file())
        await self.refresh_status()
        self.batch_round = self.status.round
        await self.show_batch(batch)
        cold_start.after_fit(self, scores)

    def undo(self) -> None:
        scores, _ = self.entries()
        if scores and not self.busy:
            self.push_screen(
                ConfirmScreen(f"Drop the {len(scores)} scores set on this batch and undo the last round?"),
                lambda yes: yes and self.run_job("undoing", self._undo()),
            )
        else:
            self.run_job("undoing", self._undo())

    async def _undo(self) -> None:
        batch = await self.core.call(ops.undo)
        await self.refresh_status()
        self.batch_round = self.status.round
        await self.show_batch(batch)
        self.write_draft()

    def switch_strategy(self) -> None:
        from localq.sampling import STRATEGIES

        if self.status is None:
            return
        current = self.status.strategy
        new = STRATEGIES[(STRATEGIES.index(current) + 1) % len(STRATEGIES)] if current in STRATEGIES else STRATEGIES[0]
        scores, seen = self.entries()
        self.run_job(f"strategy {new}", self._switch_strategy(new, refetch=not (scores or seen)))

    async def _switch_strategy(self, strategy: str, refetch: bool) -> None:
        await self.core.call(ops.set_strategy, strategy)
        await self.refresh_status()
        if refetch:
            await self.show_batch(await self.core.call(ops.next_batch, self.k, None))
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
        n = await self.core.call(ops.reset_seen)
        scores, seen = self.entries()
        if not (scores or seen):
            await self.show_batch(await self.core.call(ops.next_batch, self.k, None))
        self.notify(f"{n} images can be retrieved again", timeout=3)

    def default_save_path(self) -> Path:
        name = self.status.name if self.status else "classifier"
        return self.root / "classifiers" / f"{name}.safetensors"

    def save_classifier(self) -> None:
        self.push_screen(SaveScreen(self.default_save_path()), lambda path: path and self.run_job("saving", self._save(path)))

    async def _save(self, path: str) -> None:
        saved = await self.core.call(ops.save, path)
        self.notify(f"saved {saved}", timeout=6)

    def show_predictions(self) -> None:
        if self.status is None:
            return

        async def load(limit: int):
            return await self.core.call(ops.predictions, limit)

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
        scores, _ = self.entries()
        message = None
        if scores and self.batch_round is not None:
            _, seen = self.entries()
            self.batch_screen.status_line.busy = f"saving {len(scores)} labels"
            try:
                await self.core.call(ops.submit_only, scores, seen)
                ops.drop_draft(self.draft_file())
            except LocalqError as exc:
                self.write_draft()
                message = f"labels kept as a draft for next time: {exc}"
        else:
            self.write_draft()  # skips alone are not a round: keep them for next time
        if self.background is not None:
            self.batch_screen.status_line.busy = "stopping the indexer (everything indexed is saved)"
            await asyncio.to_thread(self.background.stop)
        self.exit(message=message)

    async def on_unmount(self) -> None:
        if self.painter is not None:
            self._write_graphics(self.painter.clear())
        self.cache.close()
        if self.background is not None:
            await asyncio.to_thread(self.background.stop)
        await asyncio.to_thread(self.core.close)


def _import_torch() -> None:
    try:
        import torch  # noqa: F401
    except Exception:  # the fit itself will report it
        pass


def run_train(collection, trainer, *, k: int | None, strategy: str | None, thumbnails: str = "auto",
              background=None) -> None:
    """Open the labeling UI on ``trainer`` (a classifier of ``collection``) and run it until quit.

    The app opens its own connection to the collection on its core thread (SQLite
    connections are per thread); ``collection`` stays open for the caller to close.
    ``background``: a started BackgroundIndexer; the first batch waits for its first
    few hundred images, later batches retrieve from whatever is indexed by then."""
    from localq.tui.terminal import resolve

    graphics = resolve(thumbnails)  # asks the terminal now: once Textual runs, it reads the answers as keys
    TrainApp(trainer_opener(collection, trainer.name, background), Path(collection.root), k=k, strategy=strategy,
             thumbnails=thumbnails, background=background, graphics=graphics).run()


def trainer_opener(collection, name: str, background=None) -> Callable[[], object]:
    def open_trainer():
        from localq.trainer import Trainer

        # The caller's vector index is already in memory: the core thread takes it over.
        coll = collection.reopen()
        if background is not None and coll.count_live() < background.warmup:
            background.wait_for()  # a first batch from a handful of images would mean little
        return Trainer.open(coll, name)

    return open_trainer
