"""Turn a tmux pane into a PNG: `tmux capture-pane -e` (the cells and colours the app
really drew in a terminal) -> Rich SVG -> rsvg-convert (cairosvg misdraws half-blocks).

    python docs/screenshots/tmux_shot.py PANE OUT.png    # e.g. localq-demo:0 docs/screenshots/train-160x48.png

Needs tmux and rsvg-convert (Debian: tmux librsvg2-bin). See docs/tui.md, 'Screenshots'.
"""

import io
import subprocess
import sys
import tempfile
from pathlib import Path

from rich.console import Console
from rich.text import Text


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
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "shot.svg"
        path.write_text(svg)
        subprocess.run(["rsvg-convert", str(path), "-o", out], check=True)


if __name__ == "__main__":
    main(*sys.argv[1:3])
