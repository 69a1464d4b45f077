"""Latency of one labeling round versus one filtered search, at 100k and 1M vectors,
with the exact index and with the IVF index (``--index``).

A round is what the UI waits for after the user presses "fit": validate the scores, fit
the linear layer on every label so far, persist labels + seen flags + weights in one
SQLite transaction, then retrieve the next unseen batch (through ``Collection.searcher``,
as the trainer does). Targets (issue 12): with exact search a round costs at most 1.5x
the filtered search alone; with the default strategy a round takes at most 150 ms.

    python scripts/bench_round.py --sizes 100000 1000000 --index exact ivf --rounds 10 \
        --json docs/bench/round.json --markdown docs/bench/round.md

``--label-scales 10 10000`` times instead a round on a classifier that already holds 10,
then 10,000 labels, side by side (issue 21's target: at most 2x); a couple of minutes:

    python scripts/bench_round.py --sizes 20000 --label-scales 10 10000 --rounds 5

``--memory-rounds 1000`` runs instead 1,000 rounds of k on one classifier (the default
strategy, labeled from the synthetic clusters' ground truth) and prints the process's
resident memory at rounds 1, 10, 100, 500 and 1,000 (issue 21: memory stays flat):

    python scripts/bench_round.py --sizes 20000 --memory-rounds 1000

The synthetic collection (clustered, L2-normalized, 512-d) is built once per size under
--work (default: a temp dir) with the real store and index code; the IVF file is built
by ``Collection.save_index`` exactly as ``localq index --index ivf`` builds it.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import localq  # noqa: F401  (runtime tuning before numpy/faiss load)

# isort: split
import numpy as np

from localq.collection.collection import Collection
from localq.loop.trainer import Trainer
from localq.loop.trainer_types import Settings
from localq.storage.rows import NewImage


class SyntheticEncoder:
    encoder_spec, weights, image_size = "synthetic", None, 0

    def __init__(self, dim: int):
        self.dim, self.model_id = dim, f"synthetic-{dim}/v1"


def build(root: Path, n: int, dim: int, seed: int = 0) -> Collection:
    coll = Collection.open(root, create=True)
    if coll.count_live() == n:
        return coll
    coll.bind_encoder(SyntheticEncoder(dim))
    coll.set_search_index("exact")  # the IVF build is timed by main(), per --index
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((100, dim)).astype(np.float32)
    chunk = 50_000
    for start in range(coll.count_live(), n, chunk):
        m = min(chunk, n - start)
        x = centres[rng.integers(0, 100, m)] + 0.8 * rng.standard_normal((m, dim)).astype(np.float32)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        rows = [
            NewImage(f"/synthetic/{start + i}.jpg", f"h{start + i}", 1, 0.0, 1, 1, str(i % 100), "train")
            for i in range(m)
        ]
        coll.add_images(rows, x)
        print(f"  built {start + m}/{n}", end="\r", flush=True)
    print()
    return coll


def bench(coll: Collection, rounds: int, k: int, strategy: str, kind: str, agreement_too: bool = True) -> dict:
    name = "bench"
    if coll.has_classifier(name):
        coll.delete_classifier(coll.classifier_id(name))
    trainer = Trainer.create(coll, name, images=[0], settings=Settings(k=k, strategy=strategy))
    # The ground truth as one bool per row: a dict of 10M labels would be most of the
    # resident memory measured.
    ids, names = coll.labeled_rows()
    positive = np.zeros(coll.rows(), dtype=bool)
    positive[ids[names == coll.labels_of([0])[0]]] = True
    del ids, names

    def label(batch):
        return {h.id: 1.0 if positive[h.id] else -1.0 for h in batch}

    batch = trainer.next_batch()
    trainer.submit(label(batch))  # warm-up: imports torch and builds the optimiser once
    batch = trainer.next_batch()
    search_ms, round_ms, fit_persist_ms, agreement, doubt = [], [], [], [], []
    for _ in range(rounds):
        mask = trainer.unseen_mask()
        t0 = time.perf_counter()
        coll.searcher.search(trainer.query, k, mask)
        search_ms.append((time.perf_counter() - t0) * 1e3)

        t0 = time.perf_counter()
        trainer.submit(label(batch))  # validate + fit + one SQLite transaction
        t1 = time.perf_counter()
        batch = trainer.next_batch()  # filtered re-query of the unseen images
        t2 = time.perf_counter()
        fit_persist_ms.append((t1 - t0) * 1e3)
        round_ms.append((t2 - t0) * 1e3)
        if kind == "ivf" and agreement_too:  # the same round's batch from exact search (same seeded draws), untimed
            coll.set_search_index("exact")
            exact_batch = trainer.next_batch()
            exact = {h.id for h in exact_batch}
            coll.set_search_index("ivf")
            batch = trainer.next_batch()
            agreement.append(len(exact & {h.id for h in batch}) / max(len(exact), 1))
            # Boundary picks from the codes' estimates need not be exact's picks to be as
            # uncertain: the worst pick's distance from p = 0.5, for each batch.
            doubt.append((_worst_doubt(trainer, batch), _worst_doubt(trainer, exact_batch)))
    return {
        "rss_gb": _resident_gb(),
        "batch_agreement_with_exact": statistics.mean(agreement) if agreement else None,
        "worst_pick_abs_p_minus_half": (
            {"ivf": statistics.median(d[0] for d in doubt), "exact": statistics.median(d[1] for d in doubt)}
            if doubt
            else None
        ),
        "rss_anon_gb": _resident_gb("RssAnon"),
        "search": statistics.median(search_ms),
        "fit+persist": statistics.median(fit_persist_ms),
        "round": statistics.median(round_ms),
        "labels": len(trainer.labels()),
    }


def bench_label_scales(work: Path, n: int, dim: int, scales: list[int], rounds: int, k: int) -> list[dict]:
    """A round of k labels on a classifier that already holds ``scale`` labels, for each
    scale: what a long labeling session costs per round as its labels pile up (issue 21:
    3.1 s a round at 7,000 labels, against 0.32 s for the first rounds).

    The earlier labels are given as rounds of ``k`` (as the UI gives them), written with
    the store's own commit (no fit between them: only the labels' count matters here)."""
    out = []
    with build(work / f"n{n}", n, dim) as coll:
        coll.set_search_index("exact")
        for scale in scales:
            name = f"labels-{scale}"
            if coll.has_classifier(name):
                coll.delete_classifier(coll.classifier_id(name))
            trainer = Trainer.create(coll, name, images=[0], settings=Settings(k=k, strategy="top"))
            rng = np.random.default_rng(scale)
            given = rng.choice(n, size=scale, replace=False)
            for r, start in enumerate(range(0, scale, k), start=1):
                chunk = given[start : start + k]
                scores = {int(i): float(rng.choice([-1.0, 1.0])) for i in chunk}
                coll.store.commit_round(trainer.row.id, r, scores, scores, trainer.weights, trainer.bias, None)
            trainer = Trainer.open(coll, name)
            batch = trainer.next_batch()
            trainer.submit({h.id: 1.0 for h in batch})  # warm-up
            before = len(trainer.labels())
            times, labels_ms = [], []
            for _ in range(rounds):
                batch = trainer.next_batch()
                t0 = time.perf_counter()
                trainer.labels()
                labels_ms.append((time.perf_counter() - t0) * 1e3)
                t0 = time.perf_counter()
                trainer.submit({h.id: (1.0 if h.id % 2 else -1.0) for h in batch})
                trainer.next_batch()
                times.append((time.perf_counter() - t0) * 1e3)
            out.append(
                {"labels": before, "round": statistics.median(times), "current_labels": statistics.median(labels_ms)}
            )
            print(out[-1])
            coll.delete_classifier(trainer.row.id)
    return out


def bench_memory(work: Path, n: int, dim: int, rounds: int, k: int, relabels: int = 300) -> list[dict]:
    """Resident memory (VmRSS, and RssAnon: the process's own pages) after rounds 1, 10,
    100, 500 and ``rounds`` of one classifier with the default strategy, as a long session
    gives them: each round labels the batch the trainer offers (exact search). Then
    ``relabels`` rounds that each change one earlier label (marks after 100 of them and
    after all): rounds that add no label, so what grows there grows by the round."""
    marks = sorted({m for m in (1, 10, 100, 500, rounds) if m <= rounds})
    out = []
    with build(work / f"n{n}", n, dim) as coll:
        coll.set_search_index("exact")
        name = "memory"
        if coll.has_classifier(name):
            coll.delete_classifier(coll.classifier_id(name))
        trainer = Trainer.create(coll, name, images=[0], settings=Settings(k=k))
        ids, names = coll.labeled_rows()
        positive = np.zeros(coll.rows(), dtype=bool)
        positive[ids[names == coll.labels_of([0])[0]]] = True
        del ids, names
        t0 = time.perf_counter()
        for r in range(1, rounds + 1):
            batch = trainer.next_batch()
            trainer.submit({h.id: 1.0 if positive[h.id] else -1.0 for h in batch})
            if r in marks:
                out.append(
                    {
                        "round": r,
                        "labels": len(trainer.labels()),
                        "vmrss_mb": _resident_gb() * 1024,
                        "rss_anon_mb": _resident_gb("RssAnon") * 1024,
                        "seconds": time.perf_counter() - t0,
                    }
                )
                print(out[-1])
        for j, image_id in enumerate(list(trainer.labels())[:relabels], start=1):
            trainer.relabel(image_id, -1.0 if positive[image_id] else 1.0)  # a labeling mistake, fixed later
            if j in (100, relabels):
                out.append(
                    {
                        "round": trainer.round,
                        "labels": len(trainer.labels()),
                        "vmrss_mb": _resident_gb() * 1024,
                        "rss_anon_mb": _resident_gb("RssAnon") * 1024,
                        "seconds": time.perf_counter() - t0,
                        "relabel_rounds": j,
                    }
                )
                print(out[-1])
        coll.delete_classifier(trainer.row.id)
    return out


def memory_main(args, work: Path) -> None:
    results = bench_memory(work, args.sizes[0], args.dim, args.memory_rounds, args.k)
    lines = ["| after round | labels | VmRSS (MB) | RssAnon (MB) | seconds so far |", "|---|---|---|---|---|"]
    for r in results:
        what = f"{r['round']:,}" + (f" ({r['relabel_rounds']} changing a label)" if "relabel_rounds" in r else "")
        lines.append(
            f"| {what} | {r['labels']:,} | {r['vmrss_mb']:.1f} | {r['rss_anon_mb']:.1f} | {r['seconds']:.1f} |"
        )
    labeling = [r for r in results if "relabel_rounds" not in r]
    at_100 = next((r for r in labeling if r["round"] == 100), labeling[0])
    last = labeling[-1]
    grew = last["rss_anon_mb"] - at_100["rss_anon_mb"]
    added = max(last["labels"] - at_100["labels"], 1)
    lines += [
        "",
        f"{last['round']:,} rounds of k={args.k} on {args.sizes[0]:,} x {args.dim} vectors (exact search, "
        f"default strategy). After round {at_100['round']}: RssAnon {grew:+.1f} MB, VmRSS "
        f"{last['vmrss_mb'] - at_100['vmrss_mb']:+.1f} MB, for {added:,} more labels "
        f"({grew * 1024 / added:.1f} KB a label; a {args.dim}-d row is {args.dim * 4 / 1024:.0f} KB).",
    ]
    fixed = [r for r in results if "relabel_rounds" in r]
    if fixed:
        first, end = fixed[0], fixed[-1]
        lines += [
            f"Then rounds that each change an earlier label (no label added): RssAnon "
            f"{first['rss_anon_mb'] - last['rss_anon_mb']:+.1f} MB over the first {first['relabel_rounds']}"
            + (
                f", {end['rss_anon_mb'] - first['rss_anon_mb']:+.1f} MB over the next "
                f"{end['relabel_rounds'] - first['relabel_rounds']}"
                if end is not first
                else ""
            )
            + "."
        ]
    print()
    print("\n".join(lines))
    if args.json:
        args.json.write_text(json.dumps({"command": _command(), "results": results}, indent=2) + "\n")
    if args.markdown:
        args.markdown.write_text(
            f"Output of `{_command()}`, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
            f"shared {os.cpu_count()}-core machine.\n\n" + "\n".join(lines) + "\n"
        )


def label_scales_main(args, work: Path) -> None:
    results = bench_label_scales(work, args.sizes[0], args.dim, args.label_scales, args.rounds, args.k)
    base = results[0]["round"]
    lines = [
        "| labels before the round | whole round (ms) | of which reading the current labels (ms) | vs the first |",
        "|---|---|---|---|",
    ]
    for r in results:
        lines.append(f"| {r['labels']:,} | {r['round']:.1f} | {r['current_labels']:.1f} | {r['round'] / base:.2f}x |")
    worst = max(r["round"] for r in results) / base
    lines += [
        "",
        f"Medians of {args.rounds} rounds of k={args.k} on {args.sizes[0]:,} x {args.dim} vectors (exact search, "
        f"strategy top). Target (issue 21): at most 2x the round at the fewest labels: "
        f"{'MET' if worst <= 2 else 'MISS'} ({worst:.2f}x).",
    ]
    print()
    print("\n".join(lines))
    if args.json:
        args.json.write_text(json.dumps({"command": _command(), "results": results}, indent=2) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    ap.add_argument("--index", nargs="+", choices=["exact", "ivf"], default=["exact", "ivf"])
    ap.add_argument("--strategies", nargs="+", default=["auto", "top"], help="auto is the default strategy")
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("-k", type=int, default=10)
    ap.add_argument("--work", type=Path, help="Where to build the collections (kept for reruns).")
    ap.add_argument("--json", type=Path, help="Write the raw results here.")
    ap.add_argument("--markdown", type=Path, help="Write the table (with the command and machine) here.")
    ap.add_argument(
        "--no-agreement",
        action="store_true",
        help="skip the exact batch each IVF round is compared with: at 10M its pass over 20 GB "
        "evicts from the page cache the rows the timed rounds read (and counts as resident)",
    )
    ap.add_argument("--nprobe", type=int, help="the IVF's first probe (default: search.ivf's)")
    ap.add_argument(
        "--label-scales",
        type=int,
        nargs="+",
        metavar="N",
        help="instead: a round on a classifier already holding N labels, side by side for each N "
        "(e.g. 10 10000, on the first --sizes)",
    )
    ap.add_argument(
        "--memory-rounds",
        type=int,
        metavar="N",
        help="instead: N rounds on one classifier (default strategy, on the first --sizes), printing "
        "resident memory at rounds 1, 10, 100, 500 and N",
    )
    args = ap.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="localq-bench-round-"))
    if args.memory_rounds:
        memory_main(args, work)
        return
    if args.label_scales:
        label_scales_main(args, work)
        return
    results = []
    for n in args.sizes:
        print(f"building {n} x {args.dim} under {work}")
        with build(work / f"n{n}", n, args.dim) as coll:
            for kind in args.index:
                t0 = time.perf_counter()
                coll.set_search_index(kind)
                coll.save_index()  # builds vectors.ivf (or drops it) as `localq index --index` does
                build_s = time.perf_counter() - t0
                if kind == "ivf" and args.nprobe:
                    coll.searcher.ivf.nprobe = args.nprobe
                for strategy in args.strategies:
                    r = bench(coll, args.rounds, args.k, strategy, kind, not args.no_agreement)
                    results.append(
                        {
                            "vectors": n,
                            "index": kind,
                            "strategy": strategy,
                            "index_save_s": round(build_s, 1),
                            **{key: round(v, 2) if isinstance(v, float) else v for key, v in r.items()},
                        }
                    )
                    print(results[-1])
    lines = [
        "| vectors | index | strategy | filtered search (ms) | fit + persist (ms) | whole round (ms) | round / search "
        "| target round <= 150 ms | target round <= 1.5x search (exact) | batch = exact's batch "
        "| worst pick's abs(p - 0.5): this / exact | resident (GB) | of which its own (GB) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        ratio = r["round"] / r["search"]
        doubt = r["worst_pick_abs_p_minus_half"]
        lines.append(
            f"| {r['vectors']:,} | {r['index']} | {r['strategy']} | {r['search']:.1f} | {r['fit+persist']:.1f} | "
            f"{r['round']:.1f} | {ratio:.2f}x | {'MET' if r['round'] <= 150 else 'MISS'} | "
            f"{('MET' if ratio <= 1.5 else 'MISS') if r['index'] == 'exact' else '-'} | "
            + (f"{r['batch_agreement_with_exact']:.2f} |" if r["batch_agreement_with_exact"] is not None else "- |")
            + (f" {doubt['ivf']:.3f} / {doubt['exact']:.3f} |" if doubt else " - |")
            + f" {r['rss_gb']:.2f} | {r['rss_anon_gb']:.2f} |"
        )
    saves = ", ".join(
        f"{r['vectors']:,} {r['index']}: {r['index_save_s']} s" for r in results if r["strategy"] == args.strategies[0]
    )
    lines += [
        "",
        f"Medians of {args.rounds} rounds of k={args.k}, after one warm-up round. Index save "
        f'(for ivf: k-means on a sample and adding every row): {saves}. "batch = exact\'s batch": '
        "the share of each IVF round's batch that exact search picks in the same state (mean). "
        '"worst pick": the median over rounds of max |p - 0.5| in the IVF batch and in exact\'s '
        "(boundary picks from the codes' estimates can differ from exact's and be as uncertain). "
        "Resident: VmRSS after the rounds (with the file pages of vectors.npy it has touched, "
        "shared and reclaimable) and RssAnon (the process's own memory).",
    ]
    table = "\n".join(lines)
    print()
    print(table)
    if args.json:
        args.json.write_text(json.dumps({"command": _command(), "results": results}, indent=2) + "\n")
    if args.markdown:
        header = (
            f"Output of `{_command()}`, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
            f"shared {os.cpu_count()}-core machine (load average at end {os.getloadavg()[0]:.2f}); "
            "synthetic clustered 512-d vectors through the real Collection, store and trainer.\n\n"
        )
        args.markdown.write_text(header + table + "\n")


def _worst_doubt(trainer: Trainer, batch) -> float:
    """max |p - 0.5| over ``batch`` under the trainer's current classifier."""
    rows = trainer.collection.searcher.matrix()
    z = np.asarray(rows[sorted(h.id for h in batch)], dtype=np.float32) @ trainer.weights + trainer.bias
    return float(np.max(np.abs(1 / (1 + np.exp(-z)) - 0.5))) if len(z) else float("nan")


def _resident_gb(field: str = "VmRSS") -> float:
    """The process's resident memory now, after the rounds: VmRSS (its own pages plus the
    file pages it has mapped and touched) or RssAnon (its own pages alone)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 2**20
    return float("nan")


def _command() -> str:
    return "python scripts/bench_round.py " + " ".join(sys.argv[1:])


if __name__ == "__main__":
    main()
