"""Batch selection: which unseen images a round shows the labeler.

- ``top``: the article's choice, the k highest ``w.x``. It finds positives, but they are
  the ones the query already ranks first, near-copies of each other, so they teach the
  classifier little (measured: ~100% batch precision, yet the worst AP of the four).
- ``boundary``: the k images whose score ``w.x + b`` is nearest the decision threshold
  (uncertainty sampling): what the classifier is least sure of, positives it ranks too
  low and negatives it ranks too high. The best AP per label once positives exist.
- ``diverse``: k images drawn at random among the likely positives, each with
  probability proportional to ``sigmoid(w.x + b)``, near-duplicates of an image already
  drawn skipped. The batch spreads over the whole positive region instead of piling up
  at its top.
- ``random``: uniform over the allowed images (the benchmark's control).
- ``auto`` (the default): reads the situation from the labels so far
  (:class:`Context`). Before any positive exists, and again whenever the last
  ``COLD_BATCHES`` batches held no positive, it *explores*: most of the batch covers the
  collection's k-means clusters (``localq.explore.coverage``: clusters not labeled yet
  first, ranked softly by the query), the rest exploits the query, so a working prompt
  is not wasted. Once positives come back it *exploits*: by default the whole batch at
  the ``boundary`` (what the classifier is least sure of); ``top_share`` can give part of
  it to ``top`` (the query's best). The shares were chosen on dev splits (docs/benchmark.md).

A query that has never been fitted (unit norm and zero bias, as a prompt or an example
image starts) has no calibrated threshold, so ``boundary`` and ``diverse`` then draw k
at random among its ``warmup_pool`` best images: mostly positives, of several kinds.

Every strategy except ``random`` reads only the best ``candidates`` images of one
filtered search, so a round costs one search whatever the strategy. Pools (boundary's
candidates, diverse's, a warm-up's) are ranked by the index's estimates
(``index.candidates``: exact scores from the exact index, the SQ8 codes' from an IVF
one), and only the rows a batch is settled among are read from disk: at 10M rows,
re-ranking 10,000 candidates from the float rows cost seconds whenever their pages were
not cached.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from localq.vector_file import gather_rows

STRATEGIES = ("auto", "top", "boundary", "diverse", "random")
DEFAULT_STRATEGY = "auto"

# How many of the best-ranked allowed images boundary and diverse look at.
DEFAULT_CANDIDATES = 10_000
# An unfitted query draws its batch among this many of its best images, per label asked.
WARMUP_POOL_PER_LABEL = 100
# Boundary sampling settles its k picks exactly among this many per pick nearest the
# threshold by the index's estimates (an IVF index estimates from its codes).
SHORTLIST_PER_LABEL = 4
# Cosine above which two images count as near-duplicates for ``diverse``.
NEAR_DUPLICATE = 0.95


# ``auto``: how a batch is shared between exploring and exploiting (see docs/benchmark.md).
# Chosen with `localq bench --tune` (dev parts of the pools, seeds 0-1); the held-out splits
# were not used. EXPLORE_COLD and TEMPERATURE: Imagenette dev, mismatched prompts.
# EXPLORE_FIRST and TOP_SHARE: the mean AP at 10/20/50/100 labels over four dev scenarios
# (CIFAR-10 and Imagenette, own and mismatched prompts), a rule fixed before the runs.
AUTO_EXPLORE_FIRST = 0.5  # share of the first batch (nothing labeled yet) spent exploring
#   (0.2, 0.3: mismatched prompts 0.02-0.04 AP worse; 0.7 and 1.0: no better overall)
AUTO_EXPLORE_COLD = 0.9  # share of a batch spent exploring after an all-negative batch (0.7: worse)
AUTO_TOP_SHARE = 0.0  # while exploiting: share of the batch from the top, the rest at the boundary
#   (0.3 cost 0.015-0.02 AP on CIFAR-10 with either prompt and gained nothing on Imagenette)
AUTO_TEMPERATURE = 3.0  # how strongly the query ranks the clusters to explore (1: too strongly; 10: no better)
COLD_BATCHES = 1  # this many batches in a row without a positive bring exploration back


@dataclass(frozen=True)
class Context:
    """What ``auto`` reads besides the query: the session so far and the collection's clusters."""

    labeled_ids: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))
    labeled_scores: np.ndarray = field(default_factory=lambda: np.empty(0, np.float32))
    batch_positives: tuple[int, ...] = ()  # positives in each labeled batch so far, oldest first
    clusters: object | None = None  # localq.explore.Clusters; None: explore by random draws
    explore_first: float = AUTO_EXPLORE_FIRST
    explore_cold: float = AUTO_EXPLORE_COLD
    top_share: float = AUTO_TOP_SHARE
    temperature: float = AUTO_TEMPERATURE

    def positives(self) -> int:
        return int(np.sum(np.asarray(self.labeled_scores) > 0))

    def cold(self) -> bool:
        """No positive yet, or the last COLD_BATCHES batches held none."""
        recent = self.batch_positives[-COLD_BATCHES:]
        return self.positives() == 0 or (len(recent) == COLD_BATCHES and not any(recent))


