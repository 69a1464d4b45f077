"""What a classifier says about images: scores, evaluation against folder labels, predictions.

This is the read-only side of a Trainer: none of it writes a round, so it is split from
the retrieve / label / fit loop in trainer.py and mixed into Trainer as ``Scoring``.
It reads only what the Trainer exposes (listed below) and never imports localq.loop.trainer.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from localq.arrays import chunks
from localq.collection.collection import Collection
from localq.errors import BadImage
from localq.loop.metrics import average_precision, precision_recall_at
from localq.loop.trainer_types import Evaluation, Prediction, Settings


class Scoring:
    """Mixin for Trainer: scoring, evaluation and prediction with the classifier's latest weights."""

    # What the Trainer provides (attributes and properties there).
    collection: Collection
    settings: Settings
    weights: np.ndarray
    bias: float
    labels: Callable[[], dict[int, float]]

    def score_all(self) -> np.ndarray:
        """w·x + b for every row of the collection (tombstones included, by position)."""
        return self.collection.index.scores(self.weights) + self.bias

    def target_label(self) -> str | None:
        """The class label this classifier is evaluated against, where the collection has labels."""
        if self.settings.target:
            return self.settings.target
        positives = [i for i, s in self.labels().items() if s > 0]
        counts = Counter(label for label in self.collection.labels_of(positives) if label is not None)
        return counts.most_common(1)[0][0] if counts else None

    def evaluate(self, split: str | None = None) -> Evaluation | None:
        """AP and precision/recall at the threshold (score > 0) against folder labels."""
        return self._evaluate(self.weights, self.bias, split)

    def evaluate_weights(self, w: np.ndarray, b: float, split: str | None = None) -> Evaluation | None:
        """The same measures for any weights of this classifier (e.g. an earlier round's)."""
        return self._evaluate(w, b, split)

    def _evaluate(self, w: np.ndarray, b: float, split: str | None) -> Evaluation | None:
        target = self.target_label()
        if target is None:
            return None
        ids, labels = self.collection.labeled_rows(split)
        if len(ids) == 0:
            return None
        relevant = labels == target
        scores = self.collection.index.matrix()[ids] @ w + b
        precision, recall = precision_recall_at(scores, relevant, 0.0)
        return Evaluation(target, average_precision(scores, relevant), precision, recall, 0.0, int(relevant.sum()), len(ids))

    def predict(self, threshold: float = 0.0, paths: Sequence[str | Path] = (), *, split: str | None = None,
                limit: int | None = None) -> list[Prediction]:
        """Positives (score > threshold) sorted by score: over new files, or the collection (one split of it).
        Undecodable files are left out (``predict_files`` also returns which, and why)."""
        if paths:
            preds, _ = self.predict_files(paths, threshold)
        else:
            scores = self.score_all()
            mask = self.collection.live_mask() & (scores > threshold)
            if split is not None:
                mask &= self.collection.split_mask(split)
            ids = np.flatnonzero(mask)
            ids = ids[np.argsort(-scores[ids], kind="stable")][:limit]
            rows = {r.id: r for r in self.collection.image_rows(ids)}
            preds = [Prediction(int(i), rows[int(i)].path, float(scores[i]), rows[int(i)].label) for i in ids]
        preds.sort(key=lambda p: -p.score)
        return preds[:limit] if limit else preds

    def count_positive(self, threshold: float = 0.0, *, split: str | None = None) -> int:
        """How many collection images ``predict`` would return without a limit."""
        mask = self.collection.live_mask() & (self.score_all() > threshold)
        if split is not None:
            mask &= self.collection.split_mask(split)
        return int(mask.sum())

    def predict_files(self, paths: Sequence[str | Path], threshold: float = 0.0
                      ) -> tuple[list[Prediction], list[tuple[str, str]]]:
        """Positives among files outside the collection, best first, and the (path, reason)
        of each file that could not be decoded: one bad file never costs the others."""
        from localq.imageio import open_image

        encoder = self.collection.encoder()
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
                out += [Prediction(None, p, float(v @ self.weights + self.bias)) for p, v in zip(kept, vectors)]
        preds = sorted((p for p in out if p.score > threshold), key=lambda p: -p.score)
        return preds, skipped
