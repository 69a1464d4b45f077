"""Real pixels on top of Textual's cell grid: the painter for kitty graphics and sixel.

Textual knows only cells. A thumbnail in graphics mode renders blank cells, and after
each screen update (``TrainApp._display``) the painter draws the image of every
thumbnail visible on the *current* screen into its cells:

- **sixel** pixels are overwritten by any text Textual writes into those cells, so an
  image is sent again whenever the update touched its cells (a focus border, a resize, a
  scroll) and not otherwise (the status line's spinner never touches a thumbnail);
- **kitty** images are transmitted once and shown as placements, which text does not
  erase; a placement is moved when its widget moves, cropped when it is partly scrolled
  out, and deleted when it leaves the screen or a modal/other screen covers it.

Each image is fitted (aspect kept, centred) into a canvas of exactly the thumbnail's
cells x the cell's pixel size, transparent around it, so that the terminal draws it
at 1:1: a 30x14-cell card in a terminal with 8x17-pixel cells shows 240x238 pixels,
and the preview fills the whole terminal at its pixel size.
"""

from __future__ import annotations

import itertools
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable

from PIL import Image

from localq.tui import kitty, sixel
from localq.tui.terminal import KITTY, SIXEL, TerminalGraphics
from localq.tui.thumbnails import LRU, Missing, ThumbnailCache, render_missing

KITTY_IMAGES_KEPT = 64  # images held in the terminal's memory (kitty's quota is 320 MB)


@dataclass
class Prepared:
    canvas: Image.Image  # RGBA, cols*cell_w x rows*cell_h (smaller if the terminal caps sixel images)
    image_id: int  # kitty's id for the canvas (0 for sixel)
    payload: str  # kitty: the transmission; sixel: the whole canvas encoded
    offset: tuple[int, int] = (0, 0)  # pixels (whole cells) from the thumbnail's corner to the canvas


def pixel_box(width: int, height: int) -> int:
    """Decode size for a canvas of width x height pixels: the next of a few fixed sizes (shared cache)."""
    need = max(width, height)
    for box in (64, 128, 256, 512, 1024, 2048):
        if need <= box:
            return box
    return 4096


