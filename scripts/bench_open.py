"""What the FAISS state check costs when a collection is opened, and what a round's lock costs.

Opening a collection for search used to read the FAISS file and compare its row count
with SQLite. It now also reads the file's trailer, looks its (rows, digest) up in
SQLite, CRCs the vectors and compares 16 rows with SQLite (collection.py). This prints,
side by side, medians over --repeat opens of:

- baseline: ``faiss.read_index`` + SQLite's row count (the old open, file in sync);
- checked: ``Collection.open(root).index`` (the new open, with every check);
- one filtered search on the opened index, for scale.

    python scripts/bench_open.py --sizes 100000 --dim 512

The synthetic collection (unit Gaussian vectors) is built once per size under --work.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import localq  # noqa: F401  (runtime tuning before numpy/faiss load)
import numpy as np

from localq.collection import Collection
from localq.store import NewImage


class SyntheticEncoder:
    encoder_spec, weights, image_size = "synthetic", None, 0

    def __init__(self, dim: int):
        self.dim, self.model_id = dim, f"synthetic-{dim}/v1"


def build(root: Path, n: int, dim: int) -> None:
    with Collection.open(root, create=True) as coll:
        if coll.store.n_rows() == n:
            return
        coll.bind_encoder(SyntheticEncoder(dim))
        rng = np.random.default_rng(0)
        for start in range(coll.store.n_rows(), n, 50_000):
            m = min(50_000, n - start)
            x = rng.standard_normal((m, dim)).astype(np.float32)
            x /= np.linalg.norm(x, axis=1, keepdims=True)
            coll.store.add_images([NewImage(f"/s/{start + i}", f"h{start + i}", 1, 0.0, 1, 1) for i in range(m)], x)
        coll.save_index()


def median_ms(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[100_000])
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--work", type=Path)
    args = ap.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="localq-bench-open-"))
    import faiss

    print("| n | baseline open (ms) | checked open (ms) | checked / baseline | one search (ms) |")
    print("|---|---|---|---|---|")
    for n in args.sizes:
        root = work / f"open-{n}-{args.dim}"
        build(root, n, args.dim)

        def baseline():
            faiss.read_index(str(root / "vectors.faiss"))
            with Collection.open(root) as coll:
                coll.store.n_rows()

        def checked():
            with Collection.open(root) as coll:
                coll.index
                assert coll.index_problem is None

        base, new = median_ms(baseline, args.repeat), median_ms(checked, args.repeat)
        with Collection.open(root) as coll:
            q = coll.store.vectors([0])[0]
            search = median_ms(lambda: coll.index.search(q, 10, coll.live_mask()), args.repeat)
        print(f"| {n:,} | {base:.1f} | {new:.1f} | {new / base:.2f}x | {search:.1f} |")


if __name__ == "__main__":
    main()
