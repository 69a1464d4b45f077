"""Embedding shards on disk in clip-retrieval's layout, so shards from localq, from
clip-retrieval or from any job writing the same layout are interchangeable:

    SHARDS/img_emb/img_emb_{N}.npy          [rows, dim] float16 or float32, unit rows
    SHARDS/metadata/metadata_{N}.parquet    row-aligned; ``image_path`` plus optional
                                            columns (localq writes METADATA_COLUMNS)
    SHARDS/manifest.json                    localq only: model_id, dim, dtype, shards

``N`` is whatever string the writer used (clip-retrieval zero-pads it); an npy file and
a parquet file with the same ``N`` form one shard. A shard that localq writes counts as
complete only once the manifest lists it: both files are written under temporary names,
renamed, and only then recorded, so a killed job leaves at worst an unlisted pair that
the next run overwrites (outputs.py writes them without following anything planted in
the folder). Shards from other tools have no manifest: every pair present is
taken as complete, and ``read_shard`` checks it.

pyarrow is imported inside the functions that need it (``localq --help`` stays fast).
"""

from __future__ import annotations

import json
import math
import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from localq.display import printable
from localq.errors import BadShard, first_line
from localq.outputs import OutputFolder, file_kind

MANIFEST = "manifest.json"
FORMAT = "localq-shards/1"
EMB_DIR, META_DIR = "img_emb", "metadata"
_EMB_NAME = re.compile(r"^img_emb_(.+)\.npy$")

# Column names and types localq writes; foreign shards may carry only image_path.
METADATA_COLUMNS = {
    "image_path": "string",
    "size": "int64",
    "mtime": "float64",
    "hash": "string",
    "width": "int64",
    "height": "int64",
    "label": "string",
    "split": "string",
    "skip_reason": "string",
}

# |norm - 1| allowed for a stored row: float16 keeps about 3 decimal digits, so a row
# normalized in float32 and rounded to float16 is off by up to ~1e-3.
NORM_TOLERANCE = 1e-2


@dataclass(frozen=True)
class Shard:
    key: str  # the {N} of the file names
    vectors: Path
    metadata: Path


@dataclass
class ShardData:
    key: str
    vectors: np.ndarray  # [rows, dim] float32; rows with a skip_reason are zeros
    metadata: dict[str, list]  # column -> row-aligned values (None where missing)

    @property
    def rows(self) -> int:
        return len(self.vectors)


def emb_path(root: Path, key: str) -> Path:
    return Path(root) / EMB_DIR / f"img_emb_{key}.npy"


def meta_path(root: Path, key: str) -> Path:
    return Path(root) / META_DIR / f"metadata_{key}.parquet"


def shard_key(index: int, width: int = 5) -> str:
    """localq's shard names: zero-padded so that name order is shard order."""
    return str(index).zfill(width)


def list_shards(root: Path) -> list[Shard]:
    """Every ``img_emb_{N}.npy`` under ``root``, in name order; a missing metadata file
    is reported by ``read_shard``, not here, so one bad shard names itself."""
    root = Path(root)
    if not root.is_dir():
        raise BadShard(f"no shard directory at {root}")
    emb_dir = root / EMB_DIR
    if not emb_dir.is_dir():
        raise BadShard(f"{root} has no {EMB_DIR}/ folder: not a shard directory (img_emb/img_emb_N.npy)")
    shards = []
    for name in sorted(os.listdir(emb_dir)):
        m = _EMB_NAME.match(name)
        if m:
            key = m.group(1)
            shards.append(Shard(key, emb_dir / name, meta_path(root, key)))
    return shards


# -- manifest -------------------------------------------------------------------------------


def read_manifest(root: Path) -> dict | None:
    path = Path(root) / MANIFEST
    if not os.path.lexists(path):
        return None
    return parse_manifest(path, read_input(path))


def parse_manifest(path: Path, raw: bytes | None) -> dict | None:
    """The manifest in ``raw`` (the bytes of ``path``; None: there is none)."""
    if raw is None:
        return None
    try:
        manifest = json.loads(raw)
        if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
            raise ValueError("unknown format")
        int(manifest["dim"]), str(manifest["model_id"])
    except (ValueError, KeyError, TypeError) as exc:
        raise BadShard(
            f"{path} is not a localq shard manifest ({exc}); delete it to treat the shards as foreign"
        ) from exc
    manifest.setdefault("shards", {})
    return manifest


