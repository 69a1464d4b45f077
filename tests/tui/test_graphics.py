"""Kitty graphics and sixel thumbnails without a real terminal: what the painter sends, and when.

The pixels on a real screen are checked in tests/tui/test_real_terminals.py; here the app runs
under Pilot with a painter forced on, and the escape sequences it would write are
captured: which image is placed where, what happens on a preview, a modal and a resize,
plus the sixel encoder (decoded back), the kitty sequences and the terminal detection.
"""

from __future__ import annotations

import os
import pty
import re
import threading

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("textual")

from test_tui import make_app, photo_root, settle  # noqa: E402,F401

from localq.tui import kitty, sixel  # noqa: E402
from localq.tui.graphics import fit_canvas, pixel_box  # noqa: E402
from localq.tui.terminal import HALFBLOCK, KITTY, SIXEL, TerminalGraphics, parse_answers, resolve  # noqa: E402

PLACE = re.compile(r"\x1b\[(\d+);(\d+)H\x1b_Ga=p,i=(\d+),p=(\d+),x=(\d+),y=(\d+),w=(\d+),h=(\d+),c=(\d+),r=(\d+)")
DELETE = re.compile(r"\x1b_Ga=d,d=i,i=(\d+),p=(\d+)")
TRANSMIT = re.compile(r"\x1b_Ga=t,f=100,t=d,i=(\d+)")
SIXEL_AT = re.compile(r"\x1b\[(\d+);(\d+)H\x1bP0;1;0q\"1;1;(\d+);(\d+)")
CELL = (8, 16)


# -- sixel ---------------------------------------------------------------------------------------


def decode_sixel(data: str, width: int, height: int) -> np.ndarray:
    """A minimal sixel decoder (colour definitions, !repeat, $ and -): RGB, -1 where nothing was drawn."""
    out = np.full((height, width, 3), -1, np.int32)
    body = data[data.index("q") + 1 : data.rindex("\x1b\\")]
    body = re.sub(r'^"[\d;]*', "", body)
    palette, colour, x, top = {}, None, 0, 0
    for token in re.finditer(r"#(\d+)(?:;2;(\d+);(\d+);(\d+))?|!(\d+)(.)|([?-~])|\$|-", body):
        t = token.group(0)
        if t.startswith("#"):
            c = int(token.group(1))
            if token.group(2) is not None:
                palette[c] = [round(int(token.group(i)) * 255 / 100) for i in (2, 3, 4)]
            else:
                colour = c
        elif t == "$":
            x = 0
        elif t == "-":
            x, top = 0, top + 6
        else:
            n, ch = (int(token.group(5)), token.group(6)) if t.startswith("!") else (1, t)
            bits = ord(ch) - 63
            for k in range(6):
                if bits >> k & 1 and top + k < height:
                    out[top + k, x : x + n] = palette[colour]
            x += n
    return out


def test_sixel_encodes_the_image_and_leaves_transparent_pixels_alone():
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (13, 20, 3), dtype=np.uint8)
    rgb[:, :10] = (200, 30, 40)  # a flat half: long runs, written with !n
    img = Image.fromarray(rgb).convert("RGBA")
    alpha = np.full((13, 20), 255, np.uint8)
    alpha[:, :2] = 0  # transparent border, as fit_canvas leaves around a photo
    img.putalpha(Image.fromarray(alpha))
    data = sixel.encode(img, colors=256)
    assert data.startswith('\x1bP0;1;0q"1;1;20;13') and data.endswith("\x1b\\") and "!8" in data
    decoded = decode_sixel(data, 20, 13)
    assert (decoded[:, :2] == -1).all()  # nothing drawn where the canvas is transparent
    assert (np.abs(decoded[:, 2:10] - (200, 30, 40)) <= 3).all()  # sixel colours are in percent: within 3 levels
    error = np.abs(decoded[:, 10:] - rgb[:, 10:].astype(np.int32)).mean()
    assert error < 12  # 256 registers, no dithering: close to the source everywhere
    few = decode_sixel(sixel.encode(img, colors=16), 20, 13)  # a VT340's 16 registers
    assert len({tuple(p) for p in few[:, 2:].reshape(-1, 3)}) <= 16


