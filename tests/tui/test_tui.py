"""The Textual labeling UI, headless: keys, fit, undo, quit, predictions, key bursts, snapshots.

SVG snapshots live in tests/snapshots/. After an intended change of the look, regenerate
them with ``LOCALQ_UPDATE_SNAPSHOTS=1 pytest tests/tui/test_tui.py`` and review the diff
(``rsvg-convert tests/snapshots/X.svg -o /tmp/X.png`` shows one as a picture).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.slow  # runs the Textual app

pytest.importorskip("textual")

from textual import events  # noqa: E402

from conftest import ColorEncoder, synthetic_collection  # noqa: E402
from localq.collection.collection import Collection  # noqa: E402
from localq.loop import classifier_file  # noqa: E402
from localq.loop.trainer import Trainer  # noqa: E402
from localq.loop.trainer_types import Settings  # noqa: E402
from localq.tui import drafts  # noqa: E402
from localq.tui.app import TrainApp  # noqa: E402
from localq.tui.screens import PredictionsScreen, PreviewScreen, grid_layout  # noqa: E402
from localq.tui.thumbnails import COLORS_256, LRU, ThumbnailCache, box_for, render_halfblock, render_missing  # noqa: E402
from localq.tui.widgets import Card  # noqa: E402

SNAPSHOTS = Path(__file__).resolve().parents[1] / "snapshots"
UPDATE = os.environ.get("LOCALQ_UPDATE_SNAPSHOTS") == "1"

# -- collections -------------------------------------------------------------------------------


def picture(hue, seed: int, size: int = 48):
    """A small landscape-like picture (gradient sky, ground, a sun) so half-blocks have detail."""
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size] / (size - 1)
    base = np.array(hue, np.float32)
    sky = (0.35 + 0.65 * (1 - y))[..., None] * base[None, None, :]
    ground = (0.25 + 0.5 * x)[..., None] * (255 - base)[None, None, :] * 0.6
    img = Image.fromarray(np.where((y > 0.6)[..., None], ground, sky).clip(0, 255).astype(np.uint8), "RGB")
    cx, cy, r = int(rng.integers(10, size - 10)), int(rng.integers(8, size // 2)), int(rng.integers(4, 9))
    ImageDraw.Draw(img).ellipse([cx - r, cy - r, cx + r, cy + r], fill=(250, 240, 200))
    return img


@pytest.fixture
def photo_root(tmp_path) -> Path:
    """A collection of 18 real PNGs in three colour classes, one missing file, classifier 'reds'."""
    from localq.ingest.indexer import index_paths

    photos = tmp_path / "photos"
    for name, hue in (("red", (220, 40, 30)), ("green", (40, 200, 60)), ("blue", (40, 60, 220))):
        for i in range(6):
            path = photos / name / f"{name}{i}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            picture(hue, seed=i + 10 * len(name)).save(path)
    root = tmp_path / "coll"
    with Collection.open(root, create=True) as coll:
        index_paths(coll, [photos], ColorEncoder(), with_labels=True)
        # The snapshots show the boundary strategy's batch (the default before auto): the look, not the strategy.
        Trainer.create(coll, "reds", prompt="red", settings=Settings(k=6, strategy="boundary"))
        # Bias 0 on non-negative colour vectors: every image predicted positive (a full predictions grid).
        red = classifier_file.save(
            tmp_path / "red.npy", ColorEncoder().encode_texts(["red"])[0], 0.0, model_id=ColorEncoder.model_id, meta={}
        )
        Trainer.create(coll, "all", weights_file=red, settings=Settings(strategy="boundary"))
    (photos / "blue" / "blue5.png").unlink()  # indexed, then lost: the card must show a placeholder
    return root


@pytest.fixture
def synthetic_root(tmp_path) -> Path:
    """300 vectors in 3 clusters with fake image paths (every thumbnail is a placeholder)."""
    root = tmp_path / "syn"
    coll, centres = synthetic_collection(root, clusters=3, per_cluster=100, dim=16)
    path = classifier_file.save(root / "start.npy", centres[0], 0.0, model_id=coll.model_id, meta={})
    Trainer.create(coll, "t", weights_file=path, settings=Settings(k=10))
    coll.close()
    return root


def make_app(root: Path, name: str, **kwargs) -> TrainApp:
    def open_trainer():
        coll = Collection.open(root)
        if coll.model_id == ColorEncoder.model_id:
            coll.bind_encoder(ColorEncoder())  # the real encoder registry does not know the test one
        return Trainer.open(coll, name)

    kwargs.setdefault("thumbnails", "halfblock")
    kwargs.setdefault("colors", "truecolor")
    return TrainApp(open_trainer, root, **kwargs)


def reopen(root: Path, name: str) -> Trainer:
    return Trainer.open(Collection.open(root), name)


async def settle(pilot) -> None:
    """Wait until the core job and every thumbnail decode have finished (a hang guard, not a timing test)."""
    app = pilot.app
    for _ in range(1500):
        await pilot.pause(0.02)
        if app.batch_round is not None and not any(w.is_running for w in app.workers):
            await pilot.pause()
            return
    raise AssertionError(f"the app did not settle: {[w for w in app.workers if w.is_running]}")


def cards(app) -> list[Card]:
    return app.batch_screen.cards()


def scores(app) -> list[float | None]:
    return [c.score for c in cards(app)]


# -- keys and mouse ----------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_keys_change_scores_of_the_focused_card(synthetic_root):
    app = make_app(synthetic_root, "t")
    async with app.run_test(size=(100, 40)) as pilot:
        await settle(pilot)
        assert scores(app) == [None] * 10 and app.focused is cards(app)[0]
        await pilot.press("3")
        await pilot.press("left", "h")  # 1 - 0.5
        await pilot.press("j", "right")  # unset + 0.25
        await pilot.press("tab", "1")
        await pilot.press("j", "2", "j", "minus", "j", "plus", "j", "0", "j", "3", "backspace")
        await pilot.press("j", "x")
        assert scores(app)[:9] == [0.5, 0.25, -1.0, 0.0, -1.0, 1.0, 0.0, None, None]
        assert [c.skipped for c in cards(app)] == [False] * 8 + [True, False]
        await pilot.press("shift+tab", "l", "l", "l", "l", "l", "l", "l", "l", "l")  # clamps at +1
        assert cards(app)[7].score == 1.0
        await pilot.press("home", "down")  # a row down: the same column, next row
        assert cards(app).index(app.focused) == app.batch_screen.columns > 1
        assert app.focused.has_pseudo_class("focus")
        await pilot.press("?")
        assert type(app.screen).__name__ == "HelpScreen"
        await pilot.press("3", "escape")  # keys go to the help, not to the cards behind it
        assert app.screen is app.batch_screen and cards(app)[app.batch_screen.columns].score == -1.0


@pytest.mark.asyncio
async def test_a_click_on_the_bar_sets_the_value_under_the_pointer(synthetic_root):
    app = make_app(synthetic_root, "t")
    async with app.run_test(size=(100, 40)) as pilot:
        await settle(pilot)
        card = cards(app)[1]
        control = card.control
        track = control.track_width()
        await pilot.click(control, offset=(0, 0))
        assert card.score == -1.0 and app.focused is card
        await pilot.click(control, offset=(track - 1, 0))
        assert card.score == 1.0
        await pilot.click(control, offset=((track - 1) // 2, 0))
        assert card.score == 0.0
        assert control.value_at(round(0.75 * (track - 1))) == 0.5


@pytest.mark.asyncio
async def test_a_key_burst_follows_focus(synthetic_root):
    """Raw key events posted in one go, as a fast typist or a paste would deliver them."""
    app = make_app(synthetic_root, "t")
    async with app.run_test(size=(100, 40)) as pilot:
        await settle(pilot)
        for key, char in [
            ("3", "3"),
            ("j", "j"),
            ("1", "1"),
            ("j", "j"),
            ("right", None),
            ("right", None),
            ("j", "j"),
            ("x", "x"),
            ("j", "j"),
            ("2", "2"),
            ("k", "k"),
            ("k", "k"),
            ("left", None),
        ]:
            app.post_message(events.Key(key, char))
        await pilot.pause()
        await pilot.pause(0.1)
        assert scores(app)[:5] == [1.0, -1.0, 0.25, None, 0.0]
        assert cards(app)[3].skipped
        assert cards(app)[2].score == 0.25 and app.focused is cards(app)[2]


# -- the loop ------------------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_fit_shows_a_new_batch_without_seen_images(synthetic_root):
    app = make_app(synthetic_root, "t")
    async with app.run_test(size=(100, 40)) as pilot:
        await settle(pilot)
        first = [c.hit.id for c in cards(app)]
        await pilot.press("3", "j", "3", "j", "1", "j", "x")  # 3 labels, 1 skip, 6 left unset
        await pilot.press("f")
        await settle(pilot)
        second = [c.hit.id for c in cards(app)]
        trainer = reopen(synthetic_root, "t")
        seen = set(trainer.store.seen_ids(trainer.row.id).tolist())
        assert trainer.round == 1 and app.status.round == 1
        assert trainer.labels() == {first[0]: 1.0, first[1]: 1.0, first[2]: -1.0}
        assert seen == set(first[:4])  # labelled + skipped; unset cards may come back
        assert len(second) == 10 and not set(second) & seen
        assert scores(app) == [None] * 10 and app.status.positives == 2 and app.status.negatives == 1
        for card in cards(app):  # cards are reused: each must show its new image, name and score
            assert card.thumbnail.path == card.hit.path and card.caption.file_label == Path(card.hit.path).name
            assert card.caption.model_score == card.hit.score and not card.skipped
            assert not card.has_class("-positive") and not card.has_class("-skipped")


@pytest.mark.asyncio
async def test_when_every_image_is_seen_the_grid_says_what_to_do(tmp_path):
    root = tmp_path / "small"
    coll, centres = synthetic_collection(root, clusters=2, per_cluster=4, dim=8)
    Trainer.create(coll, "t", images=[0], settings=Settings(k=10))
    coll.close()
    app = make_app(root, "t")
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        assert len(cards(app)) == 8
        await pilot.press("3", "f")
        await settle(pilot)
        assert len(cards(app)) == 7  # the unset ones come back
        await pilot.press(*"3 j x j 1 j 3 j 3 j 3 j 3".split(), "f")
        await settle(pilot)
        assert cards(app) == [] and app.batch_screen.has_class("-empty")
        assert "reset seen" in str(app.batch_screen.query_one("#empty").render())
        await pilot.press("f")  # nothing to fit: refused, no crash
        await pilot.press("r", "y")
        await settle(pilot)
        assert len(cards(app)) == 8 and not app.batch_screen.has_class("-empty")


@pytest.mark.asyncio
async def test_fit_without_scores_is_refused(synthetic_root):
    app = make_app(synthetic_root, "t")
    async with app.run_test(size=(100, 40)) as pilot:
        await settle(pilot)
        before = [c.hit.id for c in cards(app)]
        await pilot.press("x", "f")
        await settle(pilot)
        assert [c.hit.id for c in cards(app)] == before
        assert reopen(synthetic_root, "t").round == 0


@pytest.mark.asyncio
async def test_undo_restores_the_last_batch_with_its_scores(synthetic_root):
    app = make_app(synthetic_root, "t")
    async with app.run_test(size=(100, 40)) as pilot:
        await settle(pilot)
        first = [c.hit.id for c in cards(app)]
        await pilot.press("3", "j", "1", "j", "x", "f")
        await settle(pilot)
        assert reopen(synthetic_root, "t").round == 1
        await pilot.press("u")
        await settle(pilot)
        trainer = reopen(synthetic_root, "t")
        assert trainer.round == 0 and trainer.labels() == {} and len(trainer.store.seen_ids(trainer.row.id)) == 0
        shown = {c.hit.id: (c.score, c.skipped) for c in cards(app)}
        assert shown == {first[0]: (1.0, False), first[1]: (-1.0, False), first[2]: (None, True)}
        await pilot.press("f")  # the restored batch can be edited and fitted again
        await settle(pilot)
        assert reopen(synthetic_root, "t").labels() == {first[0]: 1.0, first[1]: -1.0}


@pytest.mark.asyncio
async def test_quitting_persists_the_scores_on_screen(synthetic_root):
    app = make_app(synthetic_root, "t")
    async with app.run_test(size=(100, 40)) as pilot:
        await settle(pilot)
        ids = [c.hit.id for c in cards(app)]
        await pilot.press("3", "j", "left", "left", "j", "x", "q")
        await pilot.pause(0.5)
        for _ in range(500):
            if not app.is_running:
                break
            await pilot.pause(0.02)
    assert not app.is_running
    trainer = reopen(synthetic_root, "t")
    assert trainer.labels() == {ids[0]: 1.0, ids[1]: -0.5}
    assert set(trainer.store.seen_ids(trainer.row.id).tolist()) == set(ids[:3])
    assert not drafts.draft_path(synthetic_root, "t").exists()


@pytest.mark.asyncio
async def test_a_dropped_session_comes_back_with_its_draft(synthetic_root):
    app = make_app(synthetic_root, "t")
    async with app.run_test(size=(100, 40)) as pilot:
        await settle(pilot)
        ids = [c.hit.id for c in cards(app)]
        await pilot.press("3", "j", "j", "1", "j", "x")
        await pilot.pause(0.6)  # the draft is written shortly after the last key
    # The app was torn down without quitting (a lost SSH connection): nothing was submitted ...
    assert reopen(synthetic_root, "t").labels() == {}
    assert drafts.draft_path(synthetic_root, "t").exists()
    app = make_app(synthetic_root, "t")
    async with app.run_test(size=(100, 40)) as pilot:
        await settle(pilot)
        # ... and the next start shows the same batch with the same scores.
        assert [c.hit.id for c in cards(app)] == ids
        assert scores(app)[:4] == [1.0, None, -1.0, None] and cards(app)[3].skipped


@pytest.mark.asyncio
async def test_strategy_switch_and_reset_seen(synthetic_root):
    from localq.loop.sampling import STRATEGIES

    app = make_app(synthetic_root, "t")
    async with app.run_test(size=(100, 40)) as pilot:
        await settle(pilot)
        start = app.status.strategy
        await pilot.press("s")
        await settle(pilot)
        expected = STRATEGIES[(STRATEGIES.index(start) + 1) % len(STRATEGIES)]
        assert app.status.strategy == expected and reopen(synthetic_root, "t").settings.strategy == expected
        await pilot.press("3", "f")
        await settle(pilot)
        trainer = reopen(synthetic_root, "t")
        assert len(trainer.store.seen_ids(trainer.row.id)) == 1
        await pilot.press("r")
        await pilot.pause()
        await pilot.press("y")
        await settle(pilot)
        assert len(trainer.store.seen_ids(trainer.row.id)) == 0
        assert trainer.labels() != {}  # labels stay


@pytest.mark.asyncio
async def test_save_writes_a_classifier_file(synthetic_root, tmp_path):
    app = make_app(synthetic_root, "t")
    async with app.run_test(size=(100, 40)) as pilot:
        await settle(pilot)
        await pilot.press("w")
        await pilot.pause()
        target = tmp_path / "out" / "mine.safetensors"
        app.screen.query_one("#path").value = str(target)
        await pilot.press("enter")
        await settle(pilot)
    loaded = classifier_file.load(target)
    assert loaded.weight.shape == (16,) and loaded.meta["name"] == "t"
    assert app.default_save_path() == synthetic_root / "classifiers" / "t.safetensors"


# -- preview and predictions ------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_preview_shows_the_focused_image_and_takes_score_keys(photo_root):
    app = make_app(photo_root, "reds")
    async with app.run_test(size=(100, 40)) as pilot:
        await settle(pilot)
        await pilot.press("j", "p")
        await settle(pilot)
        screen = app.screen
        assert isinstance(screen, PreviewScreen) and screen.card is cards(app)[1]
        assert screen.big.path == cards(app)[1].hit.path and screen.big.size.height > 20
        await pilot.press("3", "j", "1", "escape")
        await pilot.pause()
        assert app.screen is app.batch_screen and app.focused is cards(app)[2]
        assert scores(app)[1:3] == [1.0, -1.0]


@pytest.mark.asyncio
async def test_predictions_view_lists_top_positives(synthetic_root):
    app = make_app(synthetic_root, "t")
    async with app.run_test(size=(100, 40)) as pilot:
        await settle(pilot)
        await pilot.press("3", "j", "3", "f")
        await settle(pilot)
        await pilot.press("v")
        await settle(pilot)
        screen = app.screen
        assert isinstance(screen, PredictionsScreen)
        shown = [c.hit for c in screen.cards()]
        expected = reopen(synthetic_root, "t").predict(limit=PredictionsScreen.PAGE)
        assert [h.id for h in shown] == [p.id for p in expected] and shown
        assert all(h.score > 0 for h in shown) and [h.score for h in shown] == sorted(
            (h.score for h in shown), reverse=True
        )
        assert all(c.control is None for c in screen.cards())  # read-only
        await pilot.press("j", "p")
        await pilot.pause()
        assert isinstance(app.screen, PreviewScreen) and app.screen.card.hit.id == shown[1].id
        await pilot.press("3")  # predictions are not labels: no effect
        await pilot.press("escape", "escape")
        await pilot.pause()
        assert app.screen is app.batch_screen


# -- thumbnails and layout -----------------------------------------------------------------------------------


def test_halfblocks_fill_the_box_with_two_pixels_per_cell():
    from PIL import Image

    img = Image.new("RGB", (4, 4), (255, 0, 0))
    img.paste((0, 0, 255), (0, 2, 4, 4))  # bottom half blue
    lines = render_halfblock(img, 6, 2, "truecolor")
    assert len(lines) == 2 and all(sum(len(s.text) for s in line) == 6 for line in lines)
    cell_top = next(s for s in lines[0] if s.text.strip())
    cell_bottom = next(s for s in lines[1] if s.text.strip())
    assert cell_top.style.color.triplet == (255, 0, 0) and cell_top.style.bgcolor.triplet == (255, 0, 0)
    assert cell_bottom.style.color.triplet == (0, 0, 255)
    wide = render_halfblock(Image.new("RGB", (40, 10), "white"), 20, 10, "truecolor")
    assert sum(1 for line in wide if any(s.text.strip() for s in line)) == 3  # letterboxed: 5 px tall


def test_256_colour_mode_uses_the_xterm_palette():
    img = picture((220, 40, 30), 0)
    lines = render_halfblock(img, 24, 12, COLORS_256)
    colours = {s.style.color for line in lines for s in line if s.style and s.style.color}
    assert colours and all(c.type.name == "EIGHT_BIT" and 16 <= c.number <= 255 for c in colours)


def test_cache_decodes_once_and_missing_files_become_placeholders(tmp_path):
    calls = []

    def decoder(path, box):
        calls.append(path)
        return ops_decode(path, box)

    from localq.tui.thumbnails import decode as ops_decode

    good = tmp_path / "a.png"
    picture((10, 20, 200), 1).save(good)
    cache = ThumbnailCache(decoder=decoder)
    for _ in range(3):
        cache.image(str(good), 64)
        cache.image("/nowhere/b.png", 64)
    assert calls == [str(good), "/nowhere/b.png"]
    assert (
        cache.cached_lines(str(good), 64, 20, 10, "truecolor") is None
    )  # rendering is asked for, never done in passing
    lines = cache.render(str(good), 64, 20, 10, "truecolor")
    assert (
        cache.render(str(good), 64, 20, 10, "truecolor")
        is lines
        is cache.cached_lines(str(good), 64, 20, 10, "truecolor")
    )
    text = "".join(s.text for line in cache.render("/nowhere/b.png", 64, 20, 6, "truecolor") for s in line)
    assert "no image" in text and "file not found" in text
    (tmp_path / "bad.png").write_bytes(b"not an image")
    assert "not an image" in "".join(
        s.text for line in render_missing(cache.image(str(tmp_path / "bad.png"), 64).reason, 20, 6) for s in line
    )
    cache.close()
    lru = LRU(2)
    for k in "abc":
        lru.put(k, k)
    assert "a" not in lru and len(lru) == 2 and box_for(24, 12) == 32 and box_for(150, 40) == 256


def test_grid_layout_adapts_to_the_terminal():
    assert grid_layout(79, 22, 10) == (3, 12)  # 80x24: 3 columns of square thumbnails, scrolls
    cols, rows = grid_layout(159, 46, 10)
    assert cols * 2 >= 10 and 2 * (rows + 4) <= 46  # 160x48: the whole batch at once
    assert grid_layout(159, 46, 10)[1] > grid_layout(79, 22, 10)[1] // 2
    assert grid_layout(30, 10, 10) == (1, 6)


# -- snapshots ----------------------------------------------------------------------------------------------


def check_snapshot(app, name: str, tmp_path: Path) -> None:
    svg = app.export_screenshot(title="localq")
    path = SNAPSHOTS / f"{name}.svg"
    if UPDATE or not path.exists():
        if not UPDATE:
            pytest.fail(f"no snapshot {path}: run with LOCALQ_UPDATE_SNAPSHOTS=1 to create it")
        path.parent.mkdir(exist_ok=True)
        path.write_text(svg)
        return
    if svg != path.read_text():
        actual = tmp_path / f"{name}.svg"
        actual.write_text(svg)
        pytest.fail(
            f"{name} differs from {path}: see {actual}; if the change is intended, "
            "regenerate with LOCALQ_UPDATE_SNAPSHOTS=1"
        )


@pytest.mark.parametrize("size", [(80, 24), (160, 48)], ids=["80x24", "160x48"])
@pytest.mark.asyncio
async def test_snapshot_batch_grid(photo_root, tmp_path, size):
    app = make_app(photo_root, "reds")
    async with app.run_test(size=size) as pilot:
        await settle(pilot)
        await pilot.press("3", "j", "left", "j", "1", "j", "x", "k")
        await settle(pilot)
        check_snapshot(app, f"batch_{size[0]}x{size[1]}", tmp_path)


@pytest.mark.asyncio
async def test_snapshot_predictions(photo_root, tmp_path):
    app = make_app(photo_root, "all")
    async with app.run_test(size=(160, 48)) as pilot:
        await settle(pilot)
        await pilot.press("v")
        await settle(pilot)
        check_snapshot(app, "predictions_160x48", tmp_path)


@pytest.mark.asyncio
async def test_save_dialog_keeps_its_path_when_w_is_pressed_again(synthetic_root):
    # Issue 23: the second `w` replaced the path with the letter "w". In the dialog, w saves.
    app = make_app(synthetic_root, "t")
    async with app.run_test(size=(100, 40)) as pilot:
        await settle(pilot)
        await pilot.press("w")
        await pilot.pause()
        field = app.screen.query_one("#path")
        default = str(app.default_save_path())
        assert field.value == default
        await pilot.press("w")
        await pilot.pause()
        assert field.value == default
        await settle(pilot)
    assert classifier_file.load(app.default_save_path()).meta["name"] == "t"


def dialog_text(screen) -> str:
    return " ".join(str(w.render()) for w in screen.query("Static"))


@pytest.mark.asyncio
async def test_save_dialog_tags_photos_and_exports_an_image_folder_after_showing_counts(photo_root):
    import csv
    import re

    from localq.tui.screens import SaveScreen

    photos = photo_root.parent / "photos"
    app = make_app(photo_root, "reds")
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        await pilot.press("3", "j", "3", "j", "left", "left", "left", "left", "f")  # two positives, one negative
        await settle(pilot)
        await pilot.press("w")
        await settle(pilot)
        assert isinstance(app.screen, SaveScreen)
        text = dialog_text(app.screen)
        changes = int(re.search(r"XMP sidecars beside the photos: (\d+) sidecars? to change", text).group(1))
        positive, negative = map(int, re.search(r"\((\d+) files? in positive/, (\d+) in negative/", text).groups())
        assert changes > 0 and (positive, negative) == (2, 1)
        assert not list(photos.rglob("*.xmp"))  # counted, nothing written yet
        await pilot.press("t")
        await settle(pilot)
        assert len(list(photos.rglob("*.xmp"))) == changes
        await pilot.press("w")
        await settle(pilot)
        assert "0 sidecars to change" in dialog_text(app.screen)  # a second run would change nothing
        await pilot.press("i")
        await settle(pilot)
    out = app.default_folder_path()
    with open(out / "manifest.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert sorted(r["class"] for r in rows) == ["negative", "positive", "positive"]
    assert len(os.listdir(out / "positive")) == positive and len(os.listdir(out / "negative")) == negative
