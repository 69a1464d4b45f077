"""The labeling UI says what it is doing (headless, Textual's pilot): the phase on the status
line, class names instead of WordNet ids, what a card's number is, keys typed before the
batch is ready, and the line printed after quitting. The same keys in a real terminal
(tmux) are in tests/tui/test_tui_tmux.py."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("textual")

from test_tui import settle  # noqa: E402

from conftest import VectorEncoder, synthetic_collection  # noqa: E402
from localq.collection.collection import Collection  # noqa: E402
from localq.loop import classifier_file  # noqa: E402
from localq.loop.trainer import Trainer  # noqa: E402
from localq.loop.trainer_types import Settings  # noqa: E402
from localq.storage.rows import NewImage  # noqa: E402
from localq.tui import bridge  # noqa: E402
from localq.tui.app import TrainApp, quit_note  # noqa: E402
from localq.tui.bridge import Status  # noqa: E402
from localq.tui.screens import PredictionsScreen  # noqa: E402

pytestmark = pytest.mark.slow  # runs the Textual app


@pytest.fixture
def root(tmp_path) -> Path:
    """300 vectors in 3 clusters; classifier 't' starts from cluster 0's centre, strategy auto."""
    root = tmp_path / "syn"
    coll, centres = synthetic_collection(root, clusters=3, per_cluster=100, dim=16)
    path = classifier_file.save(root / "start.npy", centres[0], 0.0, model_id=coll.model_id, meta={})
    Trainer.create(coll, "t", weights_file=path, settings=Settings(k=10, strategy="auto"))
    coll.close()
    return root


def make_app(root: Path, name: str = "t") -> TrainApp:
    return TrainApp(lambda: Trainer.open(Collection.open(root), name), root, thumbnails="halfblock", colors="truecolor")


def cards(app):
    return app.batch_screen.cards()


def status_text(screen) -> str:
    return screen.query_one("StatusLine").render().plain


def held(monkeypatch, name: str) -> threading.Event:
    """Hold a core-thread operation until the test sets the returned event (at most 60 s), as
    a large collection or a busy machine holds it: keys typed meanwhile are typed while it
    runs, however slow the machine is."""
    gate = threading.Event()
    real = getattr(bridge, name)

    def wait_then_run(*args, **kwargs):
        gate.wait(60)
        return real(*args, **kwargs)

    monkeypatch.setattr(bridge, name, wait_then_run)
    return gate


# -- the status line -------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_the_status_line_names_the_phase(root):
    app = make_app(root)
    async with app.run_test(size=(140, 40)) as pilot:
        await settle(pilot)
        assert app.status.phase == "start"
        assert "start: the best matches first" in status_text(app.batch_screen)
        for card in cards(app):  # cluster 0 is what the classifier is for
            card.score = 1.0 if card.hit.label == "0" else -1.0
        assert any(c.hit.label == "0" for c in cards(app))
        await pilot.press("f")
        await settle(pilot)
        assert app.status.phase == "refining"
        text = status_text(app.batch_screen)
        assert "refining" in text and "exploring" not in text


def test_phase_follows_the_labels_and_the_strategy(root):
    with Collection.open(root) as coll:
        trainer = Trainer.open(coll, "t")
        assert trainer.phase() == "start"  # round 0: nothing labeled yet, the query's best come first
        batch = trainer.next_batch()
        trainer.submit({h.id: -1.0 for h in batch})  # none of the query's best is wanted
        assert trainer.phase() == "exploring"
        batch = trainer.next_batch()  # mostly spread over the clusters: one of them is wanted
        trainer.submit({h.id: 1.0 if h.id == batch[0].id else -1.0 for h in batch})
        assert trainer.phase() == "refining"
        trainer.submit({h.id: -1.0 for h in trainer.next_batch()})  # the last batch held none: explore again
        assert trainer.phase() == "exploring"
        trainer.update_settings(strategy="boundary")
        assert trainer.phase() == "refining"