def _unit(w) -> np.ndarray:
    w = np.asarray(w, dtype=np.float32).ravel()
    n = float(np.linalg.norm(w))
    if not np.isfinite(n) or n == 0.0:
        raise ValueError("the classifier's weights are zero or not finite; it cannot be used as a query")
    return w / n


def is_unfitted(w, b: float) -> bool:
    """True for a start query (unit vector, zero bias) that no fit has calibrated yet."""
    return float(b) == 0.0 and abs(float(np.linalg.norm(w)) - 1.0) < 1e-4


def _search(index, w, n, allowed) -> np.ndarray:
    ids, _ = index.search(_unit(w), n, allowed)
    return np.asarray(ids, dtype=np.int64)


def _candidates(index, w, n, allowed) -> tuple[np.ndarray, np.ndarray]:
    """About the ``n`` best allowed ids and estimates of their unit-query scores: exact
    from the exact index, from the codes of an IVF one (no float rows read)."""
    ids, estimates = index.candidates(_unit(w), n, allowed)
    return np.asarray(ids, dtype=np.int64), np.asarray(estimates, dtype=np.float32)


def _raw_scores(index, ids, w, b) -> np.ndarray:
    """Exact ``w.x + b`` of ``ids`` (gather_rows reads their float rows in file order)."""
    return gather_rows(index.matrix(), ids) @ np.asarray(w, dtype=np.float32).ravel() + np.float32(b)


def _estimated_raw(w, b, estimates) -> np.ndarray:
    """``w.x + b`` from estimates of ``unit(w).x``."""
    return estimates * np.float32(np.linalg.norm(np.asarray(w, dtype=np.float32))) + np.float32(b)


def _warmup(index, w, k, allowed, rng, pool) -> np.ndarray:
    ids, _ = _candidates(index, w, max(k, pool), allowed)
    return np.sort(rng.choice(ids, size=k, replace=False))


def _boundary(index, w, b, k, allowed, candidates) -> np.ndarray:
    return _nearest_threshold(index, *_candidates(index, w, max(k, candidates), allowed), w, b, k)


def _nearest_threshold(index, ids, estimates, w, b, k) -> np.ndarray:
    """The ``k`` of ``ids`` whose score ``w.x + b`` is nearest 0 (ties: the better ranked).

    Chosen from the estimates, then settled exactly among the ``SHORTLIST_PER_LABEL * k``
    nearest by estimate: only those rows are read from disk."""
    near = np.argsort(np.abs(_estimated_raw(w, b, estimates)), kind="stable")[:SHORTLIST_PER_LABEL * k]
    near = np.sort(near)  # ties keep the ranking's order, as the estimates' own sort did
    exact = _raw_scores(index, ids[near], w, b)
    return ids[near[np.argsort(np.abs(exact), kind="stable")[:k]]]