def test_kitty_sequences_chunk_the_png_and_place_without_moving_the_cursor():
    img = Image.fromarray(np.random.default_rng(1).integers(0, 256, (120, 90, 3), dtype=np.uint8))
    data = kitty.transmit(7, img)
    chunks = re.findall(r"\x1b_G([^;\x1b]*);?([^\x1b]*)\x1b\\", data)
    assert chunks[0][0].startswith("a=t,f=100,t=d,i=7,q=2,m=1") and chunks[-1][0] == "m=0"
    assert all(len(payload) <= kitty.CHUNK for _, payload in chunks) and len(chunks) > 2
    import base64
    import io

    png = base64.b64decode("".join(payload for _, payload in chunks))
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(png))), np.asarray(img))
    assert (
        kitty.place(7, 3, 4, 2, 30, 14, (0, 8, 240, 216))
        == "\x1b[3;5H\x1b_Ga=p,i=7,p=3,x=0,y=8,w=240,h=216,c=30,r=14,C=1,q=2\x1b\\"
    )


def test_fit_canvas_keeps_the_aspect_and_centres():
    img = Image.new("RGB", (400, 200), (10, 200, 30))
    canvas = np.asarray(fit_canvas(img, 240, 224))
    ys, xs = np.nonzero(canvas[..., 3])
    assert (xs.min(), xs.max() + 1) == (0, 240) and ys.max() + 1 - ys.min() == 120  # 2:1 kept
    assert ys.min() == (224 - 120) // 2
    assert pixel_box(240, 224) == 256 and pixel_box(1280, 700) == 2048


# -- the terminal --------------------------------------------------------------------------------


def test_resolve_never_probes_without_a_terminal_and_honours_the_switch():
    class NotATty:
        def isatty(self):
            return False

    s = NotATty()
    assert resolve("auto", {}, s, s).protocol == HALFBLOCK  # pipes, run_test, CI logs
    assert resolve("auto", {"KITTY_WINDOW_ID": "1"}, s, s).protocol == HALFBLOCK  # not a tty: nothing to draw on
    assert resolve("halfblock", {"KITTY_WINDOW_ID": "1"}, s, s).protocol == HALFBLOCK
    forced = resolve("sixel", {}, s, s)
    assert forced.protocol == SIXEL and forced.cell == (10, 20)  # VT340 cell when nothing is known
    assert resolve("bogus", {}, s, s).note.startswith("unknown thumbnail protocol")
    assert parse_answers("\x1b[?63;1;2;4;6;9;15;22c") == {"da1": ["63", "1", "2", "4", "6", "9", "15", "22"]}
    assert parse_answers("\x1b[6;17;8t\x1b[?1;0;1024S\x1b[?2;0;1000;1000S\x1b[?62;22c") == {
        "da1": ["62", "22"],
        "cell": (8, 17),
        "colors": 1024,
        "max_pixels": (1000, 1000),
    }


def answering_terminal(answer: bytes):
    """A pty whose far end answers the first query with ``answer`` (what a terminal would send)."""
    master, slave = pty.openpty()
    asked = []

    def reply():
        try:
            asked.append(os.read(master, 1024))
            os.write(master, answer)
        except OSError:  # closed unasked (inside tmux nothing is asked)
            pass

    threading.Thread(target=reply, daemon=True).start()
    return master, open(slave, "r+b", buffering=0), asked


@pytest.mark.parametrize(
    "answer,env,expected",
    [
        (
            b"\x1b[6;15;8t\x1b[?1;0;256S\x1b[?2;0;1000;1000S\x1b[?63;1;2;4;6;9;15;22c",
            {"TERM": "xterm"},
            SIXEL,
        ),  # xterm -ti vt340
        (b"\x1b[?62;22c", {"TERM": "xterm-256color"}, HALFBLOCK),  # no attribute 4: no sixel
        (b"\x1b[?62;22c", {"TERM": "xterm-kitty"}, KITTY),
        (b"\x1b[?62;4c", {"TERM": "tmux-256color", "TMUX": "/tmp/tmux-0/default,1,0"}, HALFBLOCK),  # no passthrough
    ],
)
def test_resolve_asks_the_terminal(answer, env, expected):
    master, tty, asked = answering_terminal(answer)
    try:
        found = resolve("auto", env, tty, tty)
        assert found.protocol == expected
        if expected == SIXEL:
            assert found.max_pixels == (1000, 1000) and found.colors == 256
        if "TMUX" not in env:
            assert b"\x1b[c" in asked[0]  # DA1 was asked, and the answer ended the wait
    finally:
        tty.close()
        os.close(master)


