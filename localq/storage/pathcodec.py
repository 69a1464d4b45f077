"""File paths in and out of SQLite, losslessly, whatever bytes they hold.

On Linux a file name is bytes. Python decodes the bytes that are not UTF-8 to lone
surrogates ('bad\\udcff.jpg'), which SQLite's UTF-8 TEXT cannot hold: binding one raised
UnicodeEncodeError and killed `localq index` on every run. A path that is valid UTF-8
(nearly all) is stored as TEXT, unchanged; any other is stored as a BLOB of its exact
bytes. A BLOB never equals a TEXT value in SQLite, and no valid-UTF-8 path is ever a
BLOB, so the unique index on live paths still holds, and reading a BLOB back gives the
same surrogate-escaped str that os.scandir produced: the file can be opened again.
"""

from __future__ import annotations

import os


def to_db(path: str) -> str | bytes:
    """The value to bind for ``path``."""
    try:
        path.encode("utf-8")
        return path
    except UnicodeEncodeError:
        pass
    try:
        return os.fsencode(path)  # the original bytes of a name os.scandir decoded
    except UnicodeEncodeError:
        # Surrogates that no file system produced (only a Python caller can make these):
        # no file can have this name, so a readable stand-in loses nothing.
        return path.encode("utf-8", "backslashreplace").decode("utf-8")


def from_db(value: str | bytes | None) -> str | None:
    """The str path for a stored value (``to_db``'s inverse)."""
    return os.fsdecode(value) if isinstance(value, bytes) else value
