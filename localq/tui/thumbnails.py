"""Image thumbnails drawn with text cells: decoding, an LRU cache, and the half-block renderer.

Each terminal cell shows two pixels stacked vertically: the upper one as the foreground
colour of "▀" and the lower one as its background. Cells are about twice as tall as
they are wide, so each half-cell pixel is roughly square and a W-column, H-row box
holds a W x 2H pixel image. This works in every terminal, over SSH and inside tmux,
and it is what the tests use.

Colours: with truecolor each pixel keeps its RGB. Otherwise (common over SSH, where
COLORTERM is not forwarded) each pixel becomes the nearest of xterm's colours 16-255
(the 6x6x6 cube and 24 greys); muted colours lose saturation and gradients band. We
tried Floyd-Steinberg dithering onto the same palette: at thumbnail sizes (24-30 pixels
a side) its speckle hid more of the picture than the banding does, so it is not used
(docs/screenshots/colors-256-vs-truecolor.png compares the three).

Decoding and rendering run off the UI thread, on the cache's own two threads; the cache
keeps the decoded, shrunk images keyed by path and box size, and the rendered lines keyed
by path, size and colour mode, so that returning to a batch or a preview is instant.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Hashable

from PIL import Image
from rich.color import Color
from rich.segment import Segment
from rich.style import Style

UPPER_HALF = "▀"
_PLAIN = Style()  # every segment carries a style: Textual's opacity and tinting expect one

TRUECOLOR = "truecolor"
COLORS_256 = "256"


@dataclass(frozen=True)
class Missing:
    """Why an image could not be shown (file gone, unreadable, not an image)."""

    reason: str


class LRU:
    """A small thread-safe least-recently-used map (decoding threads fill it, the UI reads it)."""

    def __init__(self, capacity: int):
        self.capacity = capacity
        self._items: OrderedDict[Hashable, object] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = self.misses = 0

    def get(self, key: Hashable):
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                self.hits += 1
                return self._items[key]
            self.misses += 1
            return None

    def put(self, key: Hashable, value) -> None:
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self.capacity:
                self._items.popitem(last=False)

    def __contains__(self, key: Hashable) -> bool:
        with self._lock:
            return key in self._items

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)


def decode(path: str, box: int) -> Image.Image | Missing:
    """The image at ``path`` shrunk to fit ``box`` x ``box`` pixels, or why it can't be shown."""
    from localq.errors import BadImage
    from localq.imageio import open_image

    try:
        img = open_image(path, target_size=box)  # JPEG draft: big photos decode at a reduced scale
    except BadImage as exc:
        return Missing(_short_reason(exc.reason))
    except OSError as exc:  # belt and braces: a thumbnail must never take the UI down
        return Missing(exc.strerror or "unreadable")
    img.thumbnail((box, box), Image.Resampling.LANCZOS)
    return img


def _short_reason(reason: str) -> str:
    if reason.startswith("unreadable") and "No such file" in reason:
        return "file not found"
    return reason


class ThumbnailCache:
    """Decoded images (by path and box) and rendered cell lines (by path, box, size and colours).

    Decoding and rendering both run on this cache's own two threads, never on the UI
    thread: a batch of 10 photos costs ~200 ms of CPU to decode and render, and run on
    the UI thread (or on a wide pool that crowds the UI out of two cores) it stalled
    the screen for ~0.6 s after every fit."""

    def __init__(
        self,
        images: int = 256,
        renders: int = 512,
        decoder: Callable[[str, int], Image.Image | Missing] = decode,
        threads: int = 2,
    ):
        self.images = LRU(images)
        self.renders = LRU(renders)
        self._decode = decoder
        self.executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="localq-thumbnails")

    def image(self, path: str, box: int) -> Image.Image | Missing:
        """Blocking: call from a worker thread. Cached, so a second call is a dict lookup."""
        key = (path, box)
        img = self.images.get(key)
        if img is None:
            img = self._decode(path, box)
            self.images.put(key, img)
        return img

    def render(self, path: str, box: int, width: int, height: int, colors: str) -> list[list[Segment]]:
        """Blocking: the image at ``path`` as ``height`` lines of ``width`` cells, decoded if need be."""
        key = (path, box, width, height, colors)
        lines = self.renders.get(key)
        if lines is None:
            img = self.image(path, box)
            lines = (
                render_missing(img.reason, width, height)
                if isinstance(img, Missing)
                else render_halfblock(img, width, height, colors)
            )
            self.renders.put(key, lines)
        return lines

    def cached_lines(self, path: str, box: int, width: int, height: int, colors: str) -> list[list[Segment]] | None:
        """Rendered lines if they are ready, else None (the caller asks ``render`` off the UI thread)."""
        return self.renders.get((path, box, width, height, colors))

    def close(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)