def write_manifest(root: OutputFolder, manifest: dict) -> None:
    root.write_bytes(MANIFEST, json.dumps(manifest, indent=1, sort_keys=True).encode())


# -- writing ----------------------------------------------------------------------------


def write_shard(root: OutputFolder, key: str, vectors: np.ndarray, metadata: dict[str, list], dtype: str) -> None:
    """Write one shard's two files, each to a temporary name, synced and renamed
    (outputs.py: nothing planted in the folder is followed). The caller records it in
    the manifest afterwards: until then the shard does not exist."""
    require_pyarrow()
    import pyarrow as pa
    import pyarrow.parquet as pq

    n = len(vectors)
    for column, values in metadata.items():
        if len(values) != n:
            raise ValueError(f"metadata column {column} has {len(values)} rows, vectors {n}")
    table = pa.table({c: pa.array(v, type=METADATA_COLUMNS.get(c)) for c, v in metadata.items()})
    with root.folder(EMB_DIR) as emb_dir, root.folder(META_DIR) as meta_dir:
        emb_name, meta_name = emb_path(Path(), key).name, meta_path(Path(), key).name
        emb_dir.check_target(emb_name)
        meta_dir.check_target(meta_name)
        with emb_dir.replacing(emb_name) as f:
            np.save(f, np.ascontiguousarray(vectors, dtype=dtype))
        with meta_dir.replacing(meta_name) as f:
            pq.write_table(table, f)


# -- reading ----------------------------------------------------------------------------


def read_shard(shard: Shard, dim: int | None = None) -> ShardData:
    """Load and check one shard; any defect is a one-line ``BadShard`` naming the file.

    Checked: the npy is whole and 2-d float16/float32 of ``dim`` columns, the metadata
    exists with an ``image_path`` column and as many rows, and every row not marked
    with a skip reason is finite and of unit length."""
    require_pyarrow()
    import pyarrow.parquet as pq

    raw = _read_vectors(shard.vectors, dim)
    if not os.path.lexists(shard.metadata):
        raise BadShard(f"shard {shard.key}: metadata file {shard.metadata} is missing")
    with _open_input(shard.metadata) as fh:
        try:
            table = pq.read_table(fh)
        except Exception as exc:  # pyarrow raises several types for damaged files
            raise BadShard(f"{shard.metadata} is unreadable ({first_line(exc, 160)})") from exc
    if "image_path" not in table.column_names:
        raise BadShard(f"{shard.metadata} has no image_path column (columns: {', '.join(table.column_names)})")
    if table.num_rows != len(raw):
        raise BadShard(f"shard {shard.key}: {len(raw)} vectors but {table.num_rows} metadata rows; re-create the shard")
    metadata = {c: table.column(c).to_pylist() for c in table.column_names}
    _check_metadata(shard.metadata, metadata)
    vectors = raw.astype(np.float32)
    skipped = np.array([bool(r) for r in metadata.get("skip_reason", [None] * len(vectors))], dtype=bool)
    good = vectors[~skipped]
    if not np.isfinite(good).all():
        row = int(np.flatnonzero(~skipped)[np.flatnonzero(~np.isfinite(good).all(axis=1))[0]])
        raise BadShard(f"{shard.vectors} row {row} is NaN or infinite")
    norms = np.linalg.norm(good, axis=1)
    off = np.flatnonzero(np.abs(norms - 1.0) > NORM_TOLERANCE)
    if len(off):
        row = int(np.flatnonzero(~skipped)[off[0]])
        raise BadShard(
            f"{shard.vectors} row {row} has norm {norms[off[0]]:.4f}: rows must be L2-normalized ({len(off)} such rows)"
        )
    vectors[skipped] = 0.0
    return ShardData(shard.key, vectors, metadata)


