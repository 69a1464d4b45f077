"""Latency of one labeling round versus one filtered search, at 100k and 1M vectors.

A round is what the UI waits for after the user presses "fit": validate the scores, fit
the linear layer on every label so far, persist labels + seen flags + weights in one
SQLite transaction, then retrieve the next unseen batch (a filtered search). Target: a
round costs at most 1.5x the filtered search alone, so fitting and bookkeeping stay
negligible next to the search.

    python scripts/bench_round.py --sizes 100000 1000000 --rounds 10

The synthetic collection (clustered, L2-normalized, 512-d) is built once per size under
--work (default: a temp dir) with the real store and index code.
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
from localq.trainer import Settings, Trainer


class SyntheticEncoder:
    encoder_spec, weights, image_size = "synthetic", None, 0

    def __init__(self, dim: int):
        self.dim, self.model_id = dim, f"synthetic-{dim}/v1"


def build(root: Path, n: int, dim: int, seed: int = 0) -> Collection:
    coll = Collection.open(root, create=True)
    if coll.count_live() == n:
        return coll
    coll.bind_encoder(SyntheticEncoder(dim))
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((100, dim)).astype(np.float32)
    chunk = 50_000
    for start in range(coll.count_live(), n, chunk):
        m = min(chunk, n - start)
        x = centres[rng.integers(0, 100, m)] + 0.8 * rng.standard_normal((m, dim)).astype(np.float32)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        rows = [NewImage(f"/synthetic/{start + i}.jpg", f"h{start + i}", 1, 0.0, 1, 1, str(i % 100), "train")
                for i in range(m)]
        coll.add_images(rows, x)
        print(f"  built {start + m}/{n}", end="\r", flush=True)
    coll.save_index()  # opening the index catches it up from SQLite; saving records the state it mirrors
    print()
    return coll


def bench(coll: Collection, rounds: int, k: int) -> dict:
    name = "bench"
    if coll.has_classifier(name):
        coll.delete_classifier(coll.classifier_id(name))
    trainer = Trainer.create(coll, name, images=[0], settings=Settings(k=k, strategy="top"))
    labels = {int(i): label for i, label in zip(*coll.labeled_rows())}
    target = labels[0]

    def label(batch):
        return {h.id: 1.0 if labels[h.id] == target else -1.0 for h in batch}

    batch = trainer.next_batch()
    trainer.submit(label(batch))  # warm-up: imports torch and builds the optimiser once
    batch = trainer.next_batch()
    search_ms, round_ms, fit_persist_ms = [], [], []
    for _ in range(rounds):
        mask = trainer.unseen_mask()
        t0 = time.perf_counter()
        coll.index.search(trainer.query, k, mask)
        search_ms.append((time.perf_counter() - t0) * 1e3)

        t0 = time.perf_counter()
        trainer.submit(label(batch))  # validate + fit + one SQLite transaction
        t1 = time.perf_counter()
        batch = trainer.next_batch()  # filtered re-query of the unseen images
        t2 = time.perf_counter()
        fit_persist_ms.append((t1 - t0) * 1e3)
        round_ms.append((t2 - t0) * 1e3)
    return {
        "search": statistics.median(search_ms),
        "fit+persist": statistics.median(fit_persist_ms),
        "round": statistics.median(round_ms),
        "labels": len(trainer.labels()),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("-k", type=int, default=10)
    ap.add_argument("--work", type=Path, help="Where to build the collections (kept for reruns).")
    args = ap.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="localq-bench-round-"))
    results = []
    for n in args.sizes:
        print(f"building {n} x {args.dim} under {work}")
        with build(work / f"n{n}", n, args.dim) as coll:
            results.append((n, bench(coll, args.rounds, args.k)))
    print()
    print("| vectors | filtered search (ms) | fit + persist (ms) | whole round (ms) | round / search | target <= 1.5x |")
    print("|---|---|---|---|---|---|")
    for n, r in results:
        ratio = r["round"] / r["search"]
        print(f"| {n:,} | {r['search']:.1f} | {r['fit+persist']:.1f} | {r['round']:.1f} | {ratio:.2f}x | "
              f"{'PASS' if ratio <= 1.5 else 'MISS'} |")
    print(f"\nmedians of {args.rounds} rounds of k={args.k}; labels at the end: {results[-1][1]['labels']}")


if __name__ == "__main__":
    main()
