"""Labeled collections for the benchmark, and readable class names for its prompts.

Two sources become a collection with a class label and a split per image:

- a folder layout ``split/class/file`` (Imagenette, CIFAR-10 in ``../shared/datasets``),
  indexed by the ordinary indexer with folder labels;
- a Hugging Face ``datasets``-style parquet export (an image column of
  ``{bytes, path}`` structs and a ClassLabel column), unpacked once into that same
  folder layout inside the collection directory and then indexed the same way, so the
  collection's embedding cache and resume-after-kill work identically for both.

Indexing is incremental, so a second run over the same source costs only a scan.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Callable

from localq.errors import LocalqError
from localq.label_names import readable  # the core's lookup, shared with the labeling UI

PARQUET_DIR = "parquet-images"  # inside the collection directory
# Folder names that name a split rather than a class, for parquet files laid out as
# <split>/<shard>.parquet (the Hub's refs/convert/parquet branch).
SPLIT_NAMES = ("train", "validation", "valid", "val", "test")


class BenchDataError(LocalqError):
    """A benchmark data source is missing, unreadable or has no labels."""


# -- class names -------------------------------------------------------------------------------
def class_names(labels: list[str], overrides: dict[str, str] | None = None) -> dict[str, str]:
    """Readable name per label: an override, else the WordNet word for a synset, else the label."""
    overrides = overrides or {}
    return {label: overrides[label] if label in overrides else readable(label) for label in labels}


def load_class_names(path: str | Path) -> dict[str, str]:
    """A JSON object {label: name}, e.g. to name classes that folder names abbreviate."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise BenchDataError(f"cannot read class names from {path}: {exc}") from None
    if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
        raise BenchDataError(f"{path} must hold a JSON object of label -> class name")
    return {str(k): v for k, v in data.items()}


# -- sources -----------------------------------------------------------------------------------
def parquet_files(source: Path) -> list[Path]:
    """The parquet files of a source (a file, or a folder searched recursively)."""
    if source.is_file():
        return [source] if source.suffix == ".parquet" else []
    return sorted(source.rglob("*.parquet"))


def index_source(
    collection, source: str | Path, encoder, *, batch_size: int = 32, progress: Callable[[int, int], None] | None = None
):
    """Bring ``collection`` level with ``source`` (folder layout or parquet export), labels on."""
    from localq.ingest.indexer import index_paths

    source = Path(source).expanduser()
    if not source.exists():
        raise BenchDataError(f"no data set at {source}: give a folder of split/class/file images or a parquet export")
    files = parquet_files(source)
    root = unpack_parquet(files, Path(collection.root) / PARQUET_DIR) if files else source
    return index_paths(collection, [root], encoder, with_labels=True, batch_size=batch_size, progress=progress)


# -- Hugging Face parquet exports -------------------------------------------------------------
def _pyarrow():
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise BenchDataError("reading parquet data sets needs pyarrow: pip install pyarrow") from None
    return pq


def unpack_parquet(files: list[Path], dest: Path) -> Path:
    """Write every image of ``files`` to ``dest/split/class/NNNNNN.ext``; returns ``dest``.

    Files already written (same size) are kept, so a rerun writes nothing.
    """
    pq = _pyarrow()
    for file in files:
        split = parquet_split(file)
        pf = pq.ParquetFile(file)
        image_col, label_col, names = _columns(pf, file)
        row = 0
        for batch in pf.iter_batches(batch_size=256, columns=[image_col, label_col]):
            for image, label in zip(batch.column(0).to_pylist(), batch.column(1).to_pylist()):
                data, orig = _image_bytes(image)
                if data is None or label is None:
                    row += 1
                    continue
                name = names[label] if names and isinstance(label, int) and 0 <= label < len(names) else str(label)
                path = dest / split / _safe(name) / f"{file.stem}-{row:06d}{_extension(data, orig)}"
                if not (path.exists() and path.stat().st_size == len(data)):
                    path.parent.mkdir(parents=True, exist_ok=True)
                    tmp = path.with_suffix(path.suffix + ".tmp")
                    tmp.write_bytes(data)
                    tmp.replace(path)  # a killed run never leaves a truncated image behind
                row += 1
    return dest


def parquet_split(file: Path) -> str:
    """``train-00000-of-00002.parquet`` -> train; ``.../test/0000.parquet`` -> test."""
    stem = file.stem.split("-")[0].lower()
    if stem in SPLIT_NAMES:
        return stem
    for parent in file.parents:
        if parent.name.lower() in SPLIT_NAMES:
            return parent.name.lower()
    return "train"


def _columns(pf, file: Path) -> tuple[str, str, list[str] | None]:
    """(image column, label column, class names) from the schema and the datasets metadata."""
    import pyarrow as pa

    schema = pf.schema_arrow
    features = {}
    meta = schema.metadata or {}
    if b"huggingface" in meta:
        try:
            features = json.loads(meta[b"huggingface"]).get("info", {}).get("features", {}) or {}
        except ValueError:
            features = {}
    image_cols = [f.name for f in schema if features.get(f.name, {}).get("_type") == "Image"]
    image_cols += [
        f.name
        for f in schema
        if pa.types.is_struct(f.type) and f.type.get_field_index("bytes") >= 0 and f.name not in image_cols
    ]
    label_cols = [n for n, f in features.items() if isinstance(f, dict) and f.get("_type") == "ClassLabel"]
    label_cols += [f.name for f in schema if f.name in ("label", "labels") and f.name not in label_cols]
    if not image_cols or not label_cols:
        raise BenchDataError(
            f"{file}: expected an image column ({{bytes, path}} structs) and a label column; found {', '.join(schema.names)}"
        )
    names = features.get(label_cols[0], {}).get("names")
    return image_cols[0], label_cols[0], names


def _image_bytes(value) -> tuple[bytes | None, str | None]:
    if isinstance(value, dict):
        return value.get("bytes"), value.get("path")
    if isinstance(value, (bytes, bytearray)):
        return bytes(value), None
    return None, None


def _extension(data: bytes, original: str | None) -> str:
    if data[:3] == b"\xff\xd8\xff":
        return ".jpg"
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return ".png"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return ".webp"
    suffix = Path(original).suffix.lower() if original else ""
    return suffix or ".jpg"


def _safe(name: str) -> str:
    """A class name usable as one folder name (it becomes the collection's label)."""
    return re.sub(r"[/\\\x00]", "_", name).strip() or "_"
