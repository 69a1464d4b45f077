"""Keys for a person to break a cold start: t types another prompt, m asks for more like the
focused card, a adds an example image; and the plain notice that a batch held no positives.

The sampling strategies only ever look near the classifier's own query. When the prompt
meant nothing to the encoder, every batch comes back negative and the loop cannot find
its way out alone; a person can: name the concept differently, point at the one good
image seen so far, or bring a picture of it. Each of these is a round in the history
like any other (``prompt:<text>``, ``like:<id>``, ``example:<file>``), so undo and
``localq history`` treat them as usual.
"""

from __future__ import annotations

from pathlib import Path

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Input, Static

from localq.tui import drafts
from localq.tui.bridge import Batch

# Spliced into the batch screen's bindings. One footer entry for the three: at 80 columns
# the footer has 13 cells left, and three entries would push "q quit" off the screen. The
# help (?) lists each, and the status line names each while the loop is cold.
BINDINGS = [
    Binding("t", "ask_prompt", "steer", key_display="t/m/a", priority=True),
    Binding("m", "more_like", "more like this", show=False, priority=True),
    Binding("a", "ask_example", "add an example", show=False, priority=True),
]

KEYS_HELP = """\
t            type another prompt: its top unseen images become the batch
m            more like this: the focused card's nearest unseen images
a            add an example image (a file path, or an image id) as +1"""

COLD_KEYS = "t: another prompt · m: more like this card · a: add an example image"


def no_positive_notice(scores: dict[int, float]) -> str | None:
    """What to say after a fit whose batch held no positive label."""
    if not scores or any(s > 0 for s in scores.values()):
        return None
    return (
        f"No positives in that batch ({len(scores)} labeled, none above 0). "
        f"The search may be stuck near a wrong query: {COLD_KEYS}."
    )


# -- operations on the core thread (see bridge.py): the trainer is the first argument ---------------


def prompt_batch(t, scores: dict[int, float], seen: list[int], text: str, k: int | None) -> Batch:
    """Submit the scores on screen as a round of their own, then the prompt's top unseen images."""
    saved = _submit_first(t, scores, seen)
    hits = t.batch_for_prompt(text, k)
    return Batch(hits, note=_note(f"prompt {text.strip()!r}: {len(hits)} unseen images", saved, t))


def like_batch(t, scores: dict[int, float], seen: list[int], image_id: int, name: str, k: int | None) -> Batch:
    saved = _submit_first(t, scores, seen)
    hits = t.batch_like(image_id, k)
    return Batch(hits, note=_note(f"more like {name}: {len(hits)} unseen neighbours", saved, t))


def add_example(t, item: str, score: float = 1.0) -> tuple[int, str, int]:
    """Label a file (indexed into the collection first) or a collection id; returns (round, name, id)."""
    item = item.strip()
    row = t.add_example(item, score)
    is_id = item.isdigit() and not Path(item).exists()  # as Trainer.add_example reads it
    image_id = int(item) if is_id else t.collection.id_of_path(Path(item).expanduser())
    return row.round, row.strategy.split(":", 1)[1], image_id


def example_batch(t, image_id: int, k: int | None) -> Batch:
    return Batch(t.batch_like(image_id, k))


def _submit_first(t, scores: dict[int, float], seen: list[int]) -> int | None:
    if not scores:
        return None
    t.submit(scores, seen=seen)
    return t.round


def _note(what: str, saved_round: int | None, t) -> str:
    return what + (f"; the scores you had set were saved as round {saved_round}" if saved_round else "")


# -- the app side -----------------------------------------------------------------------------------------


class AskScreen(ModalScreen[str | None]):
    """One line of input over the grid: enter answers, esc cancels."""

    DEFAULT_CSS = """
    AskScreen { align: center middle; }
    AskScreen > Vertical { width: 80%; max-width: 100; height: auto; border: thick $accent; background: $surface; padding: 1 2; }
    """
    BINDINGS = [Binding("escape", "cancel", "Cancel", priority=True)]

    def __init__(self, question: str, placeholder: str = "", value: str = ""):
        super().__init__()
        self.question = question
        self.placeholder = placeholder
        self.value = value

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Static(self.question)
            yield Input(self.value, placeholder=self.placeholder, id="answer")
            yield Static(Text("enter: ok    esc: cancel", style="dim"))

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self.dismiss(event.value)

    def action_cancel(self) -> None:
        self.dismiss(None)


class ColdStartActions:
    """Actions of the batch screen (mixed into it): each asks, then runs one job on the core thread."""

    def action_ask_prompt(self) -> None:
        app = self.app
        current = app.status.prompt if app.status else ""
        app.push_screen(
            AskScreen(
                "Another prompt: its top unseen images become the next batch (scores set now are saved first).",
                placeholder=f"e.g. something else than {current!r}" if current else "",
            ),
            lambda text: text is not None and _run(app, "searching for the prompt", _prompt(app, text)),
        )

    def action_more_like(self) -> None:
        i = self.focused_index()
        if i is None:
            self.app.notify("no card to take as the example", severity="warning", timeout=3)
            return
        hit = self.cards()[i].hit
        _run(self.app, "finding similar images", _like(self.app, hit.id, Path(hit.path).name))

    def action_ask_example(self) -> None:
        app = self.app
        app.push_screen(
            AskScreen(
                "Add an example image, labeled +1 (a file path, or the id of a collection image):",
                placeholder="~/Pictures/example.jpg",
            ),
            lambda item: item is not None and _run(app, "adding the example", _example(app, item)),
        )


def _run(app, label: str, work) -> None:
    app.run_job(label, work, freeze=True)


async def _prompt(app, text: str) -> None:
    if not text.strip():
        app.notify("the prompt is empty: nothing searched", severity="warning", timeout=4)
        return
    scores, seen = app.batch_screen.entries()
    await _show(app, await app.core.call(prompt_batch, scores, seen, text, app.k), submitted=bool(scores))


async def _like(app, image_id: int, name: str) -> None:
    scores, seen = app.batch_screen.entries()
    await _show(app, await app.core.call(like_batch, scores, seen, image_id, name, app.k), submitted=bool(scores))


async def _example(app, item: str) -> None:
    if not item.strip():
        app.notify("no file given: nothing added", severity="warning", timeout=4)
        return
    round_no, name, image_id = await app.core.call(add_example, item)
    await app.refresh_status()
    scores, seen = app.batch_screen.entries()
    app.batch_round = app.status.round
    if scores or seen:  # keep the user's work on screen: it is still the pending batch
        app.batch_screen.write_draft()
        app.notify(f"added {name} as a positive example (round {round_no}); the batch on screen stays", timeout=5)
    else:  # the example says what is wanted: show what looks like it
        batch = await app.core.call(example_batch, image_id, app.k)
        batch.note = f"added {name} as a positive example (round {round_no}); showing more like it"
        await app.show_batch(batch)


async def _show(app, batch: Batch, *, submitted: bool) -> None:
    if submitted:
        drafts.drop_draft(app.draft_file())
    await app.refresh_status()
    app.batch_round = app.status.round
    await app.show_batch(batch)


def after_fit(app, scores: dict[int, float]) -> None:
    """Called once a fit's next batch is on screen: say so plainly when the batch had no positives."""
    notice = no_positive_notice(scores)
    if notice:
        app.notify(notice, title="no positives", severity="warning", timeout=10)
