"""Kitty graphics protocol sequences: transmit an image once, place it on cells, delete it.

We use direct placements (an image anchored at a cell, above the text) rather than the
Unicode-placeholder mode: placeholders need kitty >= 0.28, and Debian 12 (what CI and
many servers run) ships kitty 0.26.5. Placements are not erased by text written under
them, so the painter (graphics.py) moves or deletes them as the layout changes. Every
command is sent with q=2: answers would reach Textual's input thread as key presses.
"""

from __future__ import annotations

import base64
import io

from PIL import Image

CHUNK = 4096


def _command(keys: str, payload: str = "") -> str:
    return f"\x1b_G{keys};{payload}\x1b\\" if payload else f"\x1b_G{keys}\x1b\\"


def transmit(image_id: int, img: Image.Image) -> str:
    """Send ``img`` (as PNG) to the terminal under ``image_id``, without showing it."""
    buf = io.BytesIO()
    img.save(buf, format="PNG", compress_level=1)
    data = base64.standard_b64encode(buf.getvalue()).decode("ascii")
    chunks = [data[i : i + CHUNK] for i in range(0, len(data), CHUNK)] or [""]
    out = []
    for n, chunk in enumerate(chunks):
        more = int(n < len(chunks) - 1)
        keys = f"a=t,f=100,t=d,i={image_id},q=2,m={more}" if n == 0 else f"m={more}"
        out.append(_command(keys, chunk))
    return "".join(out)


def place(
    image_id: int, placement_id: int, col: int, row: int, cols: int, rows: int, source: tuple[int, int, int, int]
) -> str:
    """Show the ``source`` (x, y, w, h pixels) part of the image on ``cols`` x ``rows`` cells from
    (col, row) (0-based). Replaces the placement with the same ids; the cursor does not move."""
    x, y, w, h = source
    return f"\x1b[{row + 1};{col + 1}H" + _command(
        f"a=p,i={image_id},p={placement_id},x={x},y={y},w={w},h={h},c={cols},r={rows},C=1,q=2"
    )


def delete_placement(image_id: int, placement_id: int) -> str:
    return _command(f"a=d,d=i,i={image_id},p={placement_id},q=2")


def free(image_id: int) -> str:
    """Delete the image and its data from the terminal's memory."""
    return _command(f"a=d,d=I,i={image_id},q=2")


def delete_all() -> str:
    return _command("a=d,d=A,q=2")