# -- the painter in the app ----------------------------------------------------------------------


def graphics_app(root, protocol: str):
    app = make_app(root, "reds", k=6, graphics=TerminalGraphics(protocol, CELL))
    sent: list[str] = []
    app.painter.write = sent.append  # headless: keep what would go to the terminal
    return app, sent


def thumbnail_regions(app):
    out = {}
    for card in app.batch_screen.cards():
        r = app.screen.find_widget(card.thumbnail).region
        out[card.thumbnail._placement] = (r.x, r.y, r.width, r.height)
    return out


@pytest.mark.slow
@pytest.mark.asyncio
async def test_kitty_places_each_thumbnail_once_and_follows_screens(photo_root):
    app, sent = graphics_app(photo_root, KITTY)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        await pilot.pause(0.2)
        regions = thumbnail_regions(app)
        out = "".join(sent)
        placed = {int(m[3]): m for m in PLACE.findall(out)}
        missing = [c for c in app.batch_screen.cards() if "blue5" in c.hit.path]
        for pid, (x, y, w, h) in regions.items():
            if missing and missing[0].thumbnail._placement == pid:
                assert pid not in placed  # a missing file keeps its text box, no image
                continue
            row, col, image_id, _, sx, sy, sw, sh, c, r = map(int, placed[pid])
            assert (col - 1, row - 1, c, r) == (x, y, w, h)  # on the thumbnail's cells, exactly
            assert (sx, sy, sw, sh) == (0, 0, w * CELL[0], h * CELL[1])  # 1:1 pixels
        transmitted = TRANSMIT.findall(out)
        assert len(transmitted) == len(set(transmitted)) == len(placed)  # each image sent once

        sent.clear()
        await pilot.press("p")  # preview: another screen
        await pilot.pause(0.3)
        await settle(pilot)
        out = "".join(sent)
        deleted = {int(p) for _, p in DELETE.findall(out)}
        assert set(placed) <= deleted  # the grid's images are gone
        big = app.screen.big
        r = app.screen.find_widget(big).region
        preview = [m for m in PLACE.findall(out) if int(m[3]) == big._placement]
        assert preview and tuple(map(int, preview[-1][8:10])) == (r.width, r.height)
        assert int(preview[-1][6]) == r.width * CELL[0]  # the terminal's full pixel size, not a cell cap

        sent.clear()
        await pilot.press("escape")
        await pilot.pause(0.3)
        out = "".join(sent)
        back = {int(m[3]) for m in PLACE.findall(out)}
        assert set(placed) <= back and not TRANSMIT.findall(out)  # placed again, nothing re-sent

        sent.clear()
        await pilot.press("question_mark")  # a modal over the grid
        await pilot.pause(0.3)
        assert set(placed) <= {int(p) for _, p in DELETE.findall("".join(sent))}
        await pilot.press("escape")
        await pilot.pause(0.3)

        sent.clear()
        await pilot.resize_terminal(100, 36)
        await pilot.pause(0.5)
        await settle(pilot)
        await pilot.pause(0.3)
        regions = thumbnail_regions(app)
        moved = {int(m[3]): m for m in PLACE.findall("".join(sent))}
        for pid, (x, y, w, h) in regions.items():
            if pid in moved:
                row, col, *_, c, r = map(int, moved[pid])
                assert (col - 1, row - 1, c, r) == (x, y, w, h)
        assert len(moved) >= len(placed) - 1


def test_sixel_images_fit_the_terminals_largest_image(tmp_path):
    from localq.tui.graphics import Painter
    from localq.tui.thumbnails import ThumbnailCache

    path = tmp_path / "wide.png"
    Image.new("RGB", (1600, 900), (90, 140, 200)).save(path)
    cache = ThumbnailCache()
    painter = Painter(TerminalGraphics(SIXEL, (8, 16), 256, (1000, 1000)), cache, lambda s: None)
    prepared = painter.prepare(painter.key(str(path), 160, 44, False))  # a 1280x704 preview
    assert prepared.canvas.size == (1280 - 2 * 18 * 8, 704) and prepared.offset == (18 * 8, 0)  # centred, <= 1000
    cache.close()


