"""``vectors.npy``: a collection's vectors, one float32 row per image id, on disk.

The file is the vectors' only copy (SQLite keeps everything else, and a digest chain
of these rows: store.py). It is a plain NumPy ``.npy`` file, so ``np.load(path,
mmap_mode="r")`` reads it without localq, and it is memory-mapped rather than loaded:
opening a 10M-row collection reads a 128-byte header, and a search touches only the
pages it needs.

Append-only, and written before SQLite commits the rows it holds:
- a writer (under the collection's write lock) writes the new rows at SQLite's row
  count, rewrites the header's row count in place, and fsyncs, then commits SQLite;
- so the file never holds fewer committed rows than SQLite counts. Rows past that
  count are a killed writer's, never read, and overwritten by the next write;
- readers map the first ``n`` rows, n = SQLite's count when they looked. Those bytes
  never change afterwards (but for `localq repair` embedding damaged rows again), so
  a reader needs no lock.

The header is padded to a fixed ``HEADER_BYTES`` so that the row count can grow in
place: rewriting it is one small write at offset 0.
"""

from __future__ import annotations

import ast
import ctypes
import os
import time
from pathlib import Path

import numpy as np

from localq.errors import EncoderMismatch, VectorsDamaged
from localq.os_errors import write_failures_named

HEADER_BYTES = 128
_MAGIC = b"\x93NUMPY\x01\x00"
_DTYPE = np.dtype("<f4")


class VectorFile:
    """The rows of ``vectors.npy`` at ``path``; see the module docstring."""

    def __init__(self, path: Path, dim: int, rows: int):
        self.path = Path(path)
        self.dim = dim
        self.rows_on_disk = rows  # what the header says: committed rows plus a killed writer's
        self._map: np.ndarray | None = None  # the last rows() asked for, mapped

    @classmethod
    def open(cls, path: Path, dim: int) -> "VectorFile":
        """The file at ``path`` (a missing one reads as no rows and is made by ``write``)."""
        path = Path(path)
        if not path.exists():
            return cls(path, dim, 0)
        if not path.is_file():
            raise VectorsDamaged(f"{path} is not a regular file: move it away and restore the collection's vectors.npy")
        rows, file_dim = settled_header(path)
        if file_dim != dim:
            raise EncoderMismatch(f"{path} holds {file_dim}-d vectors but the collection's encoder makes {dim}-d ones")
        if path.stat().st_size < HEADER_BYTES + rows * dim * _DTYPE.itemsize:
            raise VectorsDamaged(f"{path} is truncated: its header promises {rows} rows: restore it from a backup")
        return cls(path, dim, rows)

    def rows(self, n: int) -> np.ndarray:
        """Rows ``0 .. n - 1`` as a read-only ``[n, dim]`` float32 array mapped from the file.

        Exactly those rows are mapped: past them may lie a killed writer's rows, which the
        next writer truncates."""
        if n > self.rows_on_disk and self.path.exists():
            # Another process wrote since: look at its header again.
            self.rows_on_disk = settled_header(self.path)[0]
        if n > self.rows_on_disk:
            raise VectorsDamaged(
                f"{self.path} holds {self.rows_on_disk} rows but the database has {n} images: the file "
                "was truncated or replaced; restore it from a backup"
            )
        if n == 0:
            return np.empty((0, self.dim), dtype=np.float32)
        if self._map is None or len(self._map) != n:
            self._map = np.memmap(self.path, dtype=_DTYPE, mode="r", offset=HEADER_BYTES, shape=(n, self.dim))
        return self._map

    def write(self, start: int, vectors: np.ndarray) -> None:
        """Write ``vectors`` as rows ``start ..`` and make them durable (caller holds the
        write lock, and commits SQLite only after this returns)."""
        vectors = np.ascontiguousarray(vectors, dtype=_DTYPE)
        if vectors.ndim != 2 or vectors.shape[1] != self.dim:
            raise ValueError(f"expected vectors of shape [n, {self.dim}], got {vectors.shape}")
        if not np.isfinite(vectors).all():
            raise ValueError("vectors contain NaN or infinity")
        if start > self.rows_on_disk and (not self.path.exists() or start > settled_header(self.path)[0]):
            raise VectorsDamaged(f"{self.path} holds fewer rows than the database: restore it from a backup")
        end = start + len(vectors)
        row_bytes = self.dim * _DTYPE.itemsize
        if not self.path.exists():
            # Made whole and renamed into place: a reader never sees a file without its header.
            write_whole(self.path, self.dim, [], 0)
        # A full disk stops the rows' write before the header names them: the file still
        # holds exactly the committed rows, and the error says "no space", not damage.
        with write_failures_named(self.path.parent):
            fd = os.open(self.path, os.O_RDWR)
            try:
                _pwrite_all(fd, memoryview(vectors).cast("B"), HEADER_BYTES + start * row_bytes)
                os.pwrite(fd, header(end, self.dim), 0)
                # A killed writer's rows past the end, cut only now: a header never promises
                # more rows than the file holds.
                os.ftruncate(fd, HEADER_BYTES + end * row_bytes)
                os.fsync(fd)
            finally:
                os.close(fd)
        self.rows_on_disk = end

    def rewrite(self, start: int, vectors: np.ndarray) -> None:
        """Write over committed rows ``start ..`` (``localq repair`` only, under the write
        lock: readers would see the bytes change)."""
        vectors = np.ascontiguousarray(vectors, dtype=_DTYPE)
        if start < 0 or start + len(vectors) > self.rows_on_disk or vectors.shape[1:] != (self.dim,):
            raise ValueError(f"rows {start}..{start + len(vectors) - 1} are not rows of {self.path}")
        fd = os.open(self.path, os.O_RDWR)
        try:
            _pwrite_all(fd, memoryview(vectors).cast("B"), HEADER_BYTES + start * self.dim * _DTYPE.itemsize)
            os.fsync(fd)
        finally:
            os.close(fd)


