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
the next run overwrites. Shards from other tools have no manifest: every pair present is
taken as complete, and ``read_shard`` checks it.

pyarrow is imported inside the functions that need it (``localq --help`` stays fast).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from localq.errors import BadShard, first_line

MANIFEST = "manifest.json"
FORMAT = "localq-shards/1"
EMB_DIR, META_DIR = "img_emb", "metadata"
_EMB_NAME = re.compile(r"^img_emb_(.+)\.npy$")

# Column names and types localq writes; foreign shards may carry only image_path.
METADATA_COLUMNS = {
    "image_path": "string", "size": "int64", "mtime": "float64", "hash": "string",
    "width": "int64", "height": "int64", "label": "string", "split": "string",
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
    if not path.exists():
        return None
    try:
        manifest = json.loads(path.read_text())
        if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
            raise ValueError("unknown format")
        int(manifest["dim"]), str(manifest["model_id"])
    except (ValueError, KeyError, TypeError) as exc:
        raise BadShard(f"{path} is not a localq shard manifest ({exc}); delete it to treat the shards as foreign") from exc
    manifest.setdefault("shards", {})
    return manifest


def write_manifest(root: Path, manifest: dict) -> None:
    path = Path(root) / MANIFEST
    _atomic_write(path, json.dumps(manifest, indent=1, sort_keys=True).encode())


# -- writing ----------------------------------------------------------------------------


def write_shard(root: Path, key: str, vectors: np.ndarray, metadata: dict[str, list], dtype: str) -> None:
    """Write one shard's two files atomically (temp names, fsync, rename). The caller
    records it in the manifest afterwards: until then the shard does not exist."""
    require_pyarrow()
    import pyarrow as pa
    import pyarrow.parquet as pq

    root = Path(root)
    (root / EMB_DIR).mkdir(parents=True, exist_ok=True)
    (root / META_DIR).mkdir(parents=True, exist_ok=True)
    n = len(vectors)
    for column, values in metadata.items():
        if len(values) != n:
            raise ValueError(f"metadata column {column} has {len(values)} rows, vectors {n}")
    table = pa.table({c: pa.array(v, type=METADATA_COLUMNS.get(c)) for c, v in metadata.items()})
    emb = emb_path(root, key)
    tmp = emb.with_name(emb.name + ".tmp")
    with open(tmp, "wb") as f:
        np.save(f, np.ascontiguousarray(vectors, dtype=dtype))
        f.flush()
        os.fsync(f.fileno())
    meta = meta_path(root, key)
    meta_tmp = meta.with_name(meta.name + ".tmp")
    pq.write_table(table, meta_tmp)
    _fsync_file(meta_tmp)
    os.replace(tmp, emb)
    os.replace(meta_tmp, meta)
    _fsync_dir(emb.parent)
    _fsync_dir(meta.parent)


# -- reading ----------------------------------------------------------------------------


def read_shard(shard: Shard, dim: int | None = None) -> ShardData:
    """Load and check one shard; any defect is a one-line ``BadShard`` naming the file.

    Checked: the npy is whole and 2-d float16/float32 of ``dim`` columns, the metadata
    exists with an ``image_path`` column and as many rows, and every row not marked
    with a skip reason is finite and of unit length."""
    require_pyarrow()
    import pyarrow.parquet as pq

    try:
        raw = np.load(shard.vectors, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise BadShard(f"{shard.vectors} is unreadable or truncated ({first_line(exc, 160)})") from exc
    if raw.ndim != 2 or raw.dtype not in (np.float16, np.float32):
        raise BadShard(f"{shard.vectors} holds {raw.dtype} of shape {raw.shape}, not [rows, dim] float16/float32")
    if dim is not None and raw.shape[1] != dim:
        raise BadShard(f"{shard.vectors} holds {raw.shape[1]}-d vectors, expected {dim}-d")
    if not shard.metadata.exists():
        raise BadShard(f"shard {shard.key}: metadata file {shard.metadata} is missing")
    try:
        table = pq.read_table(shard.metadata)
    except Exception as exc:  # pyarrow raises several types for damaged files
        raise BadShard(f"{shard.metadata} is unreadable ({first_line(exc, 160)})") from exc
    if "image_path" not in table.column_names:
        raise BadShard(f"{shard.metadata} has no image_path column (columns: {', '.join(table.column_names)})")
    if table.num_rows != len(raw):
        raise BadShard(
            f"shard {shard.key}: {len(raw)} vectors but {table.num_rows} metadata rows; re-create the shard"
        )
    metadata = {c: table.column(c).to_pylist() for c in table.column_names}
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
            f"{shard.vectors} row {row} has norm {norms[off[0]]:.4f}: rows must be L2-normalized "
            f"({len(off)} such rows)"
        )
    vectors[skipped] = 0.0
    return ShardData(shard.key, vectors, metadata)


def require_pyarrow() -> None:
    """Shards are parquet: a clear error where pyarrow is not installed."""
    try:
        import pyarrow  # noqa: F401
    except ImportError as exc:
        raise BadShard("embedding shards need pyarrow: pip install -e '.[ray]' (or pip install pyarrow)") from exc


# -- helpers ------------------------------------------------------------------------------


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