def box_for(width: int, height: int) -> int:
    """Pixel box to decode for a width x height cell area: the next size up from a few fixed ones,
    so that the cache is shared between cards of slightly different sizes."""
    need = max(width, 2 * height)
    for box in (32, 64, 128, 256, 512):
        if need <= box:
            return box
    return 1024


def render_halfblock(img: Image.Image, width: int, height: int, colors: str = TRUECOLOR) -> list[list[Segment]]:
    """``img`` fitted (aspect kept, centred) into ``width`` x ``height`` cells of "▀"."""
    if width <= 0 or height <= 0:
        return [[] for _ in range(max(height, 0))]
    scale = min(width / img.width, 2 * height / img.height)
    w = max(1, min(width, round(img.width * scale)))
    h = max(1, min(2 * height, round(img.height * scale)))
    small = img.convert("RGB").resize((w, h), Image.Resampling.LANCZOS if scale < 1 else Image.Resampling.BILINEAR)
    if colors == TRUECOLOR:
        pixels = small.load()
        colour = lambda x, y: Color.from_rgb(*pixels[x, y])  # noqa: E731
    else:
        indexed = small.quantize(palette=_xterm_palette(), dither=Image.Dither.NONE)
        idx = indexed.load()
        colour = lambda x, y: Color.from_ansi(16 + min(idx[x, y], 239))  # noqa: E731
    left = (width - w) // 2
    top = (2 * height - h) // 2  # in pixels; may be odd, so one cell can hold image + padding
    lines = []
    for row in range(height):
        segments = [Segment(" " * left, _PLAIN)] if left else []
        for x in range(w):
            upper = _pixel(colour, x, 2 * row - top, h)
            lower = _pixel(colour, x, 2 * row + 1 - top, h)
            if upper is None and lower is None:
                segments.append(Segment(" ", _PLAIN))
            elif upper is None:
                segments.append(Segment("▄", Style(color=lower)))
            else:
                segments.append(Segment(UPPER_HALF, Style(color=upper, bgcolor=lower)))
        right = width - left - w
        if right:
            segments.append(Segment(" " * right, _PLAIN))
        lines.append(_merge(segments))
    return lines


def _pixel(colour, x: int, y: int, h: int):
    return colour(x, y) if 0 <= y < h else None


def _merge(segments: list[Segment]) -> list[Segment]:
    """Join neighbouring cells of the same style: fewer segments, faster Textual compositing."""
    out: list[Segment] = []
    for seg in segments:
        if out and out[-1].style == seg.style:
            out[-1] = Segment(out[-1].text + seg.text, seg.style)
        else:
            out.append(seg)
    return out


def render_missing(reason: str, width: int, height: int) -> list[list[Segment]]:
    """A dim box with the reason in its middle, in place of an image that can't be shown."""
    style = Style(color="grey50", dim=True)
    lines = []
    for row in range(height):
        if row == height // 2 - (1 if height > 2 else 0):
            text = "no image"
        elif row == height // 2 + (0 if height > 2 else 1) and height > 1:
            text = reason
        else:
            text = ""
        text = text[:width].center(width) if width else ""
        if row in (0, height - 1) and height > 2 and width > 1:
            text = ("┌" if row == 0 else "└") + "─" * (width - 2) + ("┐" if row == 0 else "┘")
        elif height > 2 and width > 1:
            text = "│" + text[1:-1] + "│"
        lines.append([Segment(text, style)])
    return lines


_PALETTE: Image.Image | None = None


def _xterm_palette() -> Image.Image:
    """A "P" image holding xterm colours 16..255 (the 6x6x6 cube and 24 greys) at indices 0..239."""
    global _PALETTE
    if _PALETTE is None:
        levels = (0, 95, 135, 175, 215, 255)
        rgb = [(r, g, b) for r in levels for g in levels for b in levels]
        rgb += [(8 + 10 * i,) * 3 for i in range(24)]
        rgb += [rgb[-1]] * (256 - len(rgb))  # Pillow wants 256 entries; repeats never win a tie
        pal = Image.new("P", (1, 1))
        pal.putpalette([c for colour in rgb for c in colour])
        _PALETTE = pal
    return _PALETTE


def detect_colors(console_color_system: str | None) -> str:
    """Truecolor when the terminal said so (COLORTERM=truecolor/24bit), else the 256-colour path."""
    return TRUECOLOR if console_color_system == "truecolor" else COLORS_256


def file_name(path: str) -> str:
    from localq.display import printable

    return printable(Path(path).name)  # escapes and undecodable bytes shown, never sent to the terminal
