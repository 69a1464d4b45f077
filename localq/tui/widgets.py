"""Widgets of the labeling UI: the thumbnail, the score control, the image card, the status line."""

from __future__ import annotations

import asyncio

from rich.text import Text
from textual import events
from textual.binding import Binding
from textual.message import Message
from textual.reactive import reactive
from textual.strip import Strip
from textual.widget import Widget

from localq.tui.bridge import Status
from localq.tui.thumbnails import TRUECOLOR, ThumbnailCache, box_for, file_name

STEP = 0.25
SPINNER = "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"


def snap(value: float) -> float:
    """Clamp to [-1, 1] and round to the 0.25 grid (also removes float drift from repeated steps)."""
    return max(-1.0, min(1.0, round(value / STEP) * STEP))


def format_score(value: float | None) -> str:
    return "unset" if value is None else f"{value:+.2f}"


class Thumbnail(Widget):
    """An image at whatever size the layout gives it, decoded off the UI thread.

    Half-blocks by default; when the app has a graphics painter (kitty or sixel, see
    graphics.py) the cells stay blank and the painter draws the pixels over them."""

    DEFAULT_CSS = """
    Thumbnail { width: 1fr; height: 8; }
    """

    path: reactive[str | None] = reactive(None)
    dimmed: reactive[bool] = reactive(False)

    def __init__(self, path: str | None, cache: ThumbnailCache, colors: str = TRUECOLOR, **kwargs):
        super().__init__(**kwargs)
        self.cache = cache
        self.color_mode = colors
        self.set_reactive(Thumbnail.path, path)
        self._loading: tuple | None = None
        self._placement: int | None = None

    @property
    def painter(self):
        return getattr(self.app, "painter", None)

    def _key(self) -> tuple | None:
        w, h = self.size
        if not self.path or w <= 0 or h <= 0:
            return None
        if self.painter is not None:
            return self.painter.key(self.path, w, h, self.dimmed)
        return self.path, box_for(w, h), w, h, self.color_mode

    def _cached(self, key: tuple):
        return self.painter.cached(key) if self.painter is not None else self.cache.cached_lines(*key)

    def prepared(self):
        """The painter's image for the current path and size, if ready (None otherwise)."""
        key = self._key()
        return self._cached(key) if key is not None and self.painter is not None else None

    def on_mount(self) -> None:
        if self.painter is not None:
            self._placement = self.painter.register(self)
        self._ensure_rendered()

    def on_unmount(self) -> None:
        if self._placement is not None and self.painter is not None:
            self.painter.unregister(self._placement)

    def on_resize(self) -> None:
        self._ensure_rendered()

    def watch_path(self) -> None:
        self._ensure_rendered()
        self.refresh()

    def watch_dimmed(self) -> None:
        self.watch_path()

    @property
    def ready(self) -> bool:
        key = self._key()
        return key is None or self._cached(key) is not None

    def _ensure_rendered(self) -> None:
        key = self._key()
        if key is None or self._loading == key or self._cached(key) is not None:
            return
        self._loading = key
        self.run_worker(self._render(key), group="thumbnail", exclusive=True)

    async def _render(self, key: tuple) -> None:
        loop = asyncio.get_running_loop()
        if self.painter is not None:
            await loop.run_in_executor(self.cache.executor, self.painter.prepare, key)
        else:
            await loop.run_in_executor(self.cache.executor, self.cache.render, *key)
        if self._loading == key:
            self._loading = None
        self.refresh()

    def render_line(self, y: int) -> Strip:
        w, _ = self.size
        key = self._key()
        lines = self._cached(key) if key else None
        if not isinstance(lines, list) or y >= len(lines):  # not ready, or pixels the painter draws
            return Strip.blank(w, self.rich_style)
        return Strip(lines[y], w)


class ScoreControl(Widget):
    """A -1..+1 slider in 0.25 steps; ``None`` means unset. A click sets the value under the pointer."""

    DEFAULT_CSS = """
    ScoreControl { height: 1; width: 1fr; }
    """

    value: reactive[float | None] = reactive(None)
    VALUE_WIDTH = 6  # " +0.25"

    class Clicked(Message):
        def __init__(self, control: "ScoreControl", value: float):
            super().__init__()
            self.score_control = control
            self.value = value

    def track_width(self) -> int:
        return max(3, self.size.width - self.VALUE_WIDTH)

    def value_at(self, x: int) -> float:
        """The score that a click at column ``x`` means: ends of the track are -1 and +1."""
        track = self.track_width()
        x = max(0, min(track - 1, x))
        return snap(-1.0 + 2.0 * x / (track - 1))

    def position_of(self, value: float) -> int:
        return round((value + 1.0) / 2.0 * (self.track_width() - 1))

    def render(self) -> Text:
        track = self.track_width()
        value = self.value
        centre = (track - 1) // 2
        colour = "grey50" if value is None else ("red3" if value < 0 else "green3" if value > 0 else "yellow3")
        cells = []
        marker = None if value is None else self.position_of(value)
        for x in range(track):
            if marker is not None and x == marker:
                cells.append(("●", f"bold {colour}"))
            elif marker is not None and min(centre, marker) <= x <= max(centre, marker):
                cells.append(("━", colour))
            elif x == centre:
                cells.append(("┼", "grey50"))
            else:
                cells.append(("─", "grey35"))
        text = Text.assemble(*cells)
        text.append(
            " " + format_score(value).rjust(self.VALUE_WIDTH - 1),
            style=f"bold {colour}" if value is not None else "grey50",
        )
        return text

    def on_click(self, event: events.Click) -> None:
        event.stop()
        self.post_message(self.Clicked(self, self.value_at(event.x)))