def test_the_status_line_shows_class_names_not_wordnet_ids(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((20, 8)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    labels = ["n03028079"] * 10 + ["n02102040"] * 10  # church, English springer
    coll = Collection.open(tmp_path / "c", create=True)
    coll.bind_encoder(VectorEncoder(8))
    coll.add_images([NewImage(f"/imgs/{i}.png", f"h{i}", 1, 0.0, 1, 1, labels[i], "train") for i in range(20)], x)
    path = classifier_file.save(tmp_path / "w.npy", x[:10].mean(axis=0), 0.0, model_id=coll.model_id, meta={})
    trainer = Trainer.create(coll, "churches", weights_file=path)
    trainer.submit({0: 1.0, 1: 1.0, 15: -1.0})
    status = bridge.status(trainer)
    coll.close()
    assert status.ap is not None and status.target == "church"


def test_phase_text_with_and_without_the_cold_hint():
    from localq.tui.widgets import phase_text

    base = dict(name="t", round=0, positives=0, negatives=0, strategy="auto", k=10)
    assert phase_text(Status(**base, phase="start")) == "start: the best matches first"
    assert phase_text(Status(**base, phase="exploring")) == "exploring: no positive yet"
    assert (
        phase_text(Status(**{**base, "positives": 2}, phase="exploring"))
        == "exploring: the last batch held no positive"
    )
    assert phase_text(Status(**base, phase="refining")) == "refining"
    hint = "no positives yet: try t, m or a"
    assert phase_text(Status(**base, phase="exploring", hint=hint)) == f"exploring · {hint}"


# -- one scale for cards and predictions ------------------------------------------------------------


@pytest.mark.asyncio
async def test_cards_and_predictions_name_their_number_the_same_way(root):
    app = make_app(root)
    async with app.run_test(size=(140, 40)) as pilot:
        await settle(pilot)
        card = cards(app)[0]
        caption = card.caption.render().plain
        assert f"model {card.hit.score:+.2f}" in caption
        await pilot.press("v")
        for _ in range(200):
            await pilot.pause(0.02)
            if isinstance(app.screen, PredictionsScreen) and app.screen.cards():
                break
        predicted = app.screen.cards()[0]
        assert f"model {predicted.hit.score:+.2f}" in predicted.caption.render().plain
        assert "by model score (> 0, as on the cards)" in status_text(app.screen)


# -- keys typed before the batch is ready --------------------------------------------------------------


@pytest.mark.asyncio
async def test_keys_typed_before_the_first_batch_are_applied(root, monkeypatch):
    gate = held(monkeypatch, "first_batch")
    app = make_app(root)
    async with app.run_test(size=(140, 40)) as pilot:
        for _ in range(500):  # "round 0" is on the status line; the batch is still being searched
            await pilot.pause(0.01)
            if app.status is not None:
                break
        assert app.status is not None and "round 0" in status_text(app.batch_screen)
        await pilot.press("3", "j", "1", "j", "right", "j", "x", "j", "3")
        assert not cards(app), "the keys must be typed before the grid is ready"
        gate.set()
        await settle(pilot)
        await pilot.pause(0.1)
        assert [c.score for c in cards(app)][:5] == [1.0, -1.0, 0.25, None, 1.0]
        assert cards(app)[3].skipped and app.focused is cards(app)[4]


@pytest.mark.asyncio
async def test_keys_typed_during_a_fit_apply_to_the_next_batch(root, monkeypatch):
    gate = held(monkeypatch, "fit")
    app = make_app(root)
    async with app.run_test(size=(140, 40)) as pilot:
        await settle(pilot)
        first = [c.hit.id for c in cards(app)]
        await pilot.press("3", "f", "1", "j", "3")  # the last three while the fit runs
        gate.set()
        await settle(pilot)
        await pilot.pause(0.1)
        # The next batch came (cards left unscored may come back in it; the scored one not).
        assert app.batch_round == 1 and first[0] not in {c.hit.id for c in cards(app)}
        assert [c.score for c in cards(app)][:3] == [-1.0, 1.0, None]


@pytest.mark.asyncio
async def test_quit_before_the_first_batch_keeps_the_scores_typed(root, monkeypatch):
    gate = held(monkeypatch, "first_batch")
    app = make_app(root)
    async with app.run_test(size=(140, 40)) as pilot:
        for _ in range(500):
            await pilot.pause(0.01)
            if app.status is not None:
                break
        await pilot.press("3", "j", "1", "q")
        gate.set()
        for _ in range(500):
            await pilot.pause(0.02)
            if app._exit:
                break
    trainer = Trainer.open(Collection.open(root), "t")
    assert trainer.round == 1 and sorted(trainer.labels().values()) == [-1.0, 1.0]


# -- quitting says what was saved -------------------------------------------------------------------


@pytest.mark.asyncio
async def test_quit_leaves_one_line_saying_what_was_saved_and_how_to_resume(root):
    app = make_app(root)
    async with app.run_test(size=(140, 40)) as pilot:
        await settle(pilot)
        await pilot.press("3", "j", "1", "q")
        for _ in range(500):
            await pilot.pause(0.02)
            if app._exit:
                break
    assert app.exit_note == (
        f"saved 2 new labels; t is at round 1 (+1/−1 labels); resume with `localq train --classifier t --db {root}`"
    )


def test_quit_note_without_new_labels(tmp_path, monkeypatch):
    monkeypatch.setenv("LOCALQ_HOME", str(tmp_path / "home"))
    status = Status(name="dogs", round=3, positives=4, negatives=9, strategy="auto", k=10)
    assert quit_note(status, None, tmp_path / "home") == (
        "nothing new to save; dogs is at round 3 (+4/−9 labels); resume with `localq train --classifier dogs`"
    )
    assert quit_note(None, None, tmp_path) is None
