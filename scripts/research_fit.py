"""Ablation study behind localq's fit and sampling defaults (not a timed test).

Runs the simulated-labeler loop (each class in turn the target, +1 / -1 labels, k per
round, starting from "a photo of a {class}") on a folder data set embedded once with
the built-in encoder, and prints mean +- sd AP at 10/20/50/100 labels for localq's
default and for variants that each remove one of its parts.

Settings are chosen on **dev**, never on the held-out split: by default the loop
retrieves from the pool split minus its dev part (``localq.loop.devsplit``: the same files,
chosen by content hash, as ``localq bench --tune``) and AP is measured on dev.
``--eval test`` measures on a held-out split instead (to report, not to choose):

    python scripts/research_fit.py ../shared/datasets/cifar10 --pool train
    python scripts/research_fit.py ../shared/datasets/imagenette --pool train

Embeddings are cached in --cache (CIFAR-10's 60k images take ~10-40 minutes on 2 CPU
cores, depending on load); later runs cost only the loops (~1-2 minutes per variant).
``localq bench`` is the user-facing benchmark; this script exists to show why each part
of the method is there.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import localq  # noqa: F401  (process tuning before numpy/torch load)

# isort: split
import numpy as np

from localq.loop.fit import fit_article_baseline, fit_linear
from localq.loop.metrics import average_precision
from localq.loop.sampling import DEFAULT_STRATEGY, Context, select
from localq.search.exact import VectorIndex

BUDGETS = (10, 20, 50, 100)
BACKGROUND = 512  # the trainer's background sample

# name -> (strategy, fit_linear keyword overrides, background size, article loop?)
VARIANTS = {
    f"localq default ({DEFAULT_STRATEGY})": (DEFAULT_STRATEGY, {}, BACKGROUND, False),
    "sampling: top": ("top", {}, BACKGROUND, False),
    "sampling: diverse": ("diverse", {}, BACKGROUND, False),
    "sampling: random": ("random", {}, BACKGROUND, False),
    "no positive-unlabeled weighting": (DEFAULT_STRATEGY, {"positive_unlabeled": False}, BACKGROUND, False),
    "no prior (prior_strength 0)": (DEFAULT_STRATEGY, {"prior_strength": 0.0}, BACKGROUND, False),
    "no background": (DEFAULT_STRATEGY, {}, 0, False),
    "article loop (top, last batch, tanh MSE, SGD)": ("top", {}, 0, True),
}


def dev_flags(root: Path, split: str) -> np.ndarray:
    """Per file of ``split`` (in embed_split's order): is it in the dev part? By content hash."""
    import hashlib

    from localq.loop.devsplit import is_dev

    classes = sorted(p.name for p in (root / split).iterdir() if p.is_dir())
    files = [f for c in classes for f in sorted((root / split / c).iterdir())]
    return np.array([is_dev(hashlib.sha256(f.read_bytes()).hexdigest()) for f in files])


def embed_split(root: Path, split: str, cache: Path, encoder) -> tuple[np.ndarray, np.ndarray, list[str]]:
    import torch
    from PIL import Image

    out = cache / f"{root.name}_{split}_{encoder.model_id.replace('/', '_')}.npz"
    if out.exists():
        data = np.load(out)
        return data["x"], data["y"], [str(c) for c in data["classes"]]
    classes = sorted(p.name for p in (root / split).iterdir() if p.is_dir())
    files = [(f, i) for i, c in enumerate(classes) for f in sorted((root / split / c).iterdir())]
    chunks, start = [], time.time()
    for i in range(0, len(files), 64):
        batch = torch.stack([encoder.preprocess(Image.open(f)) for f, _ in files[i : i + 64]])
        chunks.append(encoder.encode_batch(batch))
        print(
            f"\rembedding {root.name}/{split}: {i + len(batch)}/{len(files)} "
            f"({(i + len(batch)) / (time.time() - start):.0f} img/s)",
            end="",
            file=sys.stderr,
        )
    print(file=sys.stderr)
    x, y = np.concatenate(chunks), np.array([c for _, c in files])
    cache.mkdir(parents=True, exist_ok=True)
    np.savez(out, x=x, y=y, classes=np.array(classes))
    return x, y, classes


def run_loop(index, pool_y, x_eval, y_eval, q0, target, variant, seed, rounds, k, clusters=None):
    strategy, fit_kw, n_background, article = variant
    pool = index.matrix()
    rng = np.random.default_rng(seed)
    seen = np.zeros(index.ntotal, bool)
    w, b = q0.copy(), 0.0
    labeled, scores, aps = [], [], {}
    batch_positives: list[int] = []
    for _ in range(rounds):
        context = (
            Context(np.asarray(labeled, np.int64), np.asarray(scores, np.float32), tuple(batch_positives), clusters)
            if strategy == "auto"
            else None
        )
        ids = select(strategy, index, w, b, k, ~seen, rng, context=context)
        seen[ids] = True
        batch_scores = np.where(pool_y[ids] == target, 1.0, -1.0).astype(np.float32)
        labeled += ids.tolist()
        scores += batch_scores.tolist()
        batch_positives.append(int((batch_scores > 0).sum()))
        if article:
            w, b = fit_article_baseline(pool[ids], batch_scores, w, b)
        else:
            unseen = np.flatnonzero(~seen)
            background = pool[rng.choice(unseen, min(n_background, unseen.size), replace=False)]
            w, b = fit_linear(
                pool[labeled],
                np.asarray(scores, np.float32),
                w,
                b,
                prior=q0,
                background=background if n_background else None,
                **fit_kw,
            )
        if len(labeled) in BUDGETS:
            aps[len(labeled)] = average_precision(x_eval @ w, y_eval == target)
    return aps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", type=Path, help="folder data set: ROOT/<split>/<class>/<image>")
    parser.add_argument("--pool", default="train")
    parser.add_argument(
        "--eval",
        default="dev",
        help="dev (default: the pool's dev part, for choosing settings) or a held-out split name",
    )
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "localq-research")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("-k", type=int, default=10)
    args = parser.parse_args()

    import torch

    from localq.bench.datasets import class_names
    from localq.encoders import load_encoder

    torch.set_num_threads(1)  # the fits are small; a second thread only adds overhead
    encoder = load_encoder("lite0")
    x_pool, y_pool, classes = embed_split(args.root, args.pool, args.cache, encoder)
    if args.eval == "dev":
        dev = dev_flags(args.root, args.pool)
        x_eval, y_eval = x_pool[dev], y_pool[dev]
        x_pool, y_pool = x_pool[~dev], y_pool[~dev]
        print(f"tuning protocol: pool {args.pool} minus dev ({len(y_pool)} images), AP on dev ({len(y_eval)})")
    else:
        x_eval, y_eval, eval_classes = embed_split(args.root, args.eval, args.cache, encoder)
        assert classes == eval_classes, "pool and eval splits must have the same class folders"
        print(f"held-out protocol: pool {args.pool} ({len(y_pool)} images), AP on {args.eval}: report, don't choose")
    names = class_names(classes)
    queries = encoder.encode_texts([f"a photo of a {names[c]}" for c in classes])

    with tempfile.TemporaryDirectory() as tmp:
        index = VectorIndex.open(Path(tmp) / "pool.npy", x_pool.shape[1])
        index.add(x_pool)
        seeds = [int(s) for s in args.seeds.split(",")]
        from localq.loop.explore import kmeans

        clusters = kmeans(x_pool)  # for ``auto``: the pool's clusters, as the trainer computes them
        zero_shot = [average_precision(x_eval @ q, y_eval == c) for c, q in enumerate(queries)]
        print(f"| method | {' | '.join(f'{n} labels' for n in BUDGETS)} |")
        print(f"|---|{'---|' * len(BUDGETS)}")
        print(f"| zero-shot (no labels) | {' | '.join(f'{np.mean(zero_shot):.3f}' for _ in BUDGETS)} |")
        for name, variant in VARIANTS.items():
            start = time.time()
            runs = [
                run_loop(index, y_pool, x_eval, y_eval, queries[c], c, variant, s, args.rounds, args.k, clusters)
                for s in seeds
                for c in range(len(classes))
            ]
            cells = [f"{np.mean([r[n] for r in runs]):.3f} ± {np.std([r[n] for r in runs]):.3f}" for n in BUDGETS]
            print(f"| {name} | {' | '.join(cells)} |  <!-- {time.time() - start:.0f}s -->", flush=True)


if __name__ == "__main__":
    main()
