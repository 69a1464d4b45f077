"""Turn a tmux pane into a PNG: `tmux capture-pane -e` (the cells and colours the app
really drew in a terminal) -> Rich SVG -> rsvg-convert (cairosvg misdraws half-blocks).

    python docs/screenshots/tmux_shot.py PANE OUT.png    # e.g. localq-demo:0 docs/screenshots/train-160x48.png

Needs tmux and rsvg-convert (Debian: tmux librsvg2-bin). See docs/tui.md, 'Screenshots'.
"""

import html
import io
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from rich.console import Console
from rich.text import Text


TEXT = re.compile(r'(<text [^>]*?x=")([\d.]+)("[^>]*?textLength=")([\d.]+)("[^>]*>)((?:&#160;)+)([^<]*)(</text>)')


def shift_leading_spaces(svg: str) -> str:
    """librsvg drops the leading no-break spaces of a <text>, so the words after them
    slide left; move the x of such a run past its spaces instead (Rich gives each run its
    exact cell width in textLength, so one cell = textLength / characters)."""

    def fix(m: re.Match) -> str:
        spaces = m.group(6).count("&#160;")
        rest = html.unescape(m.group(7))
        cell = float(m.group(4)) / (spaces + len(rest))
        if not rest:
            return m.group(0)
        x = float(m.group(2)) + spaces * cell
        length = float(m.group(4)) - spaces * cell
        return f"{m.group(1)}{x:g}{m.group(3)}{length:g}{m.group(5)}{m.group(7)}{m.group(8)}"

    return TEXT.sub(fix, svg)


def main(pane: str, out: str) -> None:
    size = subprocess.run(["tmux", "display", "-p", "-t", pane, "#{pane_width} #{pane_height}"],
                          check=True, capture_output=True, text=True).stdout.split()
    width, height = int(size[0]), int(size[1])
    ansi = subprocess.run(["tmux", "capture-pane", "-p", "-e", "-N", "-t", pane],
                          check=True, capture_output=True, text=True).stdout
    console = Console(record=True, width=width, height=height, color_system="truecolor", file=io.StringIO(),
                      force_terminal=True, legacy_windows=False)
    for line in ansi.splitlines()[:height]:
        console.print(Text.from_ansi(line, no_wrap=True, end=""), no_wrap=True, crop=True, overflow="crop")
    svg = console.export_svg(title=f"localq · tmux {width}x{height}")
    # The SVG asks for Fira Code from the web; offline, fontconfig substitutes a proportional
    # font and columns drift. Ask for the monospace font that is installed instead.
    svg = svg.replace("Fira Code", "DejaVu Sans Mono")
    svg = shift_leading_spaces(svg)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "shot.svg"
        path.write_text(svg)
        subprocess.run(["rsvg-convert", str(path), "-o", out], check=True)


if __name__ == "__main__":
    main(*sys.argv[1:3])
