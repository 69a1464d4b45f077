"""`localq index`: bring a collection level with folders on disk.

New and changed files are embedded in batches; unchanged ones cost a stat (``verify``:
a read and a hash); a file reached twice (a symlink beside its target, overlapping
roots) counts once. A file moved or renamed keeps its image (localq.ingest.moves); deleted
files, and files that no longer decode, are tombstoned and leave search. Each batch
commits its rows and vectors in one SQLite transaction, so a run stopped by Ctrl-C or
kill -9 resumes on the next run with nothing lost or doubled.

Files are read and embedded without any lock; each batch is committed under the
collection's write lock (Collection.add_images: vectors.npy, then SQLite), after
re-checking its paths, so two runs at once (even on the same folder) never misalign ids and rows
nor insert one path twice.

Reading, hashing, decoding and preprocessing the next batch run on a decode thread
(bounded queue, see ``prepared_batches``) while the current batch goes through the
model: Pillow, hashlib and torch release the GIL. SQLite stays on the calling thread
(connections are per thread), as does everything that decides what a file becomes, so
the rows, ids and vectors are exactly those of the sequential loop (decode_workers=0).
"""

from __future__ import annotations

import os
import queue
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping

import numpy as np

from localq.arrays import chunks
from localq.collection.collection import Collection
from localq.errors import BadImage, ImageNotFound
from localq.imageio import file_digest, read_file, read_image
from localq.ingest.moves import MovePool
from localq.ingest.scan import FileEntry, ScanSkip, is_under, scan
from localq.storage.rows import NewImage


@dataclass
class IndexReport:
    scanned: int = 0
    added: int = 0
    reused: int = 0  # identical content already embedded: vector copied, not recomputed
    replaced: int = 0  # changed content: old row tombstoned, new row embedded
    moved: int = 0  # a known image's file found at a new path: same id, labels and all
    unchanged: int = 0
    touched: int = 0  # new mtime, same content
    removed: int = 0  # files deleted, or that no longer decode: they leave search
    duplicates: int = 0  # paths reached a second time (a symlink, overlapping roots): counted once
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, reason) this run
    skipped_known: int = 0  # unchanged files that failed before: not retried
    interrupted: bool = False
    seconds: float = 0.0
    embedded: int = 0

    @property
    def rate(self) -> float:
        return self.embedded / self.seconds if self.seconds else 0.0


Progress = Callable[[int, int], None]
Scanned = tuple[list[FileEntry], list[ScanSkip], int]  # scan_roots: entries, skips, paths seen again

# Decode threads beside the model's own: on 2 cores one keeps the model fed; see
# scripts/bench_index.py --decode-workers for the measurement.
DEFAULT_DECODE_WORKERS = 1
QUEUE_DEPTH = 2  # prepared batches waiting: enough to absorb a slow file, bounded memory
ORDERS = ("scan", "spread")