class Caption(Widget):
    """File name on the left, the classifier's score (w·x + b) on the right, named "model":
    the same number the predictions view (v) shows, and not the person's −1..+1 score below it.
    A batch is drawn where the model is unsure, so its numbers sit near 0 while the top
    predictions run to +3 or +4; the word says they are one scale."""

    DEFAULT_CSS = """
    Caption { height: 1; width: 1fr; color: $text-muted; }
    """

    def __init__(self, name: str, model_score: float | None, **kwargs):
        super().__init__(**kwargs)
        self.file_label = name
        self.model_score = model_score

    def render(self) -> Text:
        right = "" if self.model_score is None else f"{self.model_score:+.2f}"
        if right and self.size.width >= len(right) + 12:  # room for the word and a few letters of the name
            right = f"model {right}"
        room = max(1, self.size.width - len(right) - 1)
        name = self.file_label if len(self.file_label) <= room else self.file_label[: max(1, room - 1)] + "…"
        return Text.assemble(name.ljust(room), " ", (right, "bold"))


# The scoring keys, the same on a card and in the full-size preview (PreviewScreen).
SCORE_BINDINGS = [
    Binding("left,h", "nudge(-0.25)", "−", key_display="←/h", show=False, priority=True),
    Binding("right,l", "nudge(0.25)", "+", key_display="→/l", show=False, priority=True),
    Binding("1,minus", "set_score(-1)", "−1", show=False, priority=True),
    Binding("2,0", "set_score(0)", "0", show=False, priority=True),
    Binding("3,plus,equals_sign", "set_score(1)", "+1", show=False, priority=True),
    Binding("x", "skip", "skip", priority=True),
]


