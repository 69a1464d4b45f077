"""Batch selection: which unseen images a round shows the labeler.

- ``top``: the article's choice, the k highest ``w.x``. It finds positives, but the ones
  the query already ranks first, so alone it teaches the classifier little.
- ``boundary``: the k images whose score ``w.x + b`` is nearest the decision threshold
  (uncertainty sampling): what the classifier is least sure of, positives it ranks too
  low and negatives it ranks too high.
- ``diverse``: k images drawn at random among the likely positives, each with
  probability proportional to ``sigmoid(w.x + b)``. The batch spreads over the whole
  positive region instead of piling up at its top.
- ``random``: uniform over the allowed images (the benchmark's control), near-copies
  passed over as by every strategy.
- ``auto`` (the default) reads the session so far (:class:`Context`) and is in one of
  three phases (``Context.phase``):

  * ``start`` (nothing labeled yet): the query's best, as ``top``. A prompt the encoder
    understands puts most positives there, and the person sees at once whether it works;
  * ``exploring`` (the last ``EXPLORE_AFTER_BATCHES`` batches held no positive): most of the
    batch covers the collection's k-means clusters (``localq.loop.explore.coverage``:
    clusters not labeled yet first, ranked softly by the query), the rest is the query's
    best, until a batch brings a positive back;
  * ``refining``: ``top_share`` of the batch from the query's best, the rest at the
    ``boundary``.

  The shares were chosen on dev splits (docs/benchmark.md).

Every strategy skips *near-copies* (``NearCopies``): an image whose cosine to an image
already labeled, or already in the batch, is above ``near_copy``. Photo collections hold
bursts of one scene, and a strategy that exploits would otherwise spend label after
label on what the person has in effect labeled already. Where nothing distinct is left,
near-copies fill the batch.

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

STRATEGIES = ("auto", "top", "boundary", "diverse", "random")
DEFAULT_STRATEGY = "auto"

# How many of the best-ranked allowed images boundary and diverse look at.
DEFAULT_CANDIDATES = 10_000
# An unfitted query draws its batch among this many of its best images, per label asked.
WARMUP_POOL_PER_LABEL = 100
# Boundary sampling settles its k picks exactly among this many per pick nearest the
# threshold by the index's estimates (an IVF index estimates from its codes).
SHORTLIST_PER_LABEL = 4


# ``auto``: how a batch is shared between exploring and exploiting (see docs/benchmark.md).
AUTO_EXPLORE_FIRST = 0.0  # share of the first batch (nothing labeled yet) spent exploring:
#   none; the prompt's best come first, and exploration waits for a batch without a positive
AUTO_EXPLORE_COLD = 0.9  # share of a batch spent exploring after an all-negative batch (0.7: worse)
AUTO_TOP_SHARE = 0.5  # while refining: share of the batch from the top, the rest at the boundary
#   (dev, docs/bench/dev-issue20: 1.0 was 0.003 and 0.002 AP lower on the two decisive scenarios)
AUTO_TEMPERATURE = 3.0  # how strongly the query ranks the clusters to explore (1: too strongly; 10: no better)
EXPLORE_AFTER_BATCHES = 1  # this many batches in a row without a positive bring exploration back
# Cosine above which an image counts as a near-copy (a burst shot, a re-encode, a crop) of one
# already labeled or already in the batch; every strategy skips those. 1.0 turns it off.
# Chosen on dev (docs/bench/dev-issue20): on burst copies of Tiny-ImageNet, 0.75 left 2 labels
# in 100 on a scene already labeled (0.80: 8, 0.83: 15), and on the set without copies it
# was also the best AP (spreading a batch helps). 98% of copy pairs are above 0.75; 15% of
# images have an image of another scene above it, skipped only while that one is labeled.
NEAR_COPY = 0.75


@dataclass(frozen=True)
class Context:
    """What ``auto`` reads besides the query: the session so far and the collection's clusters."""

    labeled_ids: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))
    labeled_scores: np.ndarray = field(default_factory=lambda: np.empty(0, np.float32))
    batch_positives: tuple[int, ...] = ()  # positives in each labeled batch so far, oldest first
    clusters: object | None = None  # localq.loop.explore.Clusters; None: explore by random draws
    explore_first: float = AUTO_EXPLORE_FIRST
    explore_cold: float = AUTO_EXPLORE_COLD
    top_share: float = AUTO_TOP_SHARE
    temperature: float = AUTO_TEMPERATURE

    def positives(self) -> int:
        return int(np.sum(np.asarray(self.labeled_scores) > 0))

    def wants_exploring(self) -> bool:
        """No positive yet, or the last EXPLORE_AFTER_BATCHES batches held none."""
        recent = self.batch_positives[-EXPLORE_AFTER_BATCHES:]
        return self.positives() == 0 or (len(recent) == EXPLORE_AFTER_BATCHES and not any(recent))

    def phase(self) -> str:
        """``start`` before any batch was labeled, ``exploring`` after a batch without a
        positive (until the next positive), ``refining`` otherwise."""
        if not self.batch_positives and not len(self.labeled_ids):
            return "start"
        return "exploring" if self.wants_exploring() else "refining"