def index_paths(
    collection: Collection,
    roots: list[str | Path],
    encoder,
    *,
    with_labels: bool = False,
    batch_size: int = 32,
    progress: Progress | None = None,
    decode_workers: int = DEFAULT_DECODE_WORKERS,
    order: str = "scan",
    stop: threading.Event | None = None,
    verify: bool = False,
    known_vectors: Mapping[str, Embedded] | None = None,
    scanned: Scanned | None = None,
) -> IndexReport:
    """Index ``roots`` into ``collection``. ``order="spread"`` embeds files round-robin
    over their folders (class folders, days of photos), so the first minutes of a long
    run already cover everything; it is deterministic, so a resumed run continues the
    same sequence. Setting ``stop`` ends the run after the batch in progress, like Ctrl-C.

    A file whose size and mtime match its row is taken as unchanged without reading it
    (a re-run of a large folder costs a stat per file). A file rewritten at the same size
    with its mtime put back keeps its old vector; ``verify`` re-reads and hashes every
    file, skipped ones included, and catches that. A root that does not exist raises
    ImageNotFound before anything is written.

    ``known_vectors`` (content hash -> Embedded) are vectors embedded elsewhere (on Ray, by
    ``index_on_ray``): a file with one of those hashes is not decoded and its vector is
    taken from there. Everything else, moves and skips included, is as without it.
    ``scanned``: ``scan_roots(roots, with_labels)`` where the caller planned from it
    already (``index_on_ray``), so the folders are walked once."""
    if order not in ORDERS:
        raise ValueError(f"order must be one of {ORDERS}")
    check_roots(roots)
    start = time.perf_counter()
    collection.bind_encoder(encoder)
    report = IndexReport()

    entries, scan_skips, report.duplicates = scanned or scan_roots(roots, with_labels)
    report.scanned = len(entries)
    known_skips = collection.skip_stats()
    # A FIFO or an SVG skipped before, unchanged since, is counted, not reported again.
    new_skips = [s for s in scan_skips if s.size is None or known_skips.get(s.path) != (s.size, s.mtime)]
    report.skipped_known += len(scan_skips) - len(new_skips)
    report.skipped += [(s.path, s.reason) for s in new_skips]
    collection.record_skips([(s.path, s.reason, s.size, s.mtime) for s in new_skips])

    todo, replaces, old_hashes, pool = _plan(collection, roots, entries, scan_skips, report, verify)
    if order == "spread":
        todo = spread_order(todo)
    image_size = getattr(encoder, "image_size", None)
    known_vectors = known_vectors or {}
    not_to_decode = pool.hashes | frozenset(known_vectors)
    prepare = lambda entry: _prepare(entry, encoder, image_size, old_hashes.get(entry.path), not_to_decode)  # noqa: E731
    prepared = prepared_batches(chunks(todo, batch_size), prepare, decode_workers)
    try:
        done = 0
        if progress:
            progress(0, len(todo))
        for batch in prepared:
            _embed_batch(collection, encoder, batch, replaces, pool, report, known_vectors)
            done += len(batch)
            if progress:
                progress(done, len(todo))
            if stop is not None and stop.is_set() and done < len(todo):
                report.interrupted = True
                break
        else:
            # Only now is a file that left its path known to be deleted, not moved: a run
            # stopped early leaves those images for the next run to place (a stop during the
            # last batch is no early stop: every file was placed).
            gone = pool.unclaimed()
            if gone:
                report.removed += collection.remove_if_unchanged(gone)
    except KeyboardInterrupt:
        report.interrupted = True
    finally:
        prepared.close()  # stops and joins the decode thread whatever ended the loop
        collection.save_index()  # the IVF file, where the collection searches one
        report.seconds = time.perf_counter() - start
    return report


EMBED_DIR = "embed-shards"  # inside a collection: where `localq index --ray` embeds to


def index_on_ray(
    collection: Collection,
    roots: list[str | Path],
    encoder,
    *,
    address: str,
    with_labels: bool = False,
    batch_size: int = 32,
    progress: Progress | None = None,
    verify: bool = False,
    encoder_factory=None,
) -> IndexReport:
    """`localq index PATHS --ray ADDRESS`: the files ``index_paths`` would read are embedded
    on Ray into shards inside the collection (``localq.ingest.embed``), then ``index_paths``
    runs as without Ray, taking their vectors by content hash. Moves, ``verify``, skips
    and files gone are therefore the same as on one machine. The shards are deleted
    after; a run killed while embedding resumes from the shards already written.
    ``encoder_factory`` builds ``encoder`` in the Ray workers (tests); by default they
    load its spec and weights."""
    import hashlib
    import shutil

    from localq.ingest import shards
    from localq.ingest.embed import embed_to_shards

    check_roots(roots)
    scanned = scan_roots(roots, with_labels)
    live, known_skips = collection.live_files(), collection.skip_stats()
    # What index_paths will read: a moved file is among them (only its content says it moved).
    todo = [e for e in scanned[0] if _needs_reading(e, live.get(e.path), known_skips, verify)]
    known: dict[str, Embedded] = {}
    out = None
    if todo:
        shards.require_pyarrow()
        import pyarrow as pa
        import pyarrow.parquet as pq

        listed = sorted(e.path for e in todo)
        key = hashlib.sha256("\0".join(listed).encode("utf-8", "surrogateescape")).hexdigest()[:16]
        out = collection.root / EMBED_DIR / key
        out.mkdir(parents=True, exist_ok=True)
        files = out.parent / f"{key}.parquet"
        pq.write_table(pa.table({"image_path": listed}), files)
        try:
            embed_to_shards(
                files,
                out,
                encoder_spec=encoder.encoder_spec,
                weights=encoder.weights,
                dtype="float32",
                ray_address=address,
                batch_size=batch_size,
                encoder_factory=encoder_factory,
                progress=progress,
            )
        except BaseException:
            if not any(out.rglob("*.npy")):  # nothing embedded yet (no cluster, say): leave nothing behind
                shutil.rmtree(out, ignore_errors=True)
                files.unlink(missing_ok=True)
            raise
        for shard in shards.list_shards(out):
            data = shards.read_shard(shard, collection.dim)
            meta = data.metadata
            reasons = meta.get("skip_reason") or [None] * data.rows
            for i, digest in enumerate(meta.get("hash") or []):
                if digest and not reasons[i]:
                    known[digest] = Embedded(data.vectors[i], int(meta["width"][i]), int(meta["height"][i]))
    report = index_paths(
        collection,
        roots,
        encoder,
        with_labels=with_labels,
        batch_size=batch_size,
        verify=verify,
        known_vectors=known,
        scanned=scanned,
    )
    if out is not None and not report.interrupted:
        shutil.rmtree(out, ignore_errors=True)
        (out.parent / f"{out.name}.parquet").unlink(missing_ok=True)
    return report


