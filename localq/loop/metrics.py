"""Ranking metrics for a classifier's scores against ground-truth relevance.

Pure numpy so the benchmark and the trainer can report them without sklearn.
``average_precision`` matches ``sklearn.metrics.average_precision_score``: the
non-interpolated sum over distinct thresholds of (R_n - R_{n-1}) * P_n, with tied
scores treated as one threshold.
"""

from __future__ import annotations

import numpy as np


def _as_arrays(scores, relevant) -> tuple[np.ndarray, np.ndarray]:
    s = np.asarray(scores, dtype=np.float64).ravel()
    r = np.asarray(relevant).ravel().astype(bool)
    if s.shape != r.shape:
        raise ValueError(f"scores ({s.size}) and relevant ({r.size}) must have the same length")
    return s, r


def average_precision(scores, relevant) -> float:
    """Non-interpolated AP of ``scores`` (higher = more relevant); 0.0 if nothing is relevant."""
    s, r = _as_arrays(scores, relevant)
    n_pos = int(r.sum())
    if n_pos == 0:
        return 0.0
    order = np.argsort(-s, kind="mergesort")
    s, r = s[order], r[order]
    # Only the last position of each run of tied scores is a threshold: ties are
    # ranked together, never in an order that happens to favour the positives.
    last_of_tie = np.r_[np.diff(s) != 0, True]
    tp = np.cumsum(r)[last_of_tie]
    predicted = (np.arange(1, s.size + 1))[last_of_tie]
    precision = tp / predicted
    recall_gain = np.diff(np.r_[0, tp]) / n_pos
    return float(np.sum(recall_gain * precision))


def precision_recall_at(scores, relevant, threshold: float) -> tuple[float, float]:
    """Precision and recall of the prediction ``score > threshold``.

    Precision is 0.0 when nothing is predicted positive; recall is 0.0 when nothing
    is relevant (the sklearn ``zero_division=0`` convention).
    """
    s, r = _as_arrays(scores, relevant)
    predicted = s > threshold
    tp = int(np.sum(predicted & r))
    n_pred = int(predicted.sum())
    n_pos = int(r.sum())
    precision = tp / n_pred if n_pred else 0.0
    recall = tp / n_pos if n_pos else 0.0
    return float(precision), float(recall)


def precision_at_k(scores, relevant, k: int) -> float:
    """Fraction of relevant items among the ``k`` highest scores (ties kept in input order)."""
    s, r = _as_arrays(scores, relevant)
    if k <= 0:
        raise ValueError("k must be positive")
    k = min(k, s.size)
    if k == 0:
        return 0.0
    top = np.argsort(-s, kind="mergesort")[:k]
    return float(r[top].mean())