def require_pyarrow() -> None:
    """Shards are parquet: a clear error where pyarrow is not installed."""
    try:
        import pyarrow  # noqa: F401
    except ImportError as exc:
        raise BadShard("embedding shards need pyarrow: pip install -e '.[ray]' (or pip install pyarrow)") from exc


# -- reading input from elsewhere --------------------------------------------------------
# Shards are made by other tools and other people: every file is opened without blocking
# and read only once it is known to be a regular file (a FIFO would hang the read, a
# link to /dev/zero never end it), and the npy header's claims are checked against the
# file's size before anything is allocated.


def _open_input(path: Path):
    """``path`` opened for reading, refused unless it is (or links to) a regular file."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise BadShard(f"{path} is unreadable ({exc.strerror or exc})") from None
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        kind = file_kind(mode)
        raise BadShard(f"{path} is {kind}, not a regular file: shards are files")
    return os.fdopen(fd, "rb")


def read_input(path: Path) -> bytes:
    with _open_input(path) as fh:
        return fh.read()


def _read_vectors(path: Path, dim: int | None) -> np.ndarray:
    """The [rows, dim] float16/float32 array in the npy file at ``path``, after its header
    is checked against the file's size (a header may claim any shape)."""
    with _open_input(path) as fh:
        try:
            version = np.lib.format.read_magic(fh)
            read_header = {
                (1, 0): np.lib.format.read_array_header_1_0,
                (2, 0): np.lib.format.read_array_header_2_0,
            }.get(version)
            if read_header is None:
                raise ValueError(f"npy format version {version} is not supported")
            shape, fortran, dtype = read_header(fh, max_header_size=10_000)
        except (ValueError, OSError, EOFError, SyntaxError) as exc:
            raise BadShard(f"{path} is unreadable or truncated ({first_line(exc, 160)})") from exc
        if len(shape) != 2 or dtype not in (np.float16, np.float32):
            raise BadShard(f"{path} holds {dtype} of shape {shape}, not [rows, dim] float16/float32")
        if dim is not None and shape[1] != dim:
            raise BadShard(f"{path} holds {shape[1]}-d vectors, expected {dim}-d")
        expected = shape[0] * shape[1] * dtype.itemsize
        actual = os.fstat(fh.fileno()).st_size - fh.tell()
        if actual != expected:
            raise BadShard(
                f"{path} is unreadable or truncated: its header promises {shape[0]} x {shape[1]} "
                f"{dtype} ({expected} bytes), the file holds {actual}"
            )
        data = np.frombuffer(fh.read(expected), dtype=dtype)
    if len(data) * dtype.itemsize != expected:
        raise BadShard(f"{path} changed while it was read: re-run")
    return data.reshape(shape, order="F" if fortran else "C")


_NUMBER_COLUMNS = ("size", "mtime", "width", "height")


def _check_metadata(path: Path, metadata: dict[str, list]) -> None:
    """Refuse rows that could not have come from a file: a non-finite or negative size,
    mtime or dimension, or an image_path holding a NUL byte or, unless a file of that
    very name exists, another control character (they are passed to the OS and shown
    in terminals later)."""
    for column in _NUMBER_COLUMNS:
        for row, value in enumerate(metadata.get(column) or ()):
            if value is None:
                continue
            if (
                not isinstance(value, (int, float))
                or isinstance(value, bool)
                or not math.isfinite(value)
                or (value < 0 and column != "mtime")
            ):
                raise BadShard(f"{path} row {row}: {column} is {value!r}, not a finite number")
    for row, value in enumerate(metadata.get("image_path") or ()):
        if value is None:
            continue
        if not isinstance(value, str):
            raise BadShard(f"{path} row {row}: image_path is {type(value).__name__}, not text")
        if "\0" in value:
            raise BadShard(f"{path} row {row}: image_path holds a NUL byte")
        if _CONTROL.search(value) and not os.path.lexists(value):
            raise BadShard(f"{path} row {row}: image_path {printable(value)} holds a control character")
    for column in ("label", "split", "hash", "skip_reason"):
        for row, value in enumerate(metadata.get(column) or ()):
            if isinstance(value, str) and "\0" in value:
                raise BadShard(f"{path} row {row}: {column} holds a NUL byte")


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
