"""Neutralise untrusted text (file names, labels, classifier prompts) before it reaches
a terminal, the way `ls` does.

A file name may hold any byte but '/' and NUL: escape sequences that clear the screen
or set the window title, newlines that forge extra output lines, bidirectional
overrides that reverse what is shown, and bytes that are not UTF-8 at all (Python
carries those as lone surrogates, which would crash a UTF-8 stdout). ``printable``
shows each of them as a visible escape, on a terminal and in a pipe alike: a title
sequence that passes through ``| less -R`` or a log file is as harmful as one printed
directly. JSON output needs none of this: json.dumps escapes them itself.
"""

from __future__ import annotations

import os
import unicodedata

# Invisible characters that reorder the text around them (Trojan Source, CVE-2021-42574).
_BIDI = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
# Categories shown escaped: control characters (C0, DEL, C1), lone surrogates (the
# undecodable bytes of a name) and the line/paragraph separators.
_ESCAPED_CATEGORIES = frozenset({"Cc", "Cs", "Zl", "Zp"})


def printable(value: object) -> str:
    """``value`` (str, bytes or path) as one line of text safe to print anywhere.

    Undecodable bytes show as ``\\xff``; control characters as ``\\x1b``, ``\\n``...;
    everything else, accents and emoji included, as is."""
    if isinstance(value, bytes):
        text = value.decode("utf-8", "surrogateescape")
    elif isinstance(value, os.PathLike):
        text = os.fsdecode(value)
    else:
        text = str(value)
    if text.isprintable() and text.isascii():
        return text  # the common case, fast
    return "".join(_escape(c) for c in text)


def _escape(c: str) -> str:
    if c in _BIDI:
        return f"\\u{ord(c):04x}"
    category = unicodedata.category(c)
    if category not in _ESCAPED_CATEGORIES:
        return c
    code = ord(c)
    if 0xDC80 <= code <= 0xDCFF:  # surrogateescape: the original byte
        return f"\\x{code - 0xDC00:02x}"
    if c in "\n\r\t":
        return {"\n": "\\n", "\r": "\\r", "\t": "\\t"}[c]
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"
