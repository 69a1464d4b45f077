"""A progress line for long commands: bar, done/total, rate, elapsed and ETA on stderr."""

from __future__ import annotations

import time

import click


class ProgressLine:
    """Callable as ``progress(done, total)``; redraws one stderr line at most 5 times a second."""

    def __init__(self, label: str, enabled: bool = True, unit: str = "img"):
        self.label, self.enabled, self.unit = label, enabled, unit
        self.start = time.perf_counter()
        self.last = 0.0

    def __call__(self, done: int, total: int) -> None:
        now = time.perf_counter()
        if not self.enabled or (now - self.last < 0.2 and done < total):
            return
        self.last = now
        elapsed = now - self.start
        rate = done / elapsed if elapsed > 0 else 0.0
        eta = (total - done) / rate if rate > 0 else 0.0
        width = 30
        filled = int(width * done / total) if total else width
        click.echo(
            f"\r{self.label} [{'#' * filled}{'-' * (width - filled)}] {done}/{total} {rate:6.1f} {self.unit}/s "
            f"{_clock(elapsed)} elapsed, ETA {_clock(eta)}",
            err=True, nl=done >= total,
        )


def _clock(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}" if seconds >= 3600 else f"{seconds // 60}:{seconds % 60:02d}"
