"""What opening a collection costs, at sizes up to 10M rows (issue 12: under a second).

Opening for search maps vectors.npy (vector_file.py) and checks it against SQLite: the
header, SQLite's row count, and the digest chain's first and last segments
(collection/vector_checks.py). Nothing reads every row. This prints, side by side, medians over
--repeat opens, each in a fresh process state (new Collection, new map):

- floor: ``np.load(vectors.npy, mmap_mode="r")`` plus SQLite's row count, what any
  open must do;
- open: ``Collection.open(root).index``, with every check;
- first search: one unfiltered search right after the open, which pages the rows in
  (from the page cache here: the file was just written or read).

    python scripts/bench_open.py --sizes 1000000 10000000 --dim 64 --work /tmp/bench-open

The dim does not change what an open reads (a header and two segments); a small one
keeps a 10M collection's file at 2.5 GB instead of 20 GB. The synthetic collection (unit
Gaussian vectors, written through Collection.add_images in 100k-row batches) is built
once per size under --work.
"""

from __future__ import annotations

import argparse
import sqlite3
import statistics
import tempfile
import time
from pathlib import Path

import localq  # noqa: F401  (runtime tuning before numpy loads)

# isort: split
import numpy as np

from localq.collection.collection import Collection
from localq.storage.rows import NewImage

_BATCH = 100_000


class SyntheticEncoder:
    encoder_spec, weights, image_size = "synthetic", None, 0

    def __init__(self, dim: int):
        self.dim, self.model_id = dim, f"synthetic-{dim}/v1"


def build(root: Path, n: int, dim: int) -> None:
    with Collection.open(root, create=True) as coll:
        coll.bind_encoder(SyntheticEncoder(dim))
        rng = np.random.default_rng(0)
        for start in range(coll.count_live(), n, _BATCH):
            m = min(_BATCH, n - start)
            x = rng.standard_normal((m, dim)).astype(np.float32)
            x /= np.linalg.norm(x, axis=1, keepdims=True)
            coll.add_images([NewImage(f"/s/{start + i}", f"h{start + i}", 1, 0.0, 1, 1) for i in range(m)], x)


def median_ms(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[1_000_000])
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--work", type=Path)
    args = ap.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="localq-bench-open-"))

    print("| n | dim | vectors.npy | floor: map + row count (ms) | open (ms) | open / floor | first search (ms) |")
    print("|---|---|---|---|---|---|---|")
    for n in args.sizes:
        root = work / f"open-{n}-{args.dim}"
        build(root, n, args.dim)

        def floor():
            np.load(root / "vectors.npy", mmap_mode="r")
            conn = sqlite3.connect(root / "localq.db")
            conn.execute("SELECT coalesce(max(id) + 1, 0) FROM images").fetchone()
            conn.close()

        def opened():
            with Collection.open(root) as coll:
                assert coll.index.ntotal == n

        def first_search():
            with Collection.open(root) as coll:
                coll.index.search(np.ones(args.dim, np.float32), 10)

        base, new = median_ms(floor, args.repeat), median_ms(opened, args.repeat)
        search = median_ms(first_search, args.repeat) - new
        size = (root / "vectors.npy").stat().st_size / 2**30
        print(f"| {n:,} | {args.dim} | {size:.2f} GiB | {base:.1f} | {new:.1f} | {new / base:.1f}x | {search:.1f} |")


if __name__ == "__main__":
    main()