class NearCopies:
    """Picks distinct images: none a near-copy (cosine above ``threshold``) of an image
    already labeled or already picked for this batch.

    Each strategy hands it its candidates in order of preference; it keeps the first that
    are distinct. The labeled rows are read once per batch (20 MB of 512-d rows at 10,000
    labels, 51 MB of 1280-d ones), unless the caller hands them over (``labeled_rows``:
    the Trainer keeps them from round to round)."""

    def __init__(self, index, labeled_ids, threshold: float = NEAR_COPY, labeled_rows=None):
        self.index, self.threshold = index, float(threshold)
        self.on = self.threshold < 1.0
        if not (self.on and len(labeled_ids)):
            self.kept = np.empty((0, 0), np.float32)
        elif labeled_rows is not None:  # the caller's copy of those rows (in any order)
            self.kept = np.asarray(labeled_rows, np.float32)
        else:
            self.kept = index.rows(np.unique(np.asarray(labeled_ids, np.int64)))
        self.batch = np.empty((0, 0), np.float32)  # the rows picked so far (kept apart: the labeled are 20 MB)
        self.picked: list[int] = []

    def take(self, ids, n: int) -> np.ndarray:
        """Up to ``n`` of ``ids`` (in their order) that are distinct; they join the picked.

        Candidates are read a chunk at a time (``4 n``) and the reading stops once ``n``
        are chosen: a strategy may offer its whole candidate pool (10,000 ids) for a few
        picks."""
        ids = np.asarray(ids, np.int64)
        taken = set(self.picked)
        ids = ids[[int(i) not in taken for i in ids]] if taken else ids
        if n <= 0 or not len(ids):
            return ids[:0]
        if not self.on:
            out = ids[:n]
            self.picked += [int(i) for i in out]
            return out
        out: list[int] = []
        step = 4 * n
        for start in range(0, len(ids), step):
            chunk = ids[start : start + step]
            rows = self.index.rows(chunk)
            near = np.zeros(len(chunk), bool)
            for held in (self.kept, self.batch):
                if len(held):  # held @ rows.T, not rows @ held.T: BLAS streams 10,000 labeled rows once
                    near |= (held @ rows.T).max(axis=0) > self.threshold
            chosen: list[int] = []
            for j in range(len(chunk)):
                if near[j]:
                    continue
                chosen.append(j)
                if len(out) + len(chosen) == n:
                    break
                # Later candidates must also be distinct from this one.
                near[j + 1 :] |= rows[j + 1 :] @ rows[j] > self.threshold
            self.batch = np.concatenate([self.batch, rows[chosen]]) if len(self.batch) else rows[chosen]
            out += [int(i) for i in chunk[chosen]]
            if len(out) == n:
                break
        self.picked += out
        return np.asarray(out, np.int64)

    def take_or_fill(self, ids, n: int) -> np.ndarray:
        """``take``, then ``fill`` up to ``n`` from the same order where too few are distinct."""
        out = self.take(ids, n)
        return out if len(out) >= n else np.concatenate([out, self.fill(ids, n - len(out))])

    def fill(self, ids, n: int) -> np.ndarray:
        """``n`` more of ``ids`` not picked yet, copies or not: for when nothing distinct is left."""
        taken = set(self.picked)
        out = np.asarray([int(i) for i in ids if int(i) not in taken][: max(n, 0)], np.int64)
        self.picked += [int(i) for i in out]
        return out


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