def check_roots(roots) -> None:
    """ImageNotFound, naming the first root that does not exist: a mistyped folder is an
    error, not an empty success."""
    for root in roots:
        path = Path(root).expanduser()
        if not os.path.lexists(path):
            raise ImageNotFound(f"{path}: no such file or directory; nothing was indexed")


def scan_roots(roots, with_labels: bool) -> Scanned:
    """Every file under ``roots`` once (``_once_each``): (entries, skips, paths seen again)."""
    entries, scan_skips = [], []
    for item in scan([Path(r) for r in roots], with_labels=with_labels):
        (entries if isinstance(item, FileEntry) else scan_skips).append(item)
    return _once_each(entries, scan_skips)


def _needs_reading(entry: FileEntry, row, known_skips: dict, verify: bool) -> bool:
    """False for a file taken as unchanged (its row's size, mtime and label) or as the same
    bad file skipped before; ``verify`` reads every file."""
    if verify:
        return True
    if row is not None:
        return not (
            row.size == entry.size and row.mtime == entry.mtime and (not entry.label or row.label == entry.label)
        )
    return known_skips.get(entry.path) != (entry.size, entry.mtime)


def _once_each(entries: list[FileEntry], skips: list[ScanSkip]):
    """Each real file once: a symlink to a file beside it, a root named twice or through
    '..', a root inside another all reach one file (FileEntry paths are resolved) more
    than once, and one batch must never insert a path twice. The first sighting wins (its
    folder label included). Returns (entries, skips, paths seen again)."""
    seen: set[str] = set()
    unique_entries, unique_skips = [], []
    for entry in entries:
        if entry.path not in seen:
            seen.add(entry.path)
            unique_entries.append(entry)
    for skip in skips:
        if skip.path not in seen:
            seen.add(skip.path)
            unique_skips.append(skip)
    return unique_entries, unique_skips, len(entries) + len(skips) - len(unique_entries) - len(unique_skips)


def _plan(collection, roots, entries, scan_skips, report, verify: bool = False):
    """Split scanned files into unchanged / touched / to embed, and find the images whose
    files left their paths (deleted, or moved: the MovePool tells which as files are read)."""
    live = collection.live_files()
    known_skips = collection.skip_stats()
    todo: list[FileEntry] = []
    replaces: dict[str, int] = {}
    old_hashes: dict[str, str] = {}
    for entry in entries:
        row = live.get(entry.path)
        if not _needs_reading(entry, row, known_skips, verify):
            if row is not None:
                report.unchanged += 1
            else:
                report.skipped_known += 1
            continue
        if row is not None:
            replaces[entry.path] = row.id
            old_hashes[entry.path] = row.hash
        todo.append(entry)

    scanned = {e.path for e in entries}
    blocked = [s.path + os.sep for s in scan_skips]  # unreadable dirs: keep what we had
    prefixes = [_root_prefix(r) for r in roots]
    gone = [
        row
        for path, row in live.items()
        if path not in scanned
        and any(is_under(path, p) for p in prefixes)
        and not any(path.startswith(b) for b in blocked)
    ]
    gone_skips = [p for p in known_skips if not os.path.lexists(p)]
    collection.forget_skips(gone_skips)
    return todo, replaces, old_hashes, MovePool(gone, prefixes, scanned, collection.live_rows_with_hash)


def spread_order(entries: list[FileEntry]) -> list[FileEntry]:
    """Round-robin over parent folders (each folder in scan order, folders sorted): the
    first n files cover every folder about evenly. Deterministic for the same files."""
    by_folder: dict[str, list[FileEntry]] = defaultdict(list)
    for entry in entries:
        by_folder[os.path.dirname(entry.path)].append(entry)
    queues = [by_folder[k] for k in sorted(by_folder)]
    out: list[FileEntry] = []
    for i in range(max((len(q) for q in queues), default=0)):
        out += [q[i] for q in queues if i < len(q)]
    return out