def fit_canvas(img: Image.Image, width: int, height: int, dim: bool = False) -> Image.Image:
    """``img`` fitted into a transparent ``width`` x ``height`` canvas, centred, aspect kept."""
    canvas = Image.new("RGBA", (max(1, width), max(1, height)), (0, 0, 0, 0))
    scale = min(width / img.width, height / img.height)
    w, h = max(1, round(img.width * scale)), max(1, round(img.height * scale))
    resample = Image.Resampling.LANCZOS if scale < 1 else Image.Resampling.BICUBIC
    fitted = img.convert("RGB").resize((w, h), resample)
    if dim:  # a skipped card: Textual dims its text, the terminal draws the pixels, so dim them here
        fitted = Image.blend(fitted, Image.new("RGB", fitted.size, (0, 0, 0)), 0.45)
    canvas.paste(fitted, ((width - w) // 2, (height - h) // 2))
    return canvas


class Painter:
    """Prepares images off the UI thread and draws them after each screen update."""

    def __init__(self, setup: TerminalGraphics, cache: ThumbnailCache, write: Callable[[str], None]):
        assert setup.protocol in (KITTY, SIXEL)
        self.protocol = setup.protocol
        self.cell = setup.cell
        self.colors = setup.colors
        self.max_pixels = setup.max_pixels if setup.protocol == SIXEL else None
        self.cache = cache
        self.write = write
        self.prepared = LRU(96)
        self.thumbnails: dict[int, object] = {}  # placement id -> Thumbnail widget
        self.shown: dict[int, tuple] = {}  # placement id -> what was last drawn there
        self.crops: OrderedDict[tuple, str] = OrderedDict()  # sixel of partly visible images
        self.transmitted: OrderedDict[int, None] = OrderedDict()
        self._ids = itertools.count(1)
        self._started = False

    # -- preparing (worker threads) ------------------------------------------------------------
    def key(self, path: str, cols: int, rows: int, dim: bool) -> tuple:
        return path, cols, rows, self.cell, dim

    def prepare(self, key: tuple) -> Prepared | list:
        """Blocking. The canvas and its payload, or the 'no image' lines of a file that can't be shown."""
        found = self.prepared.get(key)
        if found is not None:
            return found
        path, cols, rows, (cw, ch), dim = key
        width, height = cols * cw, rows * ch
        img = self.cache.image(path, pixel_box(width, height))
        if isinstance(img, Missing):
            found = render_missing(img.reason, cols, rows)
        else:
            offset = (0, 0)
            if self.max_pixels and (width > self.max_pixels[0] or height > self.max_pixels[1]):
                # xterm draws no sixel image over 1000x1000 by default: a preview at 1280x700
                # would stay blank. Shrink the canvas by whole cells on both sides (so that it
                # stays centred exactly) until it fits the cap.
                kx = max(0, -(-(width - self.max_pixels[0]) // (2 * cw)))
                ky = max(0, -(-(height - self.max_pixels[1]) // (2 * ch)))
                offset = (kx * cw, ky * ch)
                width, height = max(cw, width - 2 * kx * cw), max(ch, height - 2 * ky * ch)
            canvas = fit_canvas(img, width, height, dim)
            if self.protocol == KITTY:
                image_id = next(self._ids)
                found = Prepared(canvas, image_id, kitty.transmit(image_id, canvas))
            else:
                found = Prepared(canvas, 0, sixel.encode(canvas, self.colors), offset)
        self.prepared.put(key, found)
        return found

    def cached(self, key: tuple) -> Prepared | list | None:
        return self.prepared.get(key)

    # -- the thumbnails on screen (UI thread) ---------------------------------------------------
    def register(self, thumbnail) -> int:
        pid = next(self._ids)
        self.thumbnails[pid] = thumbnail
        return pid

    def unregister(self, pid: int) -> None:
        self.thumbnails.pop(pid, None)
        last = self.shown.pop(pid, None)
        if last and self.protocol == KITTY:
            self.write(kitty.delete_placement(last[0], pid))

    def set_cell(self, cell: tuple[int, int] | None) -> bool:
        """A new cell pixel size (font change); True if it changed (thumbnails re-prepare)."""
        if not cell or cell == self.cell:
            return False
        self.cell = cell
        return True

    def after_display(self, app, touched: list | None) -> None:
        """Draw what the update at ``touched`` (regions; None = everything) covered or moved."""
        from textual.errors import NoWidget

        out: list[str] = []
        if not self._started and self.protocol == SIXEL:
            out.append(sixel.START_SCROLLING)
        self._started = True
        current = app.screen
        for pid, thumb in list(self.thumbnails.items()):
            want = None
            prepared = thumb.prepared()
            if isinstance(prepared, Prepared) and thumb.is_attached and thumb.screen is current and thumb.display:
                try:
                    geometry = current.find_widget(thumb)
                except NoWidget:
                    geometry = None
                if geometry is not None and geometry.visible_region.area:
                    region, visible = geometry.region, geometry.visible_region
                    cw, ch = self.cell
                    source = (
                        (visible.x - region.x) * cw,
                        (visible.y - region.y) * ch,
                        visible.width * cw,
                        visible.height * ch,
                    )
                    want = (
                        prepared.image_id,
                        visible.x,
                        visible.y,
                        visible.width,
                        visible.height,
                        source,
                        id(prepared),
                    )
            last = self.shown.get(pid)
            if want is None:
                if last is not None:
                    self.shown.pop(pid)
                    if self.protocol == KITTY:
                        out.append(kitty.delete_placement(last[0], pid))
                continue
            hit = touched is None or any(want_region_overlaps(want, r) for r in touched)
            if want == last and not hit:
                continue
            if self.protocol == KITTY:
                out.append(self._kitty(pid, prepared, want, last))
            else:
                out.append(self._sixel(prepared, want))
            self.shown[pid] = want
        if out:
            self.write("".join(out))

    def _kitty(self, pid: int, prepared: Prepared, want: tuple, last: tuple | None) -> str:
        out = []
        image_id = prepared.image_id
        if image_id not in self.transmitted:
            out.append(prepared.payload)
            self.transmitted[image_id] = None
            while len(self.transmitted) > KITTY_IMAGES_KEPT:
                old, _ = self.transmitted.popitem(last=False)
                if all(s[0] != old for s in self.shown.values()):
                    out.append(kitty.free(old))
                else:  # still on screen: keep it
                    self.transmitted[old] = None
                    break
        else:
            self.transmitted.move_to_end(image_id)
        if last is not None and last[0] != image_id:
            out.append(kitty.delete_placement(last[0], pid))
        _, x, y, w, h, source, _ = want
        out.append(kitty.place(image_id, pid, x, y, w, h, source))
        return "".join(out)

    def _sixel(self, prepared: Prepared, want: tuple) -> str:
        _, x, y, w, h, source, _ = want
        sx, sy, sw, sh = source  # the visible part of the thumbnail, in its pixels
        ox, oy = prepared.offset
        cw_, ch_ = prepared.canvas.size
        left, top, right, bottom = max(sx, ox), max(sy, oy), min(sx + sw, ox + cw_), min(sy + sh, oy + ch_)
        if right <= left or bottom <= top:
            return ""
        crop = (left - ox, top - oy, right - ox, bottom - oy)
        if crop == (0, 0, cw_, ch_):
            data = prepared.payload
        else:  # partly scrolled out: encode the visible part (on the UI thread, but rare and small)
            key = (id(prepared), crop)
            data = self.crops.get(key)
            if data is None:
                data = sixel.encode(prepared.canvas.crop(crop), self.colors)
                self.crops[key] = data
                while len(self.crops) > 32:
                    self.crops.popitem(last=False)
        col, row = x + (left - sx) // self.cell[0], y + (top - sy) // self.cell[1]
        return f"\x1b[{row + 1};{col + 1}H" + data

    def clear(self) -> str:
        """Sequences that remove everything drawn (on exit)."""
        self.shown.clear()
        return kitty.delete_all() if self.protocol == KITTY else ""


def want_region_overlaps(want: tuple, region) -> bool:
    _, x, y, w, h, _, _ = want
    return region.x < x + w and x < region.x + region.width and region.y < y + h and y < region.y + region.height


def touched_regions(update) -> list | None:
    """The screen regions a Textual compositor update rewrites (None: don't know, assume all)."""
    from textual._compositor import ChopsUpdate, LayoutUpdate
    from textual.geometry import Region

    if isinstance(update, LayoutUpdate):
        return [update.region]
    if isinstance(update, ChopsUpdate):
        return [Region(x1, y, x2 - x1, 1) for y, x1, x2 in update.spans]
    return None
