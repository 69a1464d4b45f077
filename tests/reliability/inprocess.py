"""In-process pieces of the reliability trials: a CLI runner on the tiny colour encoder, and
checks that a run ended cleanly (exit status, one error line, no traceback)."""

from __future__ import annotations

import json
import signal
from contextlib import contextmanager

import pytest
from click.testing import CliRunner

import localq.encoders
from conftest import ColorEncoder
from localq.cli import cli


@pytest.fixture
def runner(monkeypatch):
    # The CLI resolves load_encoder at call time; the colour encoder keeps trials fast.
    monkeypatch.setattr(
        localq.encoders, "load_encoder", lambda spec="lite0", weights=None: ColorEncoder(), raising=False
    )
    return CliRunner()


def invoke(runner, *args):
    """Run the CLI in-process; an exception escaping it fails the trial (a traceback is a bug)."""
    return runner.invoke(cli, [str(a) for a in args], catch_exceptions=False)


def ok_json(runner, *args) -> dict:
    result = invoke(runner, *args, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def assert_one_error_line(result, exit_code: int = 1) -> str:
    """Exit ``exit_code``, and stderr is exactly one line starting 'error: '."""
    assert result.exit_code == exit_code, (result.exit_code, result.output)
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.output
    return lines[0]


def assert_terminal_safe(text: str) -> None:
    """No control character but newline and tab, no undecodable byte, no bidi override."""
    bad = [
        c
        for c in text
        if (ord(c) < 32 and c not in "\n\t")
        or 0x7F <= ord(c) < 0xA0
        or 0xD800 <= ord(c) < 0xE000
        or c in "\u202e\u2066\u2067\u2068\u2069\u202a\u202b\u202c\u202d"
    ]
    assert not bad, f"unescaped characters {bad!r} in {text!r}"


@contextmanager
def deadline(seconds: int):
    """Fail (instead of hanging the suite) if the block runs longer than ``seconds``."""

    def expired(*_):
        raise TimeoutError(f"still running after {seconds} s: a read blocked")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