def _root_prefix(root) -> str:
    return str(Path(root).expanduser().resolve())


@dataclass(frozen=True)
class Embedded:
    """A file's vector and pixel size, embedded elsewhere (on Ray, into shards)."""

    vector: np.ndarray
    width: int
    height: int


@dataclass
class Prepared:
    """One file read, hashed and (unless its content is known unchanged) decoded and
    preprocessed, off the main thread."""

    entry: FileEntry
    digest: str | None = None
    error: str | None = None  # skip reason: unreadable, or undecodable
    width: int = 0
    height: int = 0
    tensor: object = None  # the encoder's input, CHW


def _prepare(
    entry: FileEntry, encoder, image_size: int | None, old_hash: str | None, moved_hashes: frozenset[str] = frozenset()
) -> Prepared:
    try:
        data = read_file(entry.path)  # regular files only: never blocks on a FIFO swapped in
    except BadImage as exc:
        return Prepared(entry, error=exc.reason)
    item = Prepared(entry, digest=file_digest(data))
    if item.digest == old_hash or item.digest in moved_hashes:
        return item  # only the stat changed, or a gone image's content: its vector is known
    try:
        # Decoded from the bytes just hashed: what is embedded is what was hashed.
        decoded = read_image(data, image_size)
    except BadImage as exc:
        item.error = exc.reason
        return item
    except MemoryError:
        item.error = "too large to decode"
        return item
    item.width, item.height = decoded.width, decoded.height
    item.tensor = encoder.preprocess(decoded.image)
    return item


def prepared_batches(batches, prepare: Callable, workers: int = DEFAULT_DECODE_WORKERS):
    """Yield ``[prepare(x) for x in batch]`` for each batch, in order, computed ahead by
    ``workers`` threads (0: inline, the sequential loop) through a bounded queue. Closing
    the generator (a break, an exception, Ctrl-C) stops the threads before returning."""
    if workers <= 0:
        for batch in batches:
            yield [prepare(x) for x in batch]
        return
    ready: queue.Queue = queue.Queue(maxsize=QUEUE_DEPTH)
    stop = threading.Event()
    done = object()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                ready.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        pool = None
        try:
            if workers > 1:
                from concurrent.futures import ThreadPoolExecutor

                pool = ThreadPoolExecutor(workers, thread_name_prefix="localq-decode")
            for batch in batches:
                if stop.is_set():
                    return
                items = list(pool.map(prepare, batch)) if pool else [prepare(x) for x in batch]
                if not put(items):
                    return
            put(done)
        except BaseException as exc:  # handed to the consumer, raised there
            put(exc)
        finally:
            if pool is not None:
                pool.shutdown(wait=True)

    thread = threading.Thread(target=produce, name="localq-decode", daemon=True)
    thread.start()
    try:
        while True:
            item = ready.get()
            if item is done:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        thread.join()


@dataclass
class _Batch:
    """What one batch does to the collection, decided before the write lock is taken."""

    rows: list[NewImage] = field(default_factory=list)  # new images, with their vectors
    vectors: list = field(default_factory=list)  # per row: an array, or None to encode
    tensors: list = field(default_factory=list)  # (row index, encoder input)
    reused: int = 0
    touches: list = field(default_factory=list)  # (entry, image id): same content, new stat
    moves: list = field(default_factory=list)  # (entry, gone image row, id of the row at the path or None)
    skips: list = field(default_factory=list)  # (path, reason, size, mtime)
    drops: list = field(default_factory=list)  # (path, id): indexed once, no longer readable or decodable


def _embed_batch(
    collection: Collection,
    encoder,
    batch: list[Prepared],
    replaces: dict[str, int],
    pool: MovePool,
    report: IndexReport,
    known_vectors: Mapping[str, Embedded],
):
    plan = _Batch()
    olds = {r.id: r for r in collection.image_rows([replaces[i.entry.path] for i in batch if i.entry.path in replaces])}
    for item in batch:
        entry, digest = item.entry, item.digest
        old_id = replaces.get(entry.path)
        if digest is not None and old_id is not None and olds[old_id].hash == digest:
            plan.touches.append((entry, old_id))  # only the stat changed
            continue
        if digest is None or item.error is not None:
            # A file that no longer decodes leaves search, as a deleted one does; its
            # labels stay in the history (they name the id, which is never reused).
            plan.skips.append((entry.path, item.error, entry.size, entry.mtime))
            if old_id is not None:
                plan.drops.append((entry.path, old_id))
            continue
        source = pool.claim(digest, entry.path)
        if source is not None:
            plan.moves.append((entry, source, old_id))
            continue
        _new_row(collection, plan, item, pool.source(digest), known_vectors.get(digest))
    if plan.tensors:
        import torch

        encoded = encoder.encode_batch(torch.stack([t for _, t in plan.tensors]))
        for (i, _), vector in zip(plan.tensors, encoded):
            plan.vectors[i] = vector
        report.embedded += len(plan.tensors)
    with collection.writing():
        _commit_batch(collection, plan, replaces, pool, report)
    report.reused += plan.reused


