"""Sixel encoding of an RGBA image (transparent pixels left untouched on screen).

Sixel paints six pixel rows per text band; each colour of a band is one run-length coded
row of characters ('?' + six bits). The image is quantised to the terminal's colour
registers (256 unless it said fewer) without dithering: dithering makes every band a
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
    quantised = rgba.convert("RGB").quantize(colors=max(2, min(256, colors)), method=Image.Quantize.MEDIANCUT,
                                             dither=Image.Dither.NONE)
    index = np.asarray(quantised).astype(np.int16)
    index[~opaque] = -1
    palette = np.asarray(quantised.getpalette()[: 3 * 256], np.int32).reshape(-1, 3)
    used = np.unique(index[index >= 0])
    # P2=1: pixels a colour does not set stay as they were (transparency); "1;1: square pixels.
    out = [f'\x1bP0;1;0q"1;1;{width};{height}']
    out += [f"#{c};2;{r * 100 // 255};{g * 100 // 255};{b * 100 // 255}" for c, (r, g, b) in zip(used, palette[used])]
    weights = (1 << np.arange(6, dtype=np.int16))[:, None]
    for top in range(0, height, 6):
        band = index[top:top + 6]
        if band.shape[0] < 6:
            band = np.vstack([band, np.full((6 - band.shape[0], width), -1, np.int16)])
        rows = []
        for c in np.unique(band[band >= 0]):
            bits = ((band == c) * weights).sum(axis=0) + 63
            rows.append(f"#{c}" + _run_length(bits))
        out.append("$".join(rows) + "-")
    out.append("\x1b\\")
    return "".join(out)


def _run_length(chars: np.ndarray) -> str:
    """Sixel characters with runs of 4 or more written as !<count><char>; trailing blanks dropped."""
    nonblank = np.flatnonzero(chars != 63)
    if not len(nonblank):
        return ""
    chars = chars[: nonblank[-1] + 1]
    starts = np.concatenate([[0], np.flatnonzero(np.diff(chars)) + 1])
    lengths = np.diff(np.concatenate([starts, [len(chars)]]))
    parts = []
    for start, n in zip(starts.tolist(), lengths.tolist()):
        ch = chr(int(chars[start]))
        parts.append(ch * n if n < 4 else f"!{n}{ch}")
    return "".join(parts)
