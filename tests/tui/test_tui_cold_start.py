"""The cold-start keys of the labeling UI, headless: t (another prompt), m (more like this),
a (add an example image), and the "no positives" notice. Same harness as test_tui.py."""

from __future__ import annotations

from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # runs the Textual app

pytest.importorskip("textual")

from test_tui import cards, make_app, photo_root, reopen, settle, synthetic_root  # noqa: E402,F401

from conftest import ColorEncoder, write_image  # noqa: E402
from localq.collection.collection import Collection  # noqa: E402
from localq.loop.trainer import Trainer  # noqa: E402
from localq.loop.trainer_types import Settings  # noqa: E402
from localq.tui.cold_start import AskScreen  # noqa: E402


@pytest.fixture
def blues(photo_root) -> Path:
    """The photo collection (red, green, blue PNGs) with a classifier started from the wrong colour."""
    with Collection.open(photo_root) as coll:
        coll.bind_encoder(ColorEncoder())
        # near_copy=1: one colour's images are identical copies; this is about prompt batches.
        Trainer.create(coll, "blues", prompt="blue", settings=Settings(k=6, strategy="top", near_copy=1.0))
    return photo_root


def labels(app) -> list[str]:
    return [c.hit.label for c in cards(app)]


def notices(app) -> list[str]:
    return [str(n.message) for n in app._notifications]


async def answer(pilot, text: str) -> None:
    """Type into the modal that the last key opened, and press enter."""
    await pilot.pause()
    assert isinstance(pilot.app.screen, AskScreen)
    pilot.app.screen.query_one("#answer").value = text
    await pilot.press("enter")
    await settle(pilot)


@pytest.mark.asyncio
async def test_a_typed_prompt_becomes_the_next_batch_and_a_round(blues):
    app = make_app(blues, "blues")
    async with app.run_test(size=(100, 40)) as pilot:
        await settle(pilot)
        assert set(labels(app)) == {"blue"}
        first = cards(app)[0].hit.id
        await pilot.press("1", "t")  # a score set on screen is saved before the new batch comes
        await answer(pilot, "green")
        assert labels(app)[:5] == ["green"] * 5 and app.screen is app.batch_screen
        assert app.status.round == 1 and app.batch_round == 1
        trainer = reopen(blues, "blues")
        assert trainer.labels() == {first: -1.0} and trainer.history()[-1].strategy == "top"
        await pilot.press("3", "j", "3", "f")
        await settle(pilot)
        trainer = reopen(blues, "blues")
        assert trainer.history()[-1].strategy == "prompt:green" and trainer.label_counts() == (2, 1)
        # Typing nothing searches nothing; esc leaves the batch alone.
        shown = [c.hit.id for c in cards(app)]
        await pilot.press("t")
        await answer(pilot, "   ")
        await pilot.press("t")
        await pilot.pause()
        await pilot.press("escape")
        await settle(pilot)
        assert [c.hit.id for c in cards(app)] == shown and "the prompt is empty: nothing searched" in notices(app)


@pytest.mark.asyncio
async def test_an_all_negative_batch_is_said_plainly_with_the_keys_to_try(blues):
    app = make_app(blues, "blues")
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        assert app.status.hint is None
        await pilot.press(*"1 j 1 j 1".split(), "f")
        await settle(pilot)
        notice = next(n for n in notices(app) if n.startswith("No positives in that batch"))
        assert "t: another prompt" in notice and "m: more like this" in notice and "a: add an example" in notice
        line = str(app.batch_screen.status_line.render())
        assert "no positives yet: try t, m or a" in line
        # A positive example (an id of the collection) ends the warning.
        await pilot.press("a")
        await answer(
            pilot,
            str(next(i for i, c in enumerate(reopen(blues, "blues").collection.labels_of(range(18))) if c == "red")),
        )
        assert app.status.hint is None and app.status.positives == 1
        assert "no positives" not in str(app.batch_screen.status_line.render())


@pytest.mark.asyncio
async def test_more_like_this_shows_the_focused_cards_neighbours(blues):
    app = make_app(blues, "blues")
    async with app.run_test(size=(100, 40)) as pilot:
        await settle(pilot)
        await pilot.press("t")
        await answer(pilot, "red")
        focused = cards(app)[1].hit
        assert focused.label == "red"
        await pilot.press("j", "3", "m")  # score it, then more like it
        await settle(pilot)
        ids = [c.hit.id for c in cards(app)]
        assert focused.id not in ids and labels(app)[:4] == ["red"] * 4
        await pilot.press("3", "f")
        await settle(pilot)
        history = [r.strategy for r in reopen(blues, "blues").history()]
        assert history == [None, "prompt:red", f"like:{focused.id}"], history


@pytest.mark.asyncio
async def test_an_example_file_is_indexed_labeled_and_a_bad_path_is_a_notice(blues, tmp_path):
    app = make_app(blues, "blues")
    async with app.run_test(size=(100, 40)) as pilot:
        await settle(pilot)
        await pilot.press("a")
        await answer(pilot, str(tmp_path / "nowhere.png"))
        assert app.is_running and app.status.round == 0
        assert any("no image file at" in n for n in notices(app))
        (tmp_path / "junk.png").write_bytes(b"junk")
        await pilot.press("a")
        await answer(pilot, str(tmp_path / "junk.png"))
        assert any("not an image" in n for n in notices(app)) and reopen(blues, "blues").round == 0
        fox = write_image(tmp_path / "mine" / "fox.png", (225, 35, 25))
        await pilot.press("a")
        await answer(pilot, str(fox))
        trainer = reopen(blues, "blues")
        assert trainer.history()[-1].strategy == "example:fox.png" and trainer.label_counts() == (1, 0)
        assert trainer.collection.id_of_path(fox) in trainer.labels()
        assert app.status.round == 1 and app.batch_round == 1 and app.status.positives == 1
        assert labels(app)[:4] == ["red"] * 4  # more like the example: the red ones
        assert any(n.endswith("showing more like it") for n in notices(app))
        await pilot.press("u")  # undo drops the example's round and puts it back on a card, +1
        await settle(pilot)
        new_id = reopen(blues, "blues").collection.id_of_path(fox)
        assert reopen(blues, "blues").round == 0 and [(c.hit.id, c.score) for c in cards(app)] == [(new_id, 1.0)]


@pytest.mark.asyncio
async def test_an_example_added_while_scoring_keeps_the_batch_on_screen(blues, tmp_path):
    app = make_app(blues, "blues")
    async with app.run_test(size=(100, 40)) as pilot:
        await settle(pilot)
        shown = [c.hit.id for c in cards(app)]
        await pilot.press("1", "a")
        await answer(pilot, str(write_image(tmp_path / "r.png", (230, 20, 20))))
        assert [c.hit.id for c in cards(app)] == shown and cards(app)[0].score == -1.0
        await pilot.press("f")
        await settle(pilot)
        trainer = reopen(blues, "blues")
        assert [r.strategy for r in trainer.history()] == [None, "example:r.png", "top"]
        assert trainer.label_counts() == (1, 1)


@pytest.mark.asyncio
async def test_the_keys_are_listed_in_the_footer_and_help(synthetic_root):
    app = make_app(synthetic_root, "t")
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        keys = {(k.key_display, k.description): k for k in app.batch_screen.query("FooterKey")}
        assert ("t/m/a", "steer") in keys and ("q", "quit") in keys
        assert keys[("q", "quit")].region.right <= 80  # the whole footer still fits at 80 columns
        await pilot.press("?")
        await pilot.pause()
        text = str(app.screen.query_one("Static").render())
        assert "type another prompt" in text and "more like this" in text and "add an example image" in text
