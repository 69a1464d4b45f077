"""What a classifier's weights say about images: evaluation against folder labels and
predictions over the collection or over new files.

Read-only functions of a collection and ``(w, b)``: none writes a round. Trainer's
``evaluate``, ``predict``, ``positives`` and ``predict_files`` call them with its
latest weights; ``w.x + b`` itself is ``VectorIndex.scores``.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Sequence

import numpy as np

from localq.arrays import chunks
from localq.collection.collection import Collection
from localq.errors import BadImage
from localq.loop.metrics import average_precision, precision_recall_at
from localq.loop.trainer_types import Evaluation, Prediction


def target_label(collection: Collection, labels: dict[int, float], target: str | None) -> str | None:
    """The class label a classifier is evaluated against: its ``target`` setting, else the
    folder label most of its positive labels carry (None without folder labels)."""
    if target:
        return target
    positives = [i for i, s in labels.items() if s > 0]
    counts = Counter(label for label in collection.labels_of(positives) if label is not None)
    return counts.most_common(1)[0][0] if counts else None


def evaluate(
    collection: Collection, target: str | None, w: np.ndarray, b: float, split: str | None = None
) -> Evaluation | None:
    """AP and precision/recall at the threshold (score > 0) against folder labels."""
    if target is None:
        return None
    ids, labels = collection.labeled_rows(split)
    if len(ids) == 0:
        return None
    relevant = labels == target
    scores = collection.index.scores(w, b, ids)
    precision, recall = precision_recall_at(scores, relevant, 0.0)
    return Evaluation(
        target, average_precision(scores, relevant), precision, recall, 0.0, int(relevant.sum()), len(ids)
    )


def predict_collection(
    collection: Collection,
    w: np.ndarray,
    b: float,
    threshold: float = 0.0,
    *,
    split: str | None = None,
    limit: int | None = None,
) -> tuple[list[Prediction], int]:
    """Positives among the collection's images (live, scoring above ``threshold``, in
    ``split`` if given), best first, at most ``limit``; and how many there are in all. One
    pass over the vectors answers both."""
    scores = collection.index.scores(w, b)
    mask = collection.live_mask() & (scores > threshold)
    if split is not None:
        mask &= collection.split_mask(split)
    ids = np.flatnonzero(mask)
    ids = ids[np.argsort(-scores[ids], kind="stable")][:limit]
    rows = {r.id: r for r in collection.image_rows(ids)}
    preds = [Prediction(int(i), rows[int(i)].path, float(scores[i]), rows[int(i)].label) for i in ids]
    return preds, int(mask.sum())


def predict_files(
    collection: Collection, w: np.ndarray, b: float, paths: Sequence[str | Path], threshold: float = 0.0
) -> tuple[list[Prediction], list[tuple[str, str]]]:
    """Positives among files outside the collection, best first, and the (path, reason) of
    each file that could not be decoded: one bad file never costs the others."""
    from localq.imageio import open_image

    encoder = collection.encoder()
    out, skipped = [], []
    for batch in chunks(list(paths), 32):
        images, kept = [], []
        for p in batch:
            try:
                images.append(open_image(p, getattr(encoder, "image_size", None)))
                kept.append(str(p))
            except BadImage as exc:
                skipped.append((str(p), exc.reason))
        if images:
            vectors = encoder.encode_images(images)
            out += [Prediction(None, p, float(v @ w + b)) for p, v in zip(kept, vectors)]
    preds = sorted((p for p in out if p.score > threshold), key=lambda p: -p.score)
    return preds, skipped
