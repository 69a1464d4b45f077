"""`localq embed`: images -> embedding shards (``localq.ingest.shards``), in-process or on Ray.

The work is one stateful callable class, ``EmbedBatch``: it loads the encoder once, then
turns a batch of paths into vectors with the indexer's decoding rules (``imageio``:
EXIF orientation, RGB, decompression bombs; an undecodable file becomes a row with a
skip reason and a zero vector, never an error). In-process, batches go through one
instance in order. With Ray, the same class runs in Ray Data ``map_batches`` as a pool
of actors (one per CPU unless ``workers`` says otherwise), and this process writes each
shard as soon as all its rows have come back, so the files only need to be reachable
from the driver.

Resumable: the plan (which image goes in which shard) is a pure function of the sorted
source listing and the shard size, and the manifest lists finished shards; a re-run
embeds only the shards it does not list, and refuses when the listing has changed under
the finished ones (their rows would no longer line up with the plan).

Ray and pyarrow are imported only when used.
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from localq.errors import BadImage, BadShard, EmbedFailed
from localq.ingest import ray_job, shards
from localq.ingest.scan import FileEntry, ScanSkip, scan
from localq.outputs import OutputFolder

DEFAULT_SHARD_SIZE = 10_000
_NONE = ""  # Ray's numpy batches hold strings; "" stands for a missing value
Progress = Callable[[int, int], None]


@dataclass
class EmbedReport:
    out: str
    model_id: str
    dim: int
    images: int = 0  # rows planned over all shards
    shards_total: int = 0
    shards_written: int = 0
    shards_existing: int = 0
    embedded: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0
    first_result_s: float | None = None  # from the start of the run to the first embedded batch back
    engine: str = "in-process"

    @property
    def rate(self) -> float:
        return self.embedded / self.seconds if self.seconds else 0.0


# -- the per-batch work (runs in this process or in a Ray actor) -----------------------------


class EmbedBatch:
    """Callable class for Ray Data ``map_batches`` (and for the in-process loop).

    ``encoder_factory`` builds the encoder inside the worker; it defaults to
    ``load_encoder(spec, weights)``. Tests pass a picklable class instead."""

    def __init__(self, spec: str | None = None, weights: str | None = None, encoder_factory=None):
        if encoder_factory is None:
            from localq.encoders import load_encoder

            self.encoder = load_encoder(spec, weights)
        else:
            self.encoder = encoder_factory()

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from localq.imageio import file_digest, read_file, read_image

        encoder = self.encoder
        n = len(batch["path"])
        hashes, widths, heights = [_NONE] * n, np.full(n, -1, np.int64), np.full(n, -1, np.int64)
        reasons = [str(r) for r in batch["skip_reason"]]
        tensors, rows = [], []
        for i, path in enumerate(batch["path"]):
            if reasons[i]:
                continue
            try:
                data = read_file(path)  # regular files only; what is decoded is what was hashed
                hashes[i] = file_digest(data)
                decoded = read_image(data, getattr(encoder, "image_size", None))
                tensors.append(encoder.preprocess(decoded.image))
            except OSError as exc:
                reasons[i] = f"unreadable: {exc.strerror or exc}"
                continue
            except BadImage as exc:
                reasons[i] = exc.reason
                continue
            widths[i], heights[i] = decoded.width, decoded.height
            rows.append(i)
        vectors = np.zeros((n, encoder.dim), np.float32)
        if tensors:
            import torch

            vectors[rows] = encoder.encode_batch(torch.stack(tensors))
        out = dict(batch)
        out.update(
            hash=np.array(hashes, dtype=object),
            width=widths,
            height=heights,
            skip_reason=np.array(reasons, dtype=object),
            vector=vectors,
        )
        return out


# -- planning ----------------------------------------------------------------------------------


def list_source(source: str | Path) -> list[dict]:
    """One item per image, sorted by path: a folder tree (labels and split from
    split/class/file folders) or a .parquet/.csv list with an ``image_path`` (or
    ``path``) column and optional ``label``/``split`` columns."""
    source = Path(source).expanduser()
    if source.is_file() and source.suffix.lower() in (".parquet", ".csv"):
        found = _listed_files(source)
    elif source.exists():
        found = list(scan([source], with_labels=source.is_dir()))
    else:
        raise BadShard(f"no such folder or list file: {source}")
    items = [_item(x) for x in found]
    items.sort(key=lambda it: it["path"])
    return items


def _item(x: FileEntry | ScanSkip) -> dict:
    if isinstance(x, ScanSkip):
        return dict(path=x.path, size=-1, mtime=-1.0, label=_NONE, split=_NONE, skip_reason=x.reason)
    return dict(
        path=x.path,
        size=int(x.size),
        mtime=float(x.mtime),
        label=x.label or _NONE,
        split=x.split or _NONE,
        skip_reason=_NONE,
    )


def _listed_files(path: Path) -> list[FileEntry | ScanSkip]:
    shards.require_pyarrow()
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path) if path.suffix.lower() == ".parquet" else pacsv.read_csv(path)
    except Exception as exc:  # pyarrow's error types vary by format
        raise BadShard(f"cannot read the list of images {path}: {str(exc).splitlines()[0][:160]}") from exc
    column = next((c for c in ("image_path", "path") if c in table.column_names), None)
    if column is None:
        raise BadShard(f"{path} needs an image_path (or path) column; it has {', '.join(table.column_names)}")
    labels = table.column("label").to_pylist() if "label" in table.column_names else [None] * table.num_rows
    splits = table.column("split").to_pylist() if "split" in table.column_names else [None] * table.num_rows
    base = path.parent
    out: list[FileEntry | ScanSkip] = []
    for p, label, split in zip(table.column(column).to_pylist(), labels, splits):
        full = Path(p).expanduser()
        full = (full if full.is_absolute() else base / full).absolute()
        try:
            st = full.stat()
        except OSError as exc:
            out.append(ScanSkip(str(full), f"unreadable: {exc.strerror or exc}"))
            continue
        out.append(
            FileEntry(
                str(full),
                st.st_size,
                st.st_mtime,
                None if label is None else str(label),
                None if split is None else str(split),
            )
        )
    return out


def plan_shards(items: list[dict], shard_size: int) -> dict[str, list[dict]]:
    if shard_size < 1:
        raise ValueError("shard size must be >= 1")
    width = max(5, len(str(max(0, len(items) - 1) // shard_size)))
    plan = {}
    for start in range(0, len(items), shard_size):
        key = shards.shard_key(start // shard_size, width)
        part = items[start : start + shard_size]
        for row, item in enumerate(part):
            item["shard"], item["row"] = key, row
        plan[key] = part
    return plan


def _check_resume(manifest: dict, plan: dict[str, list[dict]], model_id: str, dtype: str, shard_size: int, out: Path):
    if manifest["model_id"] != model_id:
        raise BadShard(f"{out} holds {manifest['model_id']} shards, not {model_id}: use another --out")
    if manifest.get("dtype") != dtype or int(manifest.get("shard_size", shard_size)) != shard_size:
        raise BadShard(
            f"{out} was written with --dtype {manifest.get('dtype')} --shard-size {manifest.get('shard_size')}: "
            "resume with the same options or use another --out"
        )
    for key, done in manifest["shards"].items():
        part = plan.get(key)
        if (
            not part
            or done.get("rows") != len(part)
            or done.get("first") != part[0]["path"]
            or done.get("last") != part[-1]["path"]
        ):
            raise BadShard(f"the source listing changed since shard {key} in {out} was written: use a new --out")


# -- running -----------------------------------------------------------------------------------


def embed_to_shards(
    source: str | Path,
    out: str | Path,
    *,
    encoder_spec: str | None = None,
    weights: str | None = None,
    shard_size: int = DEFAULT_SHARD_SIZE,
    dtype: str = "float16",
    ray_address: str | None = None,
    workers: int | None = None,
    batch_size: int = 32,
    encoder_factory=None,
    progress: Progress | None = None,
) -> EmbedReport:
    """Embed ``source`` into shards under ``out``; see the module docstring.

    ``ray_address``: None runs in this process; "local" starts a Ray cluster on this
    machine; "auto" or "HOST:PORT" joins a running one. If Ray is already initialised
    in this process, that cluster is used whatever the address."""
    start = time.perf_counter()
    if dtype not in ("float16", "float32"):
        raise ValueError("dtype must be float16 or float32")
    out = Path(out).expanduser()
    shards.require_pyarrow()
    probe = EmbedBatch(encoder_spec, weights, encoder_factory).encoder  # fail fast, here
    items = list_source(source)
    plan = plan_shards(items, shard_size)
    with OutputFolder.open(out) as folder:
        return _embed_into(
            folder,
            source,
            plan,
            len(items),
            probe,
            start,
            encoder_spec=encoder_spec,
            weights=weights,
            shard_size=shard_size,
            dtype=dtype,
            ray_address=ray_address,
            workers=workers,
            batch_size=batch_size,
            encoder_factory=encoder_factory,
            progress=progress,
        )


def _embed_into(
    folder: OutputFolder,
    source,
    plan: dict[str, list[dict]],
    n_items: int,
    probe,
    start: float,
    *,
    encoder_spec,
    weights,
    shard_size: int,
    dtype: str,
    ray_address,
    workers,
    batch_size: int,
    encoder_factory,
    progress: Progress | None,
) -> EmbedReport:
    out = folder.path
    manifest = shards.parse_manifest(out / shards.MANIFEST, folder.read_bytes(shards.MANIFEST))
    if manifest is None:
        with folder.folder(shards.EMB_DIR) as emb_dir:
            if emb_dir.names():
                raise BadShard(f"{out} already holds shards that localq did not write (no manifest): use another --out")
    if manifest is not None:
        _check_resume(manifest, plan, probe.model_id, dtype, shard_size, out)
    else:
        manifest = {
            "format": shards.FORMAT,
            "model_id": probe.model_id,
            "dim": probe.dim,
            "dtype": dtype,
            "encoder_spec": probe.encoder_spec,
            "encoder_weights": probe.weights,
            "shard_size": shard_size,
            "source": str(source),
            "shards": {},
        }
    report = EmbedReport(str(out), probe.model_id, probe.dim, images=n_items, shards_total=len(plan))
    report.shards_existing = len(manifest["shards"])
    todo = {k: part for k, part in plan.items() if k not in manifest["shards"]}
    n_todo = sum(len(p) for p in todo.values())
    if not manifest["shards"]:
        shards.write_manifest(folder, manifest)  # the dim and model are known before any shard
    rows = [it for part in todo.values() for it in part]
    if rows and ray_address is not None:
        ray_job.connect(ray_address)  # an unreachable cluster fails here, before any progress line
    done = 0
    if progress:
        progress(0, n_todo)

    pending: dict[str, list[dict[str, np.ndarray]]] = defaultdict(list)
    counts: dict[str, int] = defaultdict(int)

    def take(batch: dict[str, np.ndarray]) -> None:
        nonlocal done
        if report.first_result_s is None:
            report.first_result_s = time.perf_counter() - start
        for key in np.unique(batch["shard"]):
            sel = np.flatnonzero(batch["shard"] == key)
            pending[key].append({c: np.asarray(v)[sel] for c, v in batch.items()})
            counts[key] += len(sel)
            if counts[key] == len(todo[key]):
                _write(folder, key, pending.pop(key), manifest, dtype, report)
        done += len(batch["path"])
        if progress:
            progress(done, n_todo)

    if rows:
        if ray_address is None:
            worker = EmbedBatch(encoder_spec, weights, encoder_factory)
            for i in range(0, len(rows), batch_size):
                take(worker(_columns(rows[i : i + batch_size])))
        else:
            report.engine = f"ray ({ray_address})"
            ray_job.run(
                EmbedBatch,
                {"spec": encoder_spec, "weights": weights, "encoder_factory": encoder_factory},
                _ray_rows(rows),
                workers=workers,
                batch_size=batch_size,
                take=take,
            )
    if pending:  # every planned row comes back exactly once; anything else is a bug
        raise EmbedFailed(f"shards {sorted(pending)} came back incomplete; re-run to redo them")
    report.seconds = time.perf_counter() - start
    return report


def _columns(rows: list[dict]) -> dict[str, np.ndarray]:
    return {
        "path": np.array([r["path"] for r in rows], dtype=object),
        "shard": np.array([r["shard"] for r in rows], dtype=object),
        "row": np.array([r["row"] for r in rows], dtype=np.int64),
        "size": np.array([r["size"] for r in rows], dtype=np.int64),
        "mtime": np.array([r["mtime"] for r in rows], dtype=np.float64),
        "label": np.array([r["label"] for r in rows], dtype=object),
        "split": np.array([r["split"] for r in rows], dtype=object),
        "skip_reason": np.array([r["skip_reason"] for r in rows], dtype=object),
    }


def _write(
    out: OutputFolder, key: str, parts: list[dict[str, np.ndarray]], manifest: dict, dtype: str, report: EmbedReport
):
    cols = {c: np.concatenate([p[c] for p in parts]) for c in parts[0]}
    order = np.argsort(cols["row"])
    cols = {c: v[order] for c, v in cols.items()}
    if not np.array_equal(cols["row"], np.arange(len(order))):
        raise EmbedFailed(f"shard {key} came back with duplicate or missing rows; re-run to redo it")

    def text(values):
        return [str(v) if str(v) else None for v in values]

    def number(values, cast):
        return [cast(v) if v >= 0 else None for v in values]

    reasons = text(cols["skip_reason"])
    metadata = {
        "image_path": [str(p) for p in cols["path"]],
        "size": number(cols["size"], int),
        "mtime": number(cols["mtime"], float),
        "hash": text(cols["hash"]),
        "width": number(cols["width"], int),
        "height": number(cols["height"], int),
        "label": text(cols["label"]),
        "split": text(cols["split"]),
        "skip_reason": reasons,
    }
    shards.write_shard(out, key, np.stack(cols["vector"]).astype(np.float32), metadata, dtype)
    manifest["shards"][key] = {
        "rows": len(order),
        "first": metadata["image_path"][0],
        "last": metadata["image_path"][-1],
    }
    shards.write_manifest(out, manifest)
    report.shards_written += 1
    report.embedded += sum(1 for r in reasons if not r)
    report.skipped += [(p, r) for p, r in zip(metadata["image_path"], reasons) if r]


def _ray_rows(rows: list[dict]) -> list[dict]:
    return [{k: r[k] for k in ("path", "shard", "row", "size", "mtime", "label", "split", "skip_reason")} for r in rows]
