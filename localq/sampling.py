"""Batch selection: which unseen images a round shows the labeler.

- ``top``: the article's choice, the k highest ``w.x`` (exploitation: finds positives).
- ``boundary``: the k images nearest the decision boundary ``w.x + b = 0`` (uncertainty
  sampling: teaches the threshold).
- ``diverse``: the top candidates, then a greedy max-marginal-relevance pick so that
  near-duplicates do not fill the batch.
- ``random``: uniform over the allowed images (the benchmark's control).

Every strategy except ``random`` reads only the ``candidates`` best images of one
filtered search, so a round costs one search whatever the strategy.
"""

from __future__ import annotations

import numpy as np

STRATEGIES = ("top", "boundary", "diverse", "random")
DEFAULT_STRATEGY = "top"

# How many of the best-ranked allowed images the boundary and diverse strategies look at.
DEFAULT_CANDIDATES = 10_000


def _unit(w) -> np.ndarray:
    w = np.asarray(w, dtype=np.float32).ravel()
    n = float(np.linalg.norm(w))
    if not np.isfinite(n) or n == 0.0:
        raise ValueError("the classifier's weights are zero or not finite; it cannot be used as a query")
    return w / n


def _top(index, w, k, allowed) -> np.ndarray:
    ids, _ = index.search(_unit(w), k, allowed)
    return np.asarray(ids, dtype=np.int64)


def _candidates(index, w, b, k, allowed, candidates) -> tuple[np.ndarray, np.ndarray]:
    """The best ``candidates`` allowed ids with their raw scores ``w.x + b``."""
    n = max(k, candidates)
    ids, _ = index.search(_unit(w), n, allowed)
    ids = np.asarray(ids, dtype=np.int64)
    vecs = np.asarray(index.matrix()[ids], dtype=np.float32)
    raw = vecs @ np.asarray(w, dtype=np.float32).ravel() + np.float32(b)
    return ids, raw


def _boundary(index, w, b, k, allowed, candidates) -> np.ndarray:
    ids, raw = _candidates(index, w, b, k, allowed, candidates)
    order = np.argsort(np.abs(raw), kind="stable")[:k]
    return ids[order]


def _diverse(index, w, b, k, allowed, candidates, relevance_weight) -> np.ndarray:
    n_cand = min(max(k, candidates), max(20 * k, 200))
    ids, raw = _candidates(index, w, b, k, allowed, n_cand)
    if len(ids) <= k:
        return ids
    vecs = np.asarray(index.matrix()[ids], dtype=np.float32)
    # Relevance on the same scale as cosine similarity (both roughly in [-1, 1]).
    rel = (raw - raw.min()) / max(float(raw.max() - raw.min()), 1e-12)
    chosen = [int(np.argmax(rel))]
    max_sim = vecs @ vecs[chosen[0]]
    for _ in range(k - 1):
        gain = relevance_weight * rel - (1.0 - relevance_weight) * max_sim
        gain[chosen] = -np.inf
        nxt = int(np.argmax(gain))
        chosen.append(nxt)
        max_sim = np.maximum(max_sim, vecs @ vecs[nxt])
    return ids[np.asarray(chosen)]


def _random(k, allowed, rng) -> np.ndarray:
    pool = np.flatnonzero(allowed)
    return np.sort(rng.choice(pool, size=min(k, pool.size), replace=False)).astype(np.int64)


def select(
    strategy: str,
    index,
    w,
    b: float,
    k: int,
    allowed: np.ndarray,
    rng: np.random.Generator,
    *,
    candidates: int = DEFAULT_CANDIDATES,
    relevance_weight: float = 0.5,
) -> np.ndarray:
    """Ids (int64) of ``min(k, allowed.sum())`` distinct allowed images to label next."""
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown sampling strategy {strategy!r}; choose one of {', '.join(STRATEGIES)}")
    allowed = np.asarray(allowed, dtype=bool)
    if allowed.shape != (index.ntotal,):
        raise ValueError(f"allowed mask has length {allowed.shape} but the index holds {index.ntotal} vectors")
    k = min(int(k), int(allowed.sum()))
    if k <= 0:
        return np.empty(0, dtype=np.int64)
    if strategy == "top":
        return _top(index, w, k, allowed)
    if strategy == "boundary":
        return _boundary(index, w, b, k, allowed, candidates)
    if strategy == "diverse":
        return _diverse(index, w, b, k, allowed, candidates, relevance_weight)
    return _random(k, allowed, rng)
