"""`localq ingest`: make or extend a collection from embedding shards (``localq.ingest.shards``),
whether localq, clip-retrieval or another job wrote them.

Per shard, in name order: read and check the whole shard first (a bad one stops the
run with a one-line ``BadShard`` before anything of it is written), then, under the
collection's write lock, write its vectors to vectors.npy and insert its images in ONE
SQLite transaction (``Collection.add_images``), then record the shard as ingested. A
kill between the insert and the record is harmless: a re-run finds those paths already
live with the same content hash and adds nothing twice. The IVF file, where one is
wanted, is built or extended at the end.

Which vector space: a localq manifest names the model; foreign shards need
``encoder`` (so that text prompts embed in the same space), which must match the
collection's. Rows whose metadata carries a ``skip_reason`` (localq's undecodable files)
are recorded as skipped, not added.
"""

from __future__ import annotations

import hashlib
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from localq.collection.collection import Collection
from localq.errors import BadShard, EncoderMismatch, EncoderUnavailable
from localq.ingest import shards
from localq.storage.rows import NewImage

Progress = Callable[[int, int], None]


@dataclass
class IngestReport:
    shards_total: int = 0
    shards_ingested: int = 0
    shards_already: int = 0
    added: int = 0
    replaced: int = 0
    present: int = 0  # same path and content already live: not added again
    skipped: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0
    images: int = 0  # live images in the collection afterwards


def ingest_shards(
    collection: Collection,
    root: str | Path,
    encoder=None,
    *,
    with_labels: bool = False,
    progress: Progress | None = None,
) -> IngestReport:
    start = time.perf_counter()
    root = Path(root).expanduser().absolute()
    manifest = shards.read_manifest(root)
    found = shards.list_shards(root)
    _bind(collection, root, manifest, encoder)
    source = str(root.resolve())
    collection.index  # opened and checked before anything is written
    report = IngestReport(shards_total=len(found))
    done = collection.ingested_shards(source)
    live = {path: row.hash for path, row in collection.live_files().items()}
    live_ids = {}  # filled lazily: only replacements need the old id
    if progress:
        progress(0, len(found))
    for n, shard in enumerate(found, 1):
        if shard.key in done:
            report.shards_already += 1
        else:
            data = shards.read_shard(shard, collection.dim)
            added = _ingest_one(collection, data, root, live, live_ids, with_labels, report)
            collection.record_ingested_shard(source, shard.key, data.rows, added, shard.vectors.stat().st_size)
            report.shards_ingested += 1
        if progress:
            progress(n, len(found))
    collection.save_index()  # the IVF file, where the collection searches one
    report.images = collection.count_live()
    report.seconds = time.perf_counter() - start
    return report


def _bind(collection: Collection, root: Path, manifest: dict | None, encoder) -> None:
    if manifest is None:
        if encoder is None:
            raise EncoderUnavailable(
                f"{root} has no {shards.MANIFEST}: say which encoder made its vectors with "
                "--encoder SPEC [--weights FILE] (text prompts must embed in the same space)"
            )
        collection.bind_encoder(encoder)
        return
    model_id, dim = manifest["model_id"], int(manifest["dim"])
    if encoder is not None and encoder.model_id != model_id:
        raise EncoderMismatch(f"shards in {root} were made with {model_id}, not {encoder.model_id}")
    if collection.model_id is not None:
        if collection.model_id != model_id or collection.dim != dim:
            raise EncoderMismatch(
                f"collection {collection.root} holds {collection.model_id} ({collection.dim}-d) vectors; "
                f"shards in {root} are {model_id} ({dim}-d): ingest them into another --db"
            )
        if encoder is not None:
            collection.bind_encoder(encoder)
        return
    if encoder is None:
        from localq.encoders import load_encoder

        encoder = load_encoder(manifest.get("encoder_spec"), manifest.get("encoder_weights") or None)
        if encoder.model_id != model_id:
            raise EncoderMismatch(
                f"shards in {root} were made with {model_id} but {manifest.get('encoder_spec')} "
                f"now loads {encoder.model_id}: pass the matching --encoder/--weights"
            )
    collection.bind_encoder(encoder)


def _ingest_one(
    collection, data: shards.ShardData, root: Path, live: dict, live_ids: dict, with_labels: bool, report
) -> int:
    meta, n = data.metadata, data.rows

    def column(name):
        return meta.get(name) or [None] * n

    paths, hashes, sizes, mtimes = column("image_path"), column("hash"), column("size"), column("mtime")
    widths, heights, reasons = column("width"), column("height"), column("skip_reason")
    labels, splits = (column("label"), column("split")) if with_labels else ([None] * n, [None] * n)
    rows, keep, replaces, skips, seen_here = [], [], [], [], set()
    for i in range(n):
        path = _normalise_path(paths[i], root)
        if not path:
            raise BadShard(f"shard {data.key}: row {i} has an empty image_path")
        size, mtime = sizes[i], mtimes[i]
        if size is None or mtime is None:
            size, mtime = _stat(path, size, mtime)  # foreign shards: fill from the file if reachable
        if reasons[i]:
            skips.append((path, str(reasons[i]), size, mtime))
            continue
        digest = hashes[i] or "vector:" + hashlib.sha256(data.vectors[i].tobytes()).hexdigest()
        if path in seen_here or live.get(path) == digest:
            report.present += 1
            continue
        seen_here.add(path)
        if path in live:
            replaces.append(_live_id(collection, live_ids, path))
        rows.append(
            NewImage(path, digest, int(size), float(mtime), _int(widths[i]), _int(heights[i]), labels[i], splits[i])
        )
        keep.append(i)
    if rows:
        vectors = data.vectors[keep]
        collection.add_images(rows, vectors, replaces=replaces)  # vectors.npy, then one SQLite transaction
        for r in rows:
            live[r.path] = r.hash
    if skips:
        collection.record_skips(skips)
        report.skipped += [(p, r) for p, r, _, _ in skips]
    report.added += len(rows) - len(replaces)
    report.replaced += len(replaces)
    return len(rows)


def _live_id(collection, live_ids: dict, path: str) -> int:
    if path not in live_ids:  # read once, again only for paths added since
        live_ids.update({p: row.id for p, row in collection.live_files().items()})
    return live_ids[path]


def _normalise_path(path, root: Path) -> str:
    """An absolute path; a relative one is taken from the shard folder ``root`` (the
    shards were written there, wherever `localq ingest` happens to run from)."""
    path = str(path or "")
    if "://" in path or not path:
        return path  # a URL (clip-retrieval from webdataset/img2dataset): kept as given
    return os.path.abspath(os.path.join(root, os.path.expanduser(path)))


def _stat(path: str, size, mtime) -> tuple[int, float]:
    try:
        st = os.stat(path)
    except (OSError, ValueError):
        return (size if size is not None else 0), (mtime if mtime is not None else 0.0)
    return (size if size is not None else st.st_size), (mtime if mtime is not None else st.st_mtime)


def _int(value) -> int | None:
    return None if value is None else int(value)
