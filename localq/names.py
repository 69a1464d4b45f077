"""Classifier names: one rule, checked wherever a name enters the core.

A name becomes a file name on export (``NAME.safetensors``, ``NAME-labels.csv``), a
draft file in the TUI and a line on a terminal, and collections are shared between
people. So a name is a slug: an ASCII letter or digit, then up to 63 letters, digits,
dots, dashes or underscores, never ``..``. That excludes path separators, absolute
paths, empty names, control characters and terminal escapes by construction.
"""

from __future__ import annotations

import re
import unicodedata

from localq.errors import InvalidName

MAX_NAME_LENGTH = 64
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
NAME_RULE = "1-64 characters: letters, digits, '.', '-', '_', starting with a letter or digit, no '..'"


def is_valid_name(name: object) -> bool:
    return isinstance(name, str) and NAME_PATTERN.fullmatch(name) is not None and ".." not in name


def check_name(name: object) -> str:
    """``name`` unchanged if it is a valid classifier name, else ``InvalidName``."""
    if not is_valid_name(name):
        from localq.display import printable

        shown = printable(name) if isinstance(name, str) else type(name).__name__
        raise InvalidName(f"invalid classifier name {shown!r}: use {NAME_RULE}")
    return name


def slug(text: str, fallback: str = "classifier") -> str:
    """A valid name made from free text (a prompt, a file stem): 'A photo of a Dog!' ->
    'a-photo-of-a-dog'. Accents are folded to ASCII; what is left empty gives ``fallback``."""
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    keep = "".join(c.lower() if c.isalnum() else "-" for c in ascii_text)
    name = "-".join(part for part in keep.split("-") if part)[:60].strip("-")
    return name if is_valid_name(name) else fallback


def suggestion(name: object, known) -> str | None:
    """The slug of ``name`` when it is one of ``known`` and not ``name`` itself: what a person
    who typed the prompt ('a photo of a church') instead of its classifier's name meant."""
    if not isinstance(name, str):
        return None
    candidate = slug(name, fallback="")
    return candidate if candidate and candidate != name and candidate in set(known) else None