def _diverse(index, w, b, k, allowed, rng, candidates) -> np.ndarray:
    ids, estimates = _candidates(index, w, max(k, candidates), allowed)
    if len(ids) <= k:
        return ids
    z = _estimated_raw(w, b, estimates).astype(np.float64)
    p = 0.5 * (1.0 + np.tanh(0.5 * z)) + 1e-12
    # Draw in order of exponential race keys: a weighted sample without replacement in
    # one pass, so skipped near-duplicates are simply passed over.
    order = np.argsort(rng.exponential(size=len(ids)) / p, kind="stable")
    vecs = index.matrix()
    chosen: list[int] = []
    chosen_vecs = []
    for i in order:
        v = np.asarray(vecs[ids[i]], dtype=np.float32)
        if chosen_vecs and float(np.max(np.stack(chosen_vecs) @ v)) > NEAR_DUPLICATE:
            continue
        chosen.append(int(ids[i]))
        chosen_vecs.append(v)
        if len(chosen) == k:
            return np.asarray(chosen, dtype=np.int64)
    # Everything left is a near-duplicate of the batch: fill with the likeliest of them.
    taken = set(chosen)
    rest = [int(ids[i]) for i in order if int(ids[i]) not in taken]
    return np.asarray(chosen + rest[: k - len(chosen)], dtype=np.int64)


def _auto(index, w, b, k, allowed, rng, ctx: Context, candidates, pool) -> np.ndarray:
    from localq.explore import coverage

    unfitted = is_unfitted(w, b)
    if ctx.cold():
        share = ctx.explore_first if len(ctx.batch_positives) == 0 else ctx.explore_cold
        n_explore = int(round(share * k))
        if n_explore:
            if ctx.clusters is not None:
                explore = coverage(ctx.clusters, allowed, w, ctx.labeled_ids, n_explore, rng,
                                   temperature=ctx.temperature)
            else:
                explore = _random(n_explore, allowed, rng)
        else:
            explore = np.empty(0, np.int64)
        rest = allowed.copy()
        rest[explore] = False
        m = min(k - len(explore), int(rest.sum()))
        if m <= 0:
            return explore
        # The exploit part: the query's best (a warm-up draw among them while unfitted).
        exploit = _warmup(index, w, m, rest, rng, pool) if unfitted else _search(index, w, m, rest)
        return np.concatenate([exploit, explore]).astype(np.int64)
    if unfitted:  # positives but no fit (cannot happen from the trainer): treat as a prompt
        return _warmup(index, w, k, allowed, rng, pool)
    n_top = int(round(ctx.top_share * k))
    # One search serves both parts: its first n_top rows are the top part, and the next
    # ``candidates`` are the best of the rest, which is what ``_boundary`` would search for.
    ids, estimates = _candidates(index, w, n_top + max(k - n_top, candidates), allowed)
    top, pool = ids[:n_top], ids[n_top:]
    m = min(k - len(top), len(pool))
    edge = _nearest_threshold(index, pool, estimates[n_top:], w, b, m) if m > 0 else pool[:0]
    return np.concatenate([top, edge]).astype(np.int64)


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
    warmup_pool: int | None = None,
    context: Context | None = None,
) -> np.ndarray:
    """Ids (int64) of ``min(k, allowed.sum())`` distinct allowed images to label next.

    ``index`` follows the VectorIndex contract (``search``, ``candidates``, ``matrix``,
    ``ntotal``);
    ``allowed`` is a bool mask over its rows; ``rng`` drives the random strategies.
    ``context`` is what ``auto`` reads (labels so far, clusters); without it, ``auto``
    acts as on a fresh session without clusters.
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown sampling strategy {strategy!r}; choose one of {', '.join(STRATEGIES)}")
    allowed = np.asarray(allowed, dtype=bool)
    if allowed.shape != (index.ntotal,):
        raise ValueError(f"allowed mask has length {allowed.shape} but the index holds {index.ntotal} vectors")
    k = min(int(k), int(allowed.sum()))
    if k <= 0:
        return np.empty(0, dtype=np.int64)
    if strategy == "random":
        return _random(k, allowed, rng)
    if strategy == "top":
        return _search(index, w, k, allowed)
    pool = WARMUP_POOL_PER_LABEL * k if warmup_pool is None else warmup_pool
    if strategy == "auto":
        return _auto(index, w, b, k, allowed, rng, context or Context(), candidates, pool)
    if is_unfitted(w, b):
        return _warmup(index, w, k, allowed, rng, pool)
    if strategy == "boundary":
        return _boundary(index, w, b, k, allowed, candidates)
    return _diverse(index, w, b, k, allowed, rng, candidates)
