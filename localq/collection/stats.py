"""``localq stats``: what a collection holds, what it searches with, its size on disk.

Reads SQLite's counts and the files' sizes only: it never loads the vectors, so it answers
at once on a collection of any size. ``Collection.stats`` is its only caller.
"""

from __future__ import annotations

from pathlib import Path

from localq.search import upkeep
from localq.storage import paths


def stats(collection, store) -> dict:
    meta = store.meta()
    sizes = store.file_sizes()
    for name in (paths.VECTORS_FILE, upkeep.FILE_NAME):
        if (collection.root / name).exists():
            sizes[name] = (collection.root / name).stat().st_size
    rows = store.n_rows()
    kind = collection.search_index()
    return {
        "path": str(collection.root),
        "model_id": collection.model_id,
        "encoder": collection.encoder_spec,
        "dim": collection.dim,
        "created_at": meta.get("created_at"),
        "images": store.count_live(),
        "rows": rows,
        "seen": store.count_seen(),
        "skipped": len(store.skipped()),
        "classifiers": len(store.classifiers()),
        # The setting, and what a search of this many rows uses under it.
        "search_index": kind,
        "search": "ivf" if upkeep.wanted(kind, rows) else "exact",
        "bytes": sizes,
        "bytes_total": sum(sizes.values()),
    }


def images_at(root: Path) -> int | None:
    """Live images in the collection at ``root``, read through a read-only connection: no
    migration runs, no lock is waited on. None where it cannot be read (damaged, busy, or
    a schema this version does not know)."""
    import sqlite3

    uri = (Path(root).absolute() / paths.DB_FILE).as_uri() + "?mode=ro"
    try:
        with sqlite3.connect(uri, uri=True, timeout=0.5) as conn:
            return int(conn.execute("SELECT count(*) FROM images WHERE deleted = 0").fetchone()[0])
    except sqlite3.Error:
        return None
