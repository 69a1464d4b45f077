"""Screens: the card grid base (layout + focus keys), preview, predictions, and small prompts."""

from __future__ import annotations

import math
from pathlib import Path

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Grid, Vertical, VerticalScroll
from textual.screen import ModalScreen, Screen
from textual.widgets import Footer, Input, Static

from localq.display import printable
from localq.tui.widgets import SCORE_BINDINGS, Card, ScoreControl, StatusLine, Thumbnail, format_score, snap

MIN_CARD_WIDTH = 24  # cells, border included: 3 columns at 80x24
MIN_THUMB_ROWS = 6  # below this, scrolling beats shrinking the images further
CARD_CHROME = 4  # border top + bottom, caption, score control


def grid_layout(
    width: int, height: int, n_cards: int, chrome: int = CARD_CHROME, *, fit_all: bool = True
) -> tuple[int, int]:
    """(columns, thumbnail rows) for ``n_cards`` in a width x height viewport.

    With ``fit_all`` (a batch), prefers the largest square thumbnails that show the whole
    batch at once; when even small ones would not fit (80x24 with 10 cards), it keeps
    thumbnails square and large enough to recognise, and the grid scrolls. Without it (a
    long list such as predictions), it always uses as many columns as fit."""
    max_cols = max(1, width // MIN_CARD_WIDTH)
    n = max(1, n_cards)
    best: tuple[int, int] | None = None
    for cols in range(1, max_cols + 1) if fit_all else ():
        rows_of_cards = math.ceil(n / cols)
        square = (width // cols - 2) // 2  # thumbnail cells: twice as wide as tall looks square
        fits = height // rows_of_cards - chrome
        rows = min(square, fits)
        if rows >= MIN_THUMB_ROWS and (best is None or rows > best[1]):
            best = (cols, rows)
    if best is not None:
        return best
    cols = min(max_cols, n) if fit_all else max_cols
    square = (width // cols - 2) // 2
    return cols, max(2, min(square, height - chrome))


class GridScreen(Screen):
    """A screen whose body is a scrolling grid of cards; moves focus with keys, at once."""

    DEFAULT_CSS = """
    GridScreen #scroll { scrollbar-size-vertical: 1; scrollbar-gutter: stable; }
    GridScreen #cards { grid-size: 3; grid-gutter: 0 0; height: auto; }
    GridScreen #empty { display: none; padding: 1 2; color: $text-muted; }
    GridScreen.-empty #empty { display: block; }
    GridScreen.-empty #scroll { display: none; }
    """

    # Priority: these run in the app's key loop, so the next key in a burst already sees the new focus.
    BINDINGS = [
        Binding("tab,j", "focus_step(1)", "next", key_display="tab/j", show=False, priority=True),
        Binding("shift+tab,k", "focus_step(-1)", "previous", show=False, priority=True),
        Binding("down", "focus_row(1)", "row down", show=False, priority=True),
        Binding("up", "focus_row(-1)", "row up", show=False, priority=True),
        Binding("home", "focus_index(0)", show=False, priority=True),
        Binding("end", "focus_index(-1)", show=False, priority=True),
    ]

    columns = 3
    thumb_rows = 8
    fit_all = True
    frozen = False  # True while a fit is running: the cards on screen are being submitted

    def compose_grid(self) -> ComposeResult:
        with VerticalScroll(id="scroll"):
            yield Grid(id="cards")
        yield Static("", id="empty")

    @property
    def grid(self) -> Grid:
        return self.query_one("#cards", Grid)

    def cards(self) -> list[Card]:
        return list(self.grid.query(Card))

    def on_resize(self) -> None:
        self.relayout()

    def relayout(self) -> None:
        scroll = self.query_one("#scroll")
        width = (scroll.size.width or self.size.width) - 1  # the scrollbar gutter
        height = scroll.size.height or max(1, self.size.height - 2)
        cards = self.cards()
        self.columns, self.thumb_rows = grid_layout(width, height, len(cards), fit_all=self.fit_all)
        self.grid.styles.grid_size_columns = self.columns
        for card in cards:
            card.thumbnail.styles.height = self.thumb_rows
        if self.focused in cards:  # a resize must not leave the focused card out of sight
            self.call_after_refresh(self.focused.scroll_visible, animate=False)

    def show_empty(self, message: str | None) -> None:
        self.set_class(message is not None, "-empty")
        self.query_one("#empty", Static).update(message or "")

    def focused_index(self) -> int | None:
        cards = self.cards()
        return cards.index(self.focused) if self.focused in cards else None

    def _focus_at(self, index: int) -> None:
        cards = self.cards()
        if cards:
            self.set_focus(cards[max(0, min(len(cards) - 1, index))])

    def action_focus_step(self, step: int) -> None:
        i = self.focused_index()
        self._focus_at(0 if i is None else (i + step) % len(self.cards()))

    def action_focus_row(self, direction: int) -> None:
        i = self.focused_index()
        if i is None:
            self._focus_at(0)
            return
        target = i + direction * self.columns
        if 0 <= target < len(self.cards()):
            self._focus_at(target)

    def action_focus_index(self, index: int) -> None:
        self._focus_at(index if index >= 0 else len(self.cards()) - 1)


class PreviewScreen(Screen):
    """The focused image at the size of the terminal; j/k walk through the grid, score keys still work."""

    DEFAULT_CSS = """
    PreviewScreen #big { width: 1fr; height: 1fr; }
    PreviewScreen #info { height: 1; padding: 0 1; background: $panel; }
    PreviewScreen ScoreControl { margin: 0 1; }
    """

    BINDINGS = [
        Binding("escape,p,space,enter,q", "close", "back", key_display="esc/p", priority=True),
        Binding("tab,j,down", "step(1)", "next", key_display="j", priority=True),
        Binding("shift+tab,k,up", "step(-1)", "previous", key_display="k", priority=True),
    ] + SCORE_BINDINGS

    def __init__(self, cards: list[Card], index: int):
        super().__init__()
        self.items = cards
        self.index = index
        card = cards[index]
        self.big = Thumbnail(card.hit.path, card.thumbnail.cache, card.thumbnail.color_mode, id="big")
        self.control = ScoreControl() if card.editable else None

    def compose(self) -> ComposeResult:
        yield Static("", id="info")
        yield self.big
        if self.control is not None:
            yield self.control
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self._show()

    @property
    def card(self) -> Card:
        return self.items[self.index]

    def _show(self) -> None:
        card = self.card
        self.big.path = card.hit.path
        hit = card.hit
        info = Text.assemble(
            (f"{self.index + 1}/{len(self.items)}  ", "dim"),
            (printable(hit.path), "bold"),
            (f"  id {hit.id}" if hit.id is not None else "", "dim"),
            (f"  model {hit.score:+.3f}" if hit.score is not None else "", ""),
        )
        if card.editable:
            info.append(f"  yours {format_score(card.score).strip()}" + ("  (skipped)" if card.skipped else ""), "bold")
        self.query_one("#info", Static).update(info)
        if self.control is not None:
            self.control.value = card.score

    def check_action(self, action: str, parameters) -> bool | None:
        if action in ("nudge", "set_score", "skip"):
            return self.card.editable
        return True

    def action_close(self) -> None:
        self.dismiss(self.index)

    def action_step(self, step: int) -> None:
        self.index = (self.index + step) % len(self.items)
        self._show()

    def action_nudge(self, delta: float) -> None:
        self.card.set_value((self.card.score or 0.0) + delta)
        self._show()

    def action_set_score(self, value: float) -> None:
        self.card.set_value(value)
        self._show()

    def action_skip(self) -> None:
        self.card.action_skip()
        self._show()

    def on_score_control_clicked(self, message: ScoreControl.Clicked) -> None:
        self.card.set_value(snap(message.value))
        self._show()


class PredictionsScreen(GridScreen):
    """The current classifier's top positives over the collection, as a browsable grid."""

    PAGE = 48
    fit_all = False

    BINDINGS = [
        Binding("escape,v,q", "close", "back", key_display="esc/v", priority=True),
        Binding("p,space,enter", "preview", "view", key_display="p", priority=True),
        Binding("m", "more", "more"),
    ]

    def __init__(self, load, cache, colors: str, status=None):
        """``load(limit)`` is an awaitable returning Predictions (the app runs it on the core thread)."""
        super().__init__()
        self.load = load
        self.cache = cache
        self.color_mode = colors
        self.app_status = status
        self.limit = self.PAGE

    def compose(self) -> ComposeResult:
        yield StatusLine(id="pstatus")
        yield from self.compose_grid()
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self.query_one(StatusLine).status = self.app_status
        self.run_worker(self._load(), exclusive=True, group="predictions")

    async def _load(self) -> None:
        status = self.query_one(StatusLine)
        status.busy = "scoring the collection"
        try:
            preds = await self.load(self.limit)
        finally:
            status.busy = None
        focused = self.focused_index() or 0
        await self.grid.remove_children()
        cards = [
            Card(_as_hit(p), self.cache, self.color_mode, editable=False, thumb_height=self.thumb_rows) for p in preds
        ]
        await self.grid.mount_all(cards)
        more = " (m: more)" if len(preds) >= self.limit else ""
        status.extra = f"· predictions: top {len(preds)} by model score (> 0, as on the cards){more}"
        self.show_empty(None if preds else "No image scores above 0 yet: label a few positives and fit.")
        self.relayout()
        if cards:
            self._focus_at(focused)

    def action_close(self) -> None:
        self.dismiss(None)

    def action_more(self) -> None:
        self.limit += self.PAGE
        self.run_worker(self._load(), exclusive=True, group="predictions")

    def action_preview(self) -> None:
        i = self.focused_index()
        if i is not None:
            self.app.push_screen(PreviewScreen(self.cards(), i), lambda index: self._focus_at(index or 0))


def _as_hit(prediction):
    from localq.collection.collection import Hit

    return Hit(prediction.id, prediction.score, prediction.path, prediction.label)


class ConfirmScreen(ModalScreen[bool]):
    DEFAULT_CSS = """
    ConfirmScreen { align: center middle; }
    ConfirmScreen > Vertical { width: 60; height: auto; border: thick $warning; background: $surface; padding: 1 2; }
    """
    BINDINGS = [
        Binding("y,enter", "answer(True)", "Yes", priority=True),
        Binding("n,escape", "answer(False)", "No", priority=True),
    ]

    def __init__(self, question: str):
        super().__init__()
        self.question = question

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Static(self.question)
            yield Static(Text("y: yes    n / esc: no", style="dim"))

    def action_answer(self, yes: bool) -> None:
        self.dismiss(yes)


class SaveScreen(ModalScreen[tuple[str, str] | None]):
    """Where the classifier goes: its file, keywords in the photos' XMP sidecars, or an image
    folder; each with what it will touch, counted before anything is written.

    Dismisses with (action, path): ("file", PATH), ("tag", ""), ("imagefolder", DIR), or None.
    No path field has focus until tab gives it one, so the dialog's keys (w again saves) never
    land in a path; with a field focused, keys type into it and enter runs its action."""

    DEFAULT_CSS = """
    SaveScreen { align: center middle; }
    SaveScreen > Vertical { width: 80%; max-width: 110; height: auto; border: thick $accent; background: $surface; padding: 1 2; }
    SaveScreen Input { margin: 0 0 1 0; }
    """
    AUTO_FOCUS = ""  # None would mean the app's "*": the first path field
    BINDINGS = [
        Binding("escape", "cancel", "Cancel", priority=True),
        Binding("w,enter", "choose('file')", "save file"),
        Binding("t", "choose('tag')", "tag photos"),
        Binding("i", "choose('imagefolder')", "image folder"),
    ]

    def __init__(self, default: Path, folder: Path | None = None, counts=None):
        super().__init__()
        self.default = default
        self.folder = folder
        self.counts = counts  # bridge.SaveCounts, or None: the file alone is offered

    def compose(self) -> ComposeResult:
        c = self.counts
        with Vertical():
            yield Static("w / enter: save the classifier file (.safetensors, or .npy for weights + .json) to")
            yield Input(str(self.default), id="path", select_on_focus=False)
            if c is not None:
                yield Static(
                    Text(
                        f"t: write the keyword {printable(c.keyword)!r} into XMP sidecars beside the photos: "
                        f"{c.tag_changes} sidecar{'s' * (c.tag_changes != 1)} to change "
                        f"({c.tag_added} gain it, {c.tag_updated} updated, {c.tag_removed} lose it; "
                        f"{c.tag_positives} of {c.photos} photos positive)"
                        + (f"; {c.tag_problems} cannot be used" if c.tag_problems else "")
                        + "\n"
                    )
                )
                yield Static(
                    f"i: export an image folder from the labels ({c.folder_positive} "
                    f"file{'s' * (c.folder_positive != 1)} in positive/, {c.folder_negative} in negative/, "
                    "hard links where possible) to"
                )
                yield Input(str(self.folder), id="folder", select_on_focus=False)
            yield Static(Text("tab: edit a path    esc: cancel", style="dim"))

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self.action_choose("file" if event.input.id == "path" else "imagefolder")

    def action_choose(self, action: str) -> None:
        if action != "file" and self.counts is None:
            return
        if action == "tag":
            self.dismiss(("tag", ""))
            return
        value = self.query_one("#path" if action == "file" else "#folder", Input).value.strip()
        if value:
            self.dismiss((action, value))

    def action_cancel(self) -> None:
        self.dismiss(None)


class HelpScreen(ModalScreen[None]):
    """The key list, over the grid; any of esc / ? / q / enter closes it."""

    DEFAULT_CSS = """
    HelpScreen { align: center middle; }
    HelpScreen > Vertical { width: 76; max-width: 100%; height: auto; max-height: 100%;
                            border: thick $accent; background: $surface; padding: 0 1; }
    """
    BINDINGS = [Binding("escape,question_mark,q,enter,space", "close", "close", priority=True)]

    def __init__(self, text: str):
        super().__init__()
        self.text = text

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Static(Text(self.text))

    def action_close(self) -> None:
        self.dismiss(None)
