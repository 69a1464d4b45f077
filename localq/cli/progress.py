"""A progress line for long commands: bar, done/total, rate, elapsed and ETA on stderr."""

from __future__ import annotations

import sys
import time

import click

REDRAW_S = 0.2  # a terminal's bar: redrawn in place at most 5 times a second
LOG_EVERY_S = 10.0  # a file or pipe: one plain line this often, each on its own line


class ProgressLine:
    """Callable as ``progress(done, total)``.

    On a terminal, one stderr line redrawn in place. Written to a file or a pipe (a log, CI,
    `2>&1 | tee`), carriage returns would pile thousands of bar states into one log line:
    there it prints a plain line every LOG_EVERY_S seconds, and the last one."""

    def __init__(self, label: str, enabled: bool = True, unit: str = "img", *, interactive: bool | None = None):
        self.label, self.enabled, self.unit = label, enabled, unit
        if interactive is None:
            interactive = _stderr_is_terminal()
        self.interactive = interactive
        self.start = time.perf_counter()
        self.last: float | None = None

    def __call__(self, done: int, total: int) -> None:
        now = time.perf_counter()
        if not self.enabled:
            return
        every = REDRAW_S if self.interactive else LOG_EVERY_S
        if done < total and self.last is not None and now - self.last < every:
            return
        self.last = now
        elapsed = now - self.start
        rate = done / elapsed if elapsed > 0 else 0.0
        eta = (total - done) / rate if rate > 0 else 0.0
        timing = f"{rate:6.1f} {self.unit}/s {_clock(elapsed)} elapsed, ETA {_clock(eta)}"
        if not self.interactive:
            share = f" ({100.0 * done / total:.0f}%)" if total else ""
            click.echo(f"{self.label} {done}/{total}{share} {timing.strip()}", err=True)
            return
        width = 30
        filled = int(width * done / total) if total else width
        click.echo(
            f"\r{self.label} [{'#' * filled}{'-' * (width - filled)}] {done}/{total} {timing}",
            err=True,
            nl=done >= total,
        )


def _stderr_is_terminal() -> bool:
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError, OSError):  # closed or replaced stderr
        return False


def _clock(seconds: float) -> str:
    seconds = int(seconds)
    return (
        f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"
        if seconds >= 3600
        else f"{seconds // 60}:{seconds % 60:02d}"
    )
