"""Sixel encoding of an RGBA image (transparent pixels left untouched on screen).

Sixel paints six pixel rows per text band; each colour of a band is one run-length coded
row of characters ('?' + six bits). The image is quantised to the terminal's colour
registers (256 unless it said fewer) by Pillow's fast octree (median cut took 0.7-0.9 s
for a 240x210 thumbnail, octree 1 ms), without dithering: dithering makes every band a
speckle of short runs, several times the bytes for a thumbnail that is shown at 1:1.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

START_SCROLLING = "\x1b[?80l"  # DECSDM reset: draw at the cursor (xterm's default draws at the top left)


def encode(img: Image.Image, colors: int = 256) -> str:
    """``img`` (RGB or RGBA) as one sixel sequence, drawn from the cursor position, aspect 1:1."""
    rgba = img.convert("RGBA")
    width, height = rgba.size
    opaque = np.asarray(rgba.getchannel("A")) >= 128
    quantised = rgba.convert("RGB").quantize(
        colors=max(2, min(256, colors)), method=Image.Quantize.FASTOCTREE, dither=Image.Dither.NONE
    )
    index = np.asarray(quantised).astype(np.int16)
    index[~opaque] = -1
    palette = np.asarray(quantised.getpalette()[: 3 * 256], np.int32).reshape(-1, 3)
    used = np.flatnonzero(np.bincount(index[index >= 0].ravel(), minlength=256))
    # P2=1: pixels a colour does not set stay as they were (transparency); "1;1: square pixels.
    out = [f'\x1bP0;1;0q"1;1;{width};{height}']
    out += [f"#{c};2;{r * 100 // 255};{g * 100 // 255};{b * 100 // 255}" for c, (r, g, b) in zip(used, palette[used])]
    columns = np.arange(width)
    for top in range(0, height, 6):
        band = index[top : top + 6]
        # bits[c, x]: which of the band's six pixels in column x have colour c (row -1: transparent)
        bits = np.zeros((257, width), np.uint8)
        for k in range(band.shape[0]):
            bits[band[k], columns] += 1 << k
        used = np.flatnonzero(bits[:256].any(axis=1))
        out.append(_band(bits[used] + 63, used, width))
    out.append("\x1b\\")
    return "".join(out)


def _band(rows: np.ndarray, colours: np.ndarray, width: int) -> str:
    """One band: per colour, '#c' and its run-length coded characters; '$' between colours, '-' at the end.

    Vectorised run finding (a Python loop per pixel took ~1.3 s for a 240x210 thumbnail)."""
    flat = rows.ravel()
    if not flat.size:
        return "-"
    change = np.ones(flat.size, bool)
    change[1:] = flat[1:] != flat[:-1]
    change[::width] = True  # a run never crosses from one colour's row to the next
    starts = np.flatnonzero(change)
    lengths = np.diff(np.append(starts, flat.size)).tolist()
    chars = flat[starts]
    row_of = (starts // width).tolist()
    last_in_row = np.append(np.diff(starts // width) != 0, True)
    drop = (last_in_row & (chars == 63)).tolist()  # trailing blanks of a row say nothing
    chars = chars.tolist()
    pieces, current = [], -1
    for r, c, n, skip in zip(row_of, chars, lengths, drop):
        if r != current:
            pieces.append(f"#{colours[r]}" if current < 0 else f"$#{colours[r]}")
            current = r
        if not skip:
            ch = chr(c)
            pieces.append(ch * n if n < 4 else f"!{n}{ch}")
    pieces.append("-")
    return "".join(pieces)
