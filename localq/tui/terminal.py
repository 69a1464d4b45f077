"""What the terminal can draw: the image protocol and the pixel size of one cell.

Asked once, in ``localq train``/``demo`` just before the UI starts (never at import, never
under ``App.run_test``): once Textual runs, its input thread swallows the terminal's
answers. Order: what ``--thumbnails`` says; inside tmux/screen half-blocks (we don't wrap
sequences for passthrough); kitty by its environment (KITTY_WINDOW_ID, TERM=xterm-kitty);
else the DA1 answer (``CSI c``): attribute 4 means sixel. A terminal that answers
nothing within 0.3 s gets half-blocks.
"""

from __future__ import annotations

import os
import re
import struct
import sys
from dataclasses import dataclass

HALFBLOCK, KITTY, SIXEL = "halfblock", "kitty", "sixel"
PROTOCOLS = ("auto", HALFBLOCK, KITTY, SIXEL)
DEFAULT_CELL = (10, 20)  # VT340's cell, when the terminal tells nothing
QUERY_TIMEOUT_S = 0.3


@dataclass(frozen=True)
class TerminalGraphics:
    protocol: str  # halfblock | kitty | sixel
    cell: tuple[int, int] = DEFAULT_CELL  # pixels (width, height) of one cell
    colors: int = 256  # sixel colour registers
    max_pixels: tuple[int, int] | None = None  # the largest sixel image the terminal takes (xterm: 1000x1000)
    note: str | None = None  # said to the user when the request could not be honoured


def resolve(requested: str, env=None, stdin=None, stdout=None) -> TerminalGraphics:
    """The protocol for ``--thumbnails`` (auto|halfblock|kitty|sixel) on this terminal."""
    env = os.environ if env is None else env
    stdin = sys.__stdin__ if stdin is None else stdin
    stdout = sys.__stderr__ if stdout is None else stdout  # Textual draws on stderr: ask where it draws
    if requested not in PROTOCOLS:
        return TerminalGraphics(HALFBLOCK, note=f"unknown thumbnail protocol {requested!r}: showing half-blocks")
    if requested == HALFBLOCK:
        return TerminalGraphics(HALFBLOCK)
    tty = _is_tty(stdin) and _is_tty(stdout)
    if requested == "auto":
        if not tty or env.get("TMUX") or env.get("TERM", "").startswith(("screen", "tmux")):
            return TerminalGraphics(HALFBLOCK)
        protocol = KITTY if _kitty_env(env) else None
    else:
        protocol = requested
    answers = _query(stdin, stdout) if tty else {}
    if protocol is None:
        protocol = SIXEL if "4" in answers.get("da1", ()) else HALFBLOCK
    cell = cell_size(stdout) or answers.get("cell") or DEFAULT_CELL
    colors = answers.get("colors") or 256
    return TerminalGraphics(protocol, cell, min(256, max(16, colors)), answers.get("max_pixels"))


def _kitty_env(env) -> bool:
    return bool(env.get("KITTY_WINDOW_ID")) or env.get("TERM") in ("xterm-kitty", "xterm-ghostty")


def _is_tty(stream) -> bool:
    try:
        return stream is not None and stream.isatty()
    except (ValueError, OSError):
        return False


def cell_size(stream=None) -> tuple[int, int] | None:
    """(width, height) of a cell in pixels from TIOCGWINSZ, or None when the terminal leaves them 0.

    Without ``stream``: the first of stderr (where Textual draws), stdout, stdin that is a terminal."""
    import fcntl
    import termios

    for s in [stream] if stream is not None else [sys.__stderr__, sys.__stdout__, sys.__stdin__]:
        try:
            rows, cols, xpix, ypix = struct.unpack("HHHH", fcntl.ioctl(s.fileno(), termios.TIOCGWINSZ, b"\0" * 8))
        except (OSError, ValueError, AttributeError):
            continue
        return (xpix // cols, ypix // rows) if rows and cols and xpix and ypix else None
    return None


_DA1 = re.compile(r"\x1b\[\?([\d;]*)c")
_CELL = re.compile(r"\x1b\[6;(\d+);(\d+)t")
_REGISTERS = re.compile(r"\x1b\[\?1;0;(\d+)S")
_GEOMETRY = re.compile(r"\x1b\[\?2;0;(\d+);(\d+)S")


def _query(stdin, stdout) -> dict:
    """Ask cell size (CSI 16t), sixel colour registers and largest image (XTSMGRAPHICS) and DA1 in one go.

    DA1 goes last: every terminal answers it, so its answer ends the wait."""
    import select
    import termios
    import time
    import tty

    fd = stdin.fileno()
    try:
        saved = termios.tcgetattr(fd)
    except termios.error:
        return {}
    buf = ""
    try:
        tty.setraw(fd)
        os.write(stdout.fileno(), b"\x1b[16t\x1b[?1;1;0S\x1b[?2;1;0S\x1b[c")
        deadline = time.monotonic() + QUERY_TIMEOUT_S
        while not _DA1.search(buf):
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                break
            buf += os.read(fd, 1024).decode("latin-1")
    except OSError:
        pass
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)
    return parse_answers(buf)


def parse_answers(buf: str) -> dict:
    """The terminal's answers in ``buf``: {'da1': [attributes], 'cell': (w, h), 'colors': n, 'max_pixels': (w, h)}."""
    out: dict = {}
    if m := _DA1.search(buf):
        out["da1"] = m.group(1).split(";")
    if (m := _CELL.search(buf)) and int(m.group(1)) and int(m.group(2)):
        out["cell"] = (int(m.group(2)), int(m.group(1)))
    if m := _REGISTERS.search(buf):
        out["colors"] = int(m.group(1))
    if (m := _GEOMETRY.search(buf)) and int(m.group(1)) and int(m.group(2)):
        out["max_pixels"] = (int(m.group(1)), int(m.group(2)))
    return out