class Card(Widget, can_focus=True):
    """One image of the batch: thumbnail, caption and score control. Focused = highlighted.

    Score keys are priority bindings: they run in the app's own key loop on whichever card
    has focus at that moment, so a fast burst of keys never lands on the wrong card."""

    DEFAULT_CSS = """
    Card {
        height: auto;
        border: round $panel-lighten-2;
        padding: 0 0;
    }
    Card:focus { border: heavy $accent; background: $boost; }
    Card.-positive { border: round $success; }
    Card.-negative { border: round $error; }
    Card.-neutral { border: round $warning; }
    Card.-positive:focus { border: heavy $success; }
    Card.-negative:focus { border: heavy $error; }
    Card.-neutral:focus { border: heavy $warning; }
    Card.-skipped { opacity: 60%; }
    Card.-skipped Caption { text-style: strike; }
    """

    BINDINGS = SCORE_BINDINGS + [Binding("backspace,delete", "clear", "unset", show=False, priority=True)]

    score: reactive[float | None] = reactive(None)
    skipped: reactive[bool] = reactive(False)

    class Changed(Message):
        def __init__(self, card: "Card"):
            super().__init__()
            self.card = card

    def __init__(
        self,
        hit,
        cache: ThumbnailCache,
        colors: str,
        *,
        thumb_height: int = 8,
        editable: bool = True,
        score: float | None = None,
        skipped: bool = False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.hit = hit
        self.editable = editable
        self.thumbnail = Thumbnail(hit.path, cache, colors)
        self.thumbnail.styles.height = thumb_height
        self.caption = Caption(file_name(hit.path), hit.score)
        self.control = ScoreControl() if editable else None
        self.set_reactive(Card.score, score)
        self.set_reactive(Card.skipped, skipped)

    def compose(self):
        yield self.thumbnail
        yield self.caption
        if self.control is not None:
            yield self.control

    def on_mount(self) -> None:
        self._show()

    def load(self, hit, score: float | None = None, skipped: bool = False) -> None:
        """Show another image in this card: reusing cards costs far less than mounting new ones."""
        self.hit = hit
        self.caption.file_label, self.caption.model_score = file_name(hit.path), hit.score
        self.caption.refresh()
        self.thumbnail.path = hit.path
        self.set_reactive(Card.score, score)
        self.set_reactive(Card.skipped, skipped)
        self._show()

    # -- state ---------------------------------------------------------------------------------
    def watch_score(self) -> None:
        self._show()
        self.post_message(self.Changed(self))

    def watch_skipped(self) -> None:
        self._show()
        self.post_message(self.Changed(self))

    def _show(self) -> None:
        if self.control is not None:
            self.control.value = self.score
        s = self.score
        self.set_class(s is not None and s > 0, "-positive")
        self.set_class(s is not None and s < 0, "-negative")
        self.set_class(s is not None and s == 0, "-neutral")
        self.set_class(self.skipped, "-skipped")
        self.thumbnail.dimmed = self.skipped

    def set_value(self, value: float | None) -> None:
        if not self.editable or getattr(self.screen, "frozen", False):
            return
        self.skipped = False
        self.score = None if value is None else snap(value)

    # -- actions ------------------------------------------------------------------------------
    def check_action(self, action: str, parameters) -> bool | None:
        if action in ("nudge", "set_score", "clear", "skip"):
            return self.editable and not getattr(self.screen, "frozen", False)
        return True

    def action_nudge(self, delta: float) -> None:
        self.set_value((self.score or 0.0) + delta)

    def action_set_score(self, value: float) -> None:
        self.set_value(value)

    def action_clear(self) -> None:
        self.set_value(None)

    def action_skip(self) -> None:
        """Skip: no label, and not offered again (it is marked seen at the next fit). Toggles."""
        if not self.editable or getattr(self.screen, "frozen", False):
            return
        self.score = None
        self.skipped = not self.skipped

    def on_score_control_clicked(self, message: ScoreControl.Clicked) -> None:
        message.stop()
        self.screen.set_focus(self)
        self.set_value(message.value)


def phase_text(s: Status) -> str | None:
    """What the loop is doing: "start: the best matches first" (nothing labeled yet),
    "exploring: no positive yet" (spreading batches over the collection), "refining"
    (searching near the classifier); with the cold hint when stuck."""
    if s.phase is None:
        return s.hint
    if s.hint:  # "exploring · no positives for 2 rounds: try t, m or a"
        return f"{s.phase} · {s.hint}"
    if s.strategy != "auto":
        return s.phase
    if s.phase == "start":
        return "start: the best matches first"
    if s.phase == "exploring":
        return "exploring: no positive yet" if s.positives == 0 else "exploring: the last batch held no positive"
    return s.phase


class StatusLine(Widget):
    """classifier · round · +/- labels · AP · strategy, and a busy indicator on the right."""

    DEFAULT_CSS = """
    StatusLine { height: 1; background: $panel; color: $text; padding: 0 1; }
    """

    status: reactive[Status | None] = reactive(None)
    busy: reactive[str | None] = reactive(None)
    frame: reactive[int] = reactive(0)
    extra: reactive[str] = reactive("")

    def on_mount(self) -> None:
        self._timer = self.set_interval(0.1, self._tick, pause=True)

    def watch_busy(self, busy: str | None) -> None:
        if not hasattr(self, "_timer"):
            return
        if busy:
            self._timer.resume()
        else:
            self._timer.pause()

    def _tick(self) -> None:
        self.frame = (self.frame + 1) % len(SPINNER)

    def render(self) -> Text:
        s = self.status
        text = Text()
        if s is None:
            text.append("opening…", style="italic")
        else:
            text.append(s.name, style="bold")
            text.append(f"  round {s.round}  ")
            text.append(f"+{s.positives}", style="green3")
            text.append(" / ")
            text.append(f"−{s.negatives}", style="red3")
            phase = phase_text(s)
            if phase:  # before AP and strategy: a narrow terminal truncates those first
                text.append(f"  {phase}", style="bold yellow" if s.hint else "cyan")
            if s.ap is not None:
                text.append(f"  AP {s.ap:.3f}", style="bold")
                text.append(f" ({s.target})", style="dim")
            text.append(f"  {s.strategy} ×{s.k}", style="dim")
        if self.extra:
            text.append(f"  {self.extra}", style="dim")
        if self.busy:
            right = Text(f"{SPINNER[self.frame]} {self.busy}", style="bold yellow")
        else:
            right = Text("? keys", style="dim")
        room = self.size.width - text.cell_len - right.cell_len
        if room < 1:
            text.truncate(max(0, self.size.width - right.cell_len - 1), overflow="ellipsis")
            room = self.size.width - text.cell_len - right.cell_len
        text.append(" " * max(1, room))
        text.append_text(right)
        return text
