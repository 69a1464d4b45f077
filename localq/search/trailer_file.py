"""Index files that carry their own record: FAISS's bytes, then a JSON trailer.

A collection's IVF index file (``vectors.ivf``) is a cache over vectors.npy's rows. It
records which state of the database it was built from (rows, and the digest SQLite
holds for them), so that a file left by a crash, a restored backup or another
collection is noticed and never used. The record
rides at the end of the same file: FAISS reads an index up to its last byte and ignores
what follows, and one file can be replaced atomically where a file and a sidecar cannot.

Layout: ``<FAISS bytes> <JSON state> <u64 little-endian length of the JSON> LQSTATE1``.
"""

from __future__ import annotations

import json
import os
import struct
import tempfile
from pathlib import Path
from typing import Callable

_MAGIC = b"LQSTATE1"
_MAX_STATE_BYTES = 1 << 16
_TAIL_BYTES = 8 + len(_MAGIC)


def write_atomically(path: Path, write_body: Callable[[str], None], state: dict) -> None:
    """Write ``path`` as ``write_body(tmp)`` followed by ``state``; a crash leaves either
    the old file or the new one, whole.

    Each call writes its own temporary file, so processes never share one. The file
    keeps the mode the old one had (0644 if new), and the rename is made durable."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    os.close(fd)
    try:
        # mkstemp makes the file 0600: keep the mode the index file had.
        os.chmod(tmp, path.stat().st_mode & 0o777 if path.exists() else 0o644)
        write_body(tmp)
        record = json.dumps(state, sort_keys=True).encode()
        with open(tmp, "ab") as f:
            f.write(record + struct.pack("<Q", len(record)) + _MAGIC)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def read_state(path: Path) -> dict | None:
    """The state recorded at the end of ``path``; None if there is none or it is unreadable."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            if size < _TAIL_BYTES:
                return None
            f.seek(size - _TAIL_BYTES)
            tail = f.read(_TAIL_BYTES)
            if tail[8:] != _MAGIC:
                return None
            (length,) = struct.unpack("<Q", tail[:8])
            if length > min(_MAX_STATE_BYTES, size - _TAIL_BYTES):
                return None
            f.seek(size - _TAIL_BYTES - length)
            state = json.loads(f.read(length))
    except (OSError, ValueError):
        return None
    return state if isinstance(state, dict) else None
