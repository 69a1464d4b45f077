"""Past 100 labels the fit's steps read one chunk of the rows each (localq.loop.fit's
``step_labels``), not every row: what that does to the fitted classifier (not a timed test).

On synthetic clustered 512-d vectors (100 clusters, ten of them the target, 5% of the
labels flipped), with random labeled sets of 210 to 10,010 images and the fit
warm-started from the fit on all but the last 10 of them (as the loop does), it compares
the full-batch fit (``step_labels=None``) with the chunked one: AP on 10,000 held-out
vectors, and the cosine between the two weight vectors. Two noise levels, three seeds;
about a minute on 2 cores:

    python scripts/research_fit_chunks.py --markdown docs/bench/fit-chunks.md
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import localq  # noqa: F401  (process tuning before numpy/torch load)

# isort: split
import numpy as np

from localq.loop.fit import DEFAULT_STEP_LABELS, fit_linear
from localq.loop.metrics import average_precision

LABELS = (200, 500, 2000, 10000)  # labels before the round; the round adds 10


def run(spread: float, seed: int, dim: int = 512, n: int = 40_000) -> list[tuple]:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((100, dim)).astype(np.float32)
    cluster = rng.integers(0, 100, n)
    x = centres[cluster] + 0.8 * spread * rng.standard_normal((n, dim)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    truth = cluster < 10
    y_all = np.where(truth ^ (rng.random(n) < 0.05), 1.0, -1.0).astype(np.float32)
    prior = centres[:10].mean(0) + centres[10:20].mean(0)  # a prompt half right
    prior /= np.linalg.norm(prior)
    test = np.arange(n - 10_000, n)
    background = x[rng.choice(n - 10_000, 1000, replace=False)]
    out = []
    for before in LABELS:
        labeled = rng.permutation(n - 10_000)[: before + 10]
        kw = dict(prior=prior, background=background)
        w0, b0 = fit_linear(x[labeled[:before]], y_all[labeled[:before]], prior, 0.0, step_labels=None, **kw)
        full = fit_linear(x[labeled], y_all[labeled], w0, b0, step_labels=None, **kw)
        chunked = fit_linear(x[labeled], y_all[labeled], w0, b0, **kw)
        ap = [average_precision(x[test] @ w + b, truth[test]) for w, b in (full, chunked)]
        cos = float(full[0] @ chunked[0] / np.linalg.norm(full[0]) / np.linalg.norm(chunked[0]))
        out.append((spread, before + 10, *ap, cos))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--markdown", type=Path, help="Write the table here.")
    args = ap.parse_args()
    rows = [r for spread in (1.0, 2.0) for seed in range(args.seeds) for r in run(spread, seed)]
    lines = [
        "| noise | labels | AP, full batches | AP, chunked | chunked - full | cosine of the weights |",
        "|---|---|---|---|---|---|",
    ]
    for spread in (1.0, 2.0):
        for labels in sorted({r[1] for r in rows}):
            full, chunked, cos = np.mean([r[2:] for r in rows if r[0] == spread and r[1] == labels], axis=0)
            lines.append(f"| {spread} | {labels:,} | {full:.4f} | {chunked:.4f} | {chunked - full:+.4f} | {cos:.4f} |")
    lines += [
        "",
        f"Means of {args.seeds} seeds; step_labels={DEFAULT_STEP_LABELS} with a 1000-vector background: "
        "full batches up to 100 labels, chunks of at most 1,100 rows past them.",
    ]
    table = "\n".join(lines)
    print(table)
    if args.markdown:
        args.markdown.write_text(
            f"Output of `python scripts/research_fit_chunks.py`, "
            f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.\n\n{table}\n"
        )


if __name__ == "__main__":
    main()
