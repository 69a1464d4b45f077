"""The batch screen: the cards of one batch, the keys of the loop, and the draft of what was entered.

The screen owns what is on it: it loads a Batch into the cards (reusing them), reads the
entries back for a fit, and writes them to a draft file as the user scores (drafts.py).
The loop itself (fit, undo, jobs on the trainer thread, quitting) is the app's: each key
here asks the app.
"""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import Footer

from localq.tui import cold_start, drafts
from localq.tui.bridge import Batch
from localq.tui.screens import GridScreen, HelpScreen, PreviewScreen
from localq.tui.widgets import Card, StatusLine

DRAFT_DELAY_S = 0.3  # coalesce a burst of key presses into one small file write

KEYS_HELP = (
    """\
←/→ h/l      score −/+ 0.25            click bar    set the score there
1 2 3 - 0 +  set −1 / 0 / +1           backspace    unset
tab/j        next card                 shift+tab/k  previous card
↑/↓          a row up / down           x            skip (no label)
f / enter    fit + next batch          u            undo the last round
p / space    preview (j/k, esc)        s            next strategy
r            reset seen flags          w            save: file, photo keywords, image folder
v            predictions               q            quit, saving scores
"""
    + cold_start.KEYS_HELP
    + """

Cards start unset; unset cards get no label and may come back later;
skipped ones get no label and are not shown again.
"model +0.12" on a card is the classifier's score w·x + b (> 0: predicted
positive), the scale of the predictions view (v); batches are drawn where
it is unsure, so their numbers sit near 0."""
)


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
        Binding(
            "question_mark", "help", "keys", key_display="?", show=False, priority=True
        ),  # named in the status line
    ]

    _draft_timer = None

    def compose(self) -> ComposeResult:
        yield StatusLine(id="status")
        yield from self.compose_grid()
        yield Footer(compact=True)

    @property
    def status_line(self) -> StatusLine:
        return self.query_one("#status", StatusLine)

    def on_mount(self) -> None:
        self.app.start()

    # -- keys: each asks the app ---------------------------------------------------------------
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

    # -- the batch on screen -----------------------------------------------------------------
    def entries(self) -> tuple[dict[int, float], list[int]]:
        """(scores to submit, ids to mark seen) from the cards."""
        scores, seen = {}, []
        for card in self.cards():
            if card.score is not None:
                scores[card.hit.id] = card.score
                seen.append(card.hit.id)
            elif card.skipped:
                seen.append(card.hit.id)
        return scores, seen

    async def show_batch(self, batch: Batch) -> None:
        # Reuse the cards on screen: mounting ten new ones (forty widgets) stalled the UI
        # for ~0.5 s after each fit on a busy two-core machine.
        cards = self.cards()
        for card, hit in zip(cards, batch.hits):
            card.load(hit, batch.scores.get(hit.id), hit.id in batch.skipped)
        if len(cards) > len(batch.hits):
            await self.grid.remove_children(cards[len(batch.hits) :])
            cards = cards[: len(batch.hits)]
        elif len(cards) < len(batch.hits):
            extra = [
                Card(
                    hit,
                    self.app.cache,
                    self.app.color_mode,
                    thumb_height=self.thumb_rows,
                    score=batch.scores.get(hit.id),
                    skipped=hit.id in batch.skipped,
                )
                for hit in batch.hits[len(cards) :]
            ]
            await self.grid.mount_all(extra)
            cards += extra
        self.relayout()
        self.query_one("#scroll").scroll_home(animate=False)
        if cards:
            self.show_empty(None)
            self.set_focus(cards[0])
        else:
            self.show_empty(
                "No unseen images left for this classifier.\n\n"
                "r: reset seen flags (labels stay) and see them again    v: predictions    w: save    q: quit"
            )
        if batch.note:
            self.app.notify(batch.note, timeout=4)

    # -- the draft -------------------------------------------------------------------------------
    def on_card_changed(self, message: Card.Changed) -> None:
        if self._draft_timer is not None:
            self._draft_timer.stop()
        # The app's timer, not the screen's: it runs the same while the preview is on top.
        self._draft_timer = self.app.set_timer(DRAFT_DELAY_S, self.write_draft)

    def write_draft(self) -> None:
        app = self.app
        path = app.draft_file()
        if path is None or app.batch_round is None or self not in app.screen_stack:
            return  # not started yet, or already torn down
        scores, _ = self.entries()
        cards = self.cards()
        skipped = {c.hit.id for c in cards if c.skipped}
        try:
            if scores or skipped:
                drafts.write_draft(path, drafts.Draft(app.batch_round, [c.hit.id for c in cards], scores, skipped))
            else:
                drafts.drop_draft(path)
        except OSError as exc:  # a read-only collection: labels still persist at fit and quit
            app.notify(f"could not write the draft file: {exc}", severity="warning")