def _new_row(collection: Collection, plan: _Batch, item: Prepared, source, known: Embedded | None) -> None:
    """A new image from ``item``; ``source``: a gone image of the same content, when the
    file was not decoded because of it (its vector and size are this file's); ``known``:
    its vector embedded elsewhere (the file was not decoded either)."""
    entry = item.entry
    if item.tensor is None and source is not None:
        width, height, vector = source.width, source.height, collection.vector_of_row(source.id)
    elif item.tensor is None and known is not None:
        width, height, vector = known.width, known.height, known.vector
    else:
        width, height, vector = item.width, item.height, collection.vector_for_content(item.digest)
    plan.rows.append(
        NewImage(entry.path, item.digest, entry.size, entry.mtime, width, height, entry.label, entry.split)
    )
    plan.vectors.append(vector)
    if vector is not None:
        plan.reused += 1
    else:
        plan.tensors.append((len(plan.rows) - 1, item.tensor))


def _commit_batch(collection, plan: _Batch, replaces, pool: MovePool, report) -> None:
    """Under the write lock, with the index caught up: what another run committed since
    this one planned wins where it already did the work."""
    current = collection.live_rows_for(
        [r.path for r in plan.rows]
        + [e.path for e, _ in plan.touches]
        + [e.path for e, _, _ in plan.moves]
        + [p for p, _ in plan.drops]
    )
    _commit_moves(collection, plan, current, pool, report)
    for entry, old_id in plan.touches:
        row = current.get(entry.path)
        if row is not None and row.id == old_id and (row.size, row.mtime) != (entry.size, entry.mtime):
            collection.touch_image(old_id, entry.size, entry.mtime)
            report.touched += 1
        else:
            report.unchanged += 1  # --verify found it as it was (or another run got there first)
    drops = [i for p, i in plan.drops if current.get(p) is not None and current[p].id == i]
    collection.record_skips(plan.skips)
    report.skipped += [(p, r) for p, r, _, _ in plan.skips]
    if drops:
        collection.remove_images(drops)
        report.removed += len(drops)
    keep, replaced = [], []
    for i, new in enumerate(plan.rows):
        row = current.get(new.path)
        if row is not None and row.id != replaces.get(new.path) and row.hash == new.hash:
            report.unchanged += 1  # another run indexed this very file meanwhile
            continue
        keep.append(i)
        if row is not None:
            replaced.append(row.id)  # tombstoned in the same transaction as the new row is added
    if not keep:
        return
    rows = [plan.rows[i] for i in keep]
    vectors = np.stack([np.asarray(plan.vectors[i], dtype=np.float32) for i in keep])
    collection.add_images(rows, vectors, replaces=replaced)
    report.added += len(rows) - len(replaced)
    report.replaced += len(replaced)


def _commit_moves(collection, plan: _Batch, current: dict, pool: MovePool, report) -> None:
    """Move each claimed image to its new path, unless another process changed the image
    or the path meanwhile: then the file becomes a new image like any other."""
    if not plan.moves:
        return
    now = {r.id: r for r in collection.image_rows([source.id for _, source, _ in plan.moves])}
    moves, replaced = [], []
    for entry, source, old_id in plan.moves:
        row, at_path = now.get(source.id), current.get(entry.path)
        if row is None or row.deleted or row.path != source.path or (at_path is not None and at_path.id != old_id):
            pool.release(source)
            plan.rows.append(
                NewImage(
                    entry.path,
                    source.hash,
                    entry.size,
                    entry.mtime,
                    source.width,
                    source.height,
                    entry.label,
                    entry.split,
                )
            )
            plan.vectors.append(collection.vector_of_row(source.id))
            plan.reused += 1
            continue
        label, split = (entry.label, entry.split) if entry.label is not None else (source.label, source.split)
        moves.append((source.id, entry.path, entry.size, entry.mtime, label, split))
        if at_path is not None:
            replaced.append(at_path.id)  # the content this path held is gone: overwritten by the move
    if moves:
        collection.move_images(moves, replaces=replaced)
        report.moved += len(moves)
        report.removed += len(replaced)