def header(rows: int, dim: int) -> bytes:
    """An .npy version 1.0 header for ``[rows, dim]`` little-endian float32, HEADER_BYTES long."""
    text = f"{{'descr': '<f4', 'fortran_order': False, 'shape': ({rows}, {dim}), }}"
    padding = HEADER_BYTES - len(_MAGIC) - 2 - len(text) - 1
    return _MAGIC + (HEADER_BYTES - len(_MAGIC) - 2).to_bytes(2, "little") + text.encode() + b" " * padding + b"\n"


def settled_header(path: Path, attempts: int = 5) -> tuple[int, int]:
    """(rows, dim) from the header, read while no writer is rewriting it.

    A writer rewrites the header in place while readers take no lock, so a read can
    catch it half-written: a count that is neither the old nor the new one, or no valid
    header at all. Two reads in a row that agree, and parse, are a settled header; a
    header that stays unreadable across the retries is damaged."""
    for attempt in range(attempts):
        first, second = _raw_header(path), _raw_header(path)
        if first == second:
            try:
                return parse_header(first, path)
            except VectorsDamaged:
                if attempt == attempts - 1:
                    raise
        time.sleep(0.002 * 2**attempt)
    return parse_header(_raw_header(path), path)


def _raw_header(path: Path) -> bytes:
    with open(path, "rb") as f:
        return f.read(HEADER_BYTES)


def parse_header(raw: bytes, path: Path) -> tuple[int, int]:
    """(rows, dim) from a header localq writes; VectorsDamaged for anything else."""
    try:
        if len(raw) < HEADER_BYTES or raw[: len(_MAGIC)] != _MAGIC or raw[-1:] != b"\n":
            raise ValueError
        if int.from_bytes(raw[8:10], "little") != HEADER_BYTES - 10:
            raise ValueError
        fields = ast.literal_eval(raw[10:].decode("latin1").strip())
        rows, dim = fields["shape"]
        if fields["descr"] != "<f4" or fields["fortran_order"] or rows < 0 or dim <= 0:
            raise ValueError
    except (ValueError, SyntaxError, KeyError, TypeError, MemoryError, RecursionError):
        raise VectorsDamaged(
            f"{path} is not a vectors file localq wrote (its header is damaged): restore it from a backup"
        ) from None
    return int(rows), int(dim)