def _estimated_raw(w, b, estimates) -> np.ndarray:
    """``w.x + b`` from estimates of ``unit(w).x``."""
    return estimates * np.float32(np.linalg.norm(np.asarray(w, dtype=np.float32))) + np.float32(b)


def _distinct_best(nc: NearCopies, k: int, total: int, fetch) -> np.ndarray:
    """``k`` distinct ids in the order ``fetch(n)`` ranks them (its best ``n``), asking for a
    wider ranking while near-copies leave the batch short; near-copies fill what no
    distinct image can."""
    n, examined, got = min(total, 4 * k), 0, []
    while True:
        ids = fetch(n)
        got.append(nc.take(ids[examined:], k - sum(map(len, got))))
        examined = len(ids)
        if sum(map(len, got)) >= k or n >= total or not len(ids):
            break
        n = min(total, 4 * n)
    out = np.concatenate(got) if got else np.empty(0, np.int64)
    if len(out) < k:
        out = np.concatenate([out, nc.fill(ids, k - len(out))])
    return out.astype(np.int64)


def _top(index, w, k, allowed, nc: NearCopies) -> np.ndarray:
    return _distinct_best(nc, k, int(allowed.sum()), lambda n: _search(index, w, n, allowed))


def _warmup(index, w, k, allowed, rng, pool, nc: NearCopies) -> np.ndarray:
    ids, _ = _candidates(index, w, max(k, pool), allowed)
    order = rng.permutation(ids)
    return np.sort(nc.take_or_fill(order, k))


def _boundary(index, w, b, k, allowed, candidates, nc: NearCopies) -> np.ndarray:
    return _nearest_threshold(index, *_candidates(index, w, max(k, candidates), allowed), w, b, k, nc)


def _nearest_threshold(index, ids, estimates, w, b, k, nc: NearCopies) -> np.ndarray:
    """The ``k`` distinct ``ids`` whose score ``w.x + b`` is nearest 0 (ties: the better ranked).

    Ranked by the estimates, then settled exactly a shortlist of ``SHORTLIST_PER_LABEL * k``
    at a time: only those rows are read from disk, and a further shortlist only where
    near-copies left the batch short."""
    order = np.argsort(np.abs(_estimated_raw(w, b, estimates)), kind="stable")
    step = SHORTLIST_PER_LABEL * max(k, 1)
    got: list[np.ndarray] = []
    for start in range(0, len(order), step):
        near = np.sort(order[start : start + step])  # ties keep the ranking's order
        exact = index.scores(w, b, ids[near])
        got.append(nc.take(ids[near[np.argsort(np.abs(exact), kind="stable")]], k - sum(map(len, got))))
        if sum(map(len, got)) >= k:
            break
    out = np.concatenate(got) if got else np.empty(0, np.int64)
    if len(out) < k:
        out = np.concatenate([out, nc.fill(ids[order], k - len(out))])
    return out.astype(np.int64)


def _diverse(index, w, b, k, allowed, rng, candidates, nc: NearCopies) -> np.ndarray:
    ids, estimates = _candidates(index, w, max(k, candidates), allowed)
    z = _estimated_raw(w, b, estimates).astype(np.float64)
    p = 0.5 * (1.0 + np.tanh(0.5 * z)) + 1e-12
    # Draw in order of exponential race keys: a weighted sample without replacement in
    # one pass, so skipped near-copies are simply passed over.
    order = ids[np.argsort(rng.exponential(size=len(ids)) / p, kind="stable")]
    return nc.take_or_fill(order, k).astype(np.int64)  # where only near-copies are left: the likeliest