@pytest.mark.slow
@pytest.mark.asyncio
async def test_sixel_is_redrawn_only_where_textual_rewrote_cells(photo_root):
    app, sent = graphics_app(photo_root, SIXEL)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        await pilot.pause(0.2)
        regions = thumbnail_regions(app)
        drawn = {(int(c) - 1, int(r) - 1): (int(w), int(h)) for r, c, w, h in SIXEL_AT.findall("".join(sent))}
        images = [(x, y, w, h) for (x, y, w, h) in regions.values() if (x, y) in drawn]
        assert len(images) >= 5  # all but the missing file
        for x, y, w, h in images:
            assert drawn[(x, y)] == (w * CELL[0], h * CELL[1])
        assert sent[0].startswith(sixel.START_SCROLLING)

        sent.clear()
        app.batch_screen.status_line.busy = "working"  # the spinner ticks: no thumbnail is touched
        await pilot.pause(0.5)
        app.batch_screen.status_line.busy = None
        await pilot.pause(0.1)
        assert not SIXEL_AT.findall("".join(sent))

        sent.clear()
        await pilot.press("j")  # focus moves: two cards repaint their borders and cells
        await pilot.pause(0.3)
        redrawn = {(int(c) - 1, int(r) - 1) for r, c, _, _ in SIXEL_AT.findall("".join(sent))}
        assert 1 <= len(redrawn) < len(images) + 1


def latest_placements(sent: list[str]) -> dict[int, tuple]:
    """placement id -> its last (col, row, image id, source x, y, w, h, cols, rows), or None once deleted."""
    out: dict[int, tuple | None] = {}
    for m in re.finditer(PLACE.pattern + "|" + DELETE.pattern, "".join(sent)):
        if m.group(1):
            row, col, image_id, pid, sx, sy, sw, sh, c, r = map(int, m.groups()[:10])
            out[pid] = (col - 1, row - 1, image_id, sx, sy, sw, sh, c, r)
        else:
            out[int(m.group(12))] = None
    return out


@pytest.mark.slow
@pytest.mark.asyncio
async def test_kitty_crops_scrolled_thumbnails_and_dims_skipped_ones(photo_root):
    app, sent = graphics_app(photo_root, KITTY)
    async with app.run_test(size=(80, 20)) as pilot:  # too small for the batch: the grid scrolls
        await settle(pilot)
        app.batch_screen.query_one("#scroll").scroll_to(y=6, animate=False)  # the top row half out of sight
        await pilot.pause(0.5)
        await settle(pilot)
        await pilot.pause(0.2)
        shown = latest_placements(sent)
        cropped = 0
        for card in app.batch_screen.cards():
            thumb = card.thumbnail
            if "blue5" in card.hit.path:
                continue
            try:
                geometry = app.screen.find_widget(thumb)
                visible, region = geometry.visible_region, geometry.region
            except Exception:
                visible = None
            if not visible or not visible.area:
                assert shown.get(thumb._placement) is None  # scrolled out: no image left behind
                continue
            col, row, _, sx, sy, sw, sh, c, r = shown[thumb._placement]
            assert (col, row, c, r) == (visible.x, visible.y, visible.width, visible.height)
            assert (sx, sy, sw, sh) == (
                (visible.x - region.x) * CELL[0],
                (visible.y - region.y) * CELL[1],
                visible.width * CELL[0],
                visible.height * CELL[1],
            )
            cropped += visible.height < region.height
        assert cropped >= 1  # at least one card is cut by the edge of the scrolled grid

        focused = app.focused.thumbnail._placement
        before = shown[focused][2]
        sent.clear()
        await pilot.press("x")  # skip: Textual dims the card's text, the painter its pixels
        await pilot.pause(0.5)
        await settle(pilot)
        await pilot.pause(0.2)
        after = latest_placements(sent)[focused]
        assert after is not None and after[2] != before and TRANSMIT.findall("".join(sent))