def _pwrite_all(fd: int, data: memoryview, offset: int) -> None:
    while len(data):
        written = os.pwrite(fd, data, offset)
        data, offset = data[written:], offset + written


def write_whole(path: Path, dim: int, blocks, rows: int) -> None:
    """Write a new file of ``rows`` rows from ``blocks`` (arrays of rows, in order) in place
    of ``path``, atomically: a crash leaves the old file or none, never half of this one."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    written = 0
    try:
        with write_failures_named(path.parent), open(tmp, "wb") as f:
            f.write(header(rows, dim))
            for block in blocks:
                block = np.ascontiguousarray(block, dtype=_DTYPE)
                f.write(memoryview(block).cast("B"))
                written += len(block)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        tmp.unlink(missing_ok=True)  # a half-written copy would only take the space a re-run needs
        raise
    if written != rows:
        tmp.unlink()
        raise ValueError(f"wrote {written} rows, expected {rows}")
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)  # the rename itself must survive a power cut
    finally:
        os.close(dir_fd)


_MADV_DONTNEED = 4  # linux/mman.h


def release_pages(matrix: np.ndarray, start: int, stop: int) -> None:
    """Drop the process's mapping of a read-only memmap's rows ``[start, stop)``.

    Pages a build has read once would otherwise count as resident memory of the process
    (10M x 512 floats: 20 GB) until the kernel reclaims them; they stay in the page
    cache, and the next read maps them again. Only read-only maps: dropping pages of a
    copy-on-write map would lose its writes."""
    if not isinstance(matrix, np.memmap) or getattr(matrix, "mode", None) != "r" or stop <= start:
        return
    page = os.sysconf("SC_PAGE_SIZE")
    first = matrix[start:stop]
    begin = first.ctypes.data
    end = begin + first.nbytes
    begin = -(-begin // page) * page  # only whole pages inside the rows' bytes
    end = (end // page) * page
    if end > begin:
        ctypes.CDLL(None, use_errno=True).madvise(
            ctypes.c_void_p(begin), ctypes.c_size_t(end - begin), ctypes.c_int(_MADV_DONTNEED)
        )


def gather_rows(matrix: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """``matrix[ids]`` as a float32 array.

    Rows of a memory-mapped file are read with ``preadv`` into the result, every run of
    neighbouring rows asked for at once first (``POSIX_FADV_WILLNEED``) so that the disk
    serves them in parallel: at 10M rows a cold re-rank of a search fell from 278 to 15 ms
    when the pages were first asked for together. Reading through the map instead would
    fault each row in, and the kernel maps whole folios around every fault: rows read at
    random then count against the process's resident memory until reclaimed (measured at
    10M: 7.5 GB file-backed after 56 searches). ``preadv`` maps nothing, and was faster
    where the pages were cached (1,000 random rows of a 1M file: 3.1 against 6.7 ms) and
    as fast where they were not. Where it cannot be used (no file name, another layout,
    another platform) the rows come through the map. The file is read by name: localq only
    ever appends to or rewrites vectors.npy in place, never replaces it under a reader."""
    ids = np.asarray(ids, dtype=np.int64)
    rows = _pread_rows(matrix, ids)
    return rows if rows is not None else np.asarray(matrix[ids], dtype=np.float32)


# Rows asked for that lie this close are read as one span, the rows between them read too
# and dropped: a read call costs more than copying a few rows. Measured on a cached
# 20,000 x 512 file: 10,000 rows at random took 12.5 ms against 16 ms read a run of
# consecutive rows at a time (15 against 22 ms unsorted).
_GAP_BYTES = 16 << 10
# A span is read into a scratch buffer of at most this size, so the memory a read holds
# stays bounded whatever the ids.
_SPAN_BYTES = 1 << 20


def _pread_rows(matrix: np.ndarray, ids: np.ndarray) -> np.ndarray | None:
    """``matrix[ids]`` read from the memmap's file, or None where the map must answer.

    The distinct ids, in file order, are read a span at a time: one read (and one hint to
    the kernel) per run of rows asked for that lie within ``_GAP_BYTES`` of one another,
    up to ``_SPAN_BYTES``. The rows come back in the order asked, repeats included."""
    place = _file_place(matrix) if len(ids) and hasattr(os, "preadv") else None
    if place is None or ids.min() < 0 or ids.max() >= len(matrix):  # numpy's own indexing and errors
        return None
    path, first_row_at = place
    row_bytes = matrix.strides[0]
    distinct = bool(np.all(ids[1:] > ids[:-1]))  # sorted, no repeats: the rows are the answer as read
    rows, inverse = (ids, None) if distinct else np.unique(ids, return_inverse=True)
    out = np.empty((len(rows), matrix.shape[1]), dtype=np.float32)
    gap_rows = max(1, _GAP_BYTES // row_bytes)
    block_rows = max(1, _SPAN_BYTES // row_bytes)
    # A new span where the gap is too wide, or where the rows cross a block boundary (so no
    # span covers more than block_rows rows of the file).
    breaks = np.flatnonzero((np.diff(rows) > gap_rows) | (np.diff(rows // block_rows) != 0)) + 1
    starts = np.concatenate([[0], breaks]).tolist()
    ends = np.concatenate([breaks, [len(rows)]]).tolist()
    firsts = rows[starts].tolist()
    lasts = rows[np.asarray(ends) - 1].tolist()
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # gone or unreadable by name: the map still holds it
        return None
    try:
        if hasattr(os, "posix_fadvise"):
            for first, last in zip(firsts, lasts):
                os.posix_fadvise(
                    fd, first_row_at + first * row_bytes, (last - first + 1) * row_bytes, os.POSIX_FADV_WILLNEED
                )
        scratch = None
        for start, end, first, last in zip(starts, ends, firsts, lasts):
            offset = first_row_at + first * row_bytes
            if last - first + 1 == end - start:  # every row of the span asked for: read in place
                if not _read_exactly(fd, memoryview(out[start:end]).cast("B"), offset):
                    return None  # the file is shorter than the map: it was replaced since
                continue
            if scratch is None:
                scratch = np.empty((min(block_rows, int(rows[-1] - rows[0]) + 1), matrix.shape[1]), np.float32)
            span = scratch[: last - first + 1]
            if not _read_exactly(fd, memoryview(span).cast("B"), offset):
                return None
            out[start:end] = span[rows[start:end] - first]
    finally:
        os.close(fd)
    return out if inverse is None else out[inverse.reshape(-1)]


def _file_place(matrix: np.ndarray) -> tuple[str, int] | None:
    """(file name, byte offset of row 0) of a memmap of float32 rows laid out one after
    another, or None. A slice of a memmap is one too: its place is found from the array
    that owns the map."""
    if not isinstance(matrix, np.memmap) or matrix.ndim != 2 or matrix.dtype != np.dtype("<f4"):
        return None
    if matrix.strides[1] != 4 or matrix.strides[0] != 4 * matrix.shape[1]:
        return None
    owner = matrix
    while isinstance(owner.base, np.memmap):
        owner = owner.base
    if not owner.filename or not isinstance(owner.offset, int):
        return None
    return owner.filename, owner.offset + (matrix.ctypes.data - owner.ctypes.data)


def _read_exactly(fd: int, view: memoryview, offset: int) -> bool:
    """Fill ``view`` from ``offset``; False if the file ends first. A read may return less
    than asked (Linux stops one at 2 GiB) without being at the end."""
    while len(view):
        got = os.preadv(fd, [view], offset)
        if got == 0:
            return False
        view, offset = view[got:], offset + got
    return True