def _auto(index, w, b, k, allowed, rng, ctx: Context, candidates, nc: NearCopies) -> np.ndarray:
    """The prompt's best first; explore after a batch without a positive, until the next
    positive; otherwise refine: ``top_share`` of the batch from the top, the rest at the
    boundary (module docstring)."""
    from localq.loop.explore import coverage

    phase = ctx.phase()
    if phase == "refining" and not is_unfitted(w, b):
        n_top = int(round(ctx.top_share * k))
        # One search serves both parts: its best rows give the top part, and the rest are
        # the candidates ``_boundary`` would search for.
        ids, estimates = _candidates(index, w, n_top + max(k - n_top, candidates), allowed)
        top = nc.take(ids, n_top)
        rest = ~np.isin(ids, top)
        m = min(k - len(top), int(rest.sum()))
        edge = _nearest_threshold(index, ids[rest], estimates[rest], w, b, m, nc) if m > 0 else ids[:0]
        return np.concatenate([top, edge]).astype(np.int64)
    share = ctx.explore_first if phase == "start" else ctx.explore_cold
    n_explore = int(round(share * k))
    explore = np.empty(0, np.int64)
    if n_explore:
        if ctx.clusters is not None:
            # Twice what is wanted, so near-copies of labeled images can be passed over.
            offered = coverage(
                ctx.clusters, allowed, w, ctx.labeled_ids, 2 * n_explore, rng, temperature=ctx.temperature
            )
        else:
            offered = rng.permutation(np.flatnonzero(allowed))[: 4 * n_explore]
        explore = nc.take(offered, n_explore)
    rest = allowed.copy()
    rest[explore] = False
    m = min(k - len(explore), int(rest.sum()))
    if m <= 0:
        return explore
    return np.concatenate([_top(index, w, m, rest, nc), explore]).astype(np.int64)


def _random(k, allowed, rng, nc: NearCopies) -> np.ndarray:
    pool = np.flatnonzero(allowed)
    order = rng.choice(pool, size=min(4 * k, pool.size), replace=False)
    out = nc.take(order, k)
    if len(out) < k and len(order) < pool.size:  # near-copies everywhere: look at all of them
        order = rng.permutation(pool)
        out = np.concatenate([out, nc.take(order, k - len(out))])
    if len(out) < k:
        out = np.concatenate([out, nc.fill(order, k - len(out))])
    return np.sort(out).astype(np.int64)


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
    labeled: np.ndarray | None = None,
    labeled_rows: np.ndarray | None = None,
    near_copy: float = NEAR_COPY,
) -> np.ndarray:
    """Ids (int64) of ``min(k, allowed.sum())`` distinct allowed images to label next.

    ``index`` follows the VectorIndex contract (``search``, ``candidates``, ``rows``,
    ``scores``, ``ntotal``);
    ``allowed`` is a bool mask over its rows; ``rng`` drives the random strategies.
    ``context`` is what ``auto`` reads (labels so far, clusters); without it, ``auto``
    acts as on a fresh session without clusters. ``labeled`` (default: the context's
    labeled ids) are the images whose near-copies (cosine above ``near_copy``) are
    skipped, as are near-copies within the batch; ``near_copy=1`` turns that off.
    ``labeled_rows``: those images' rows (one per distinct id, in any order) where the
    caller holds them already; otherwise they are read here.
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown sampling strategy {strategy!r}; choose one of {', '.join(STRATEGIES)}")
    allowed = np.asarray(allowed, dtype=bool)
    if allowed.shape != (index.ntotal,):
        raise ValueError(f"allowed mask has length {allowed.shape} but the index holds {index.ntotal} vectors")
    k = min(int(k), int(allowed.sum()))
    if k <= 0:
        return np.empty(0, dtype=np.int64)
    context = context or Context()
    labeled = context.labeled_ids if labeled is None else labeled
    nc = NearCopies(index, labeled, near_copy, labeled_rows)
    if strategy == "random":
        return _random(k, allowed, rng, nc)
    if strategy == "top":
        return _top(index, w, k, allowed, nc)
    if strategy == "auto":
        return _auto(index, w, b, k, allowed, rng, context, candidates, nc)
    pool = WARMUP_POOL_PER_LABEL * k if warmup_pool is None else warmup_pool
    if is_unfitted(w, b):
        return _warmup(index, w, k, allowed, rng, pool, nc)
    if strategy == "boundary":
        return _boundary(index, w, b, k, allowed, candidates, nc)
    return _diverse(index, w, b, k, allowed, rng, candidates, nc)
