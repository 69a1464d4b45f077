"""Exploration for a cold start: the collection's clusters, and batches that cover them.

When a prompt means nothing to the encoder, the images it ranks first are all negatives,
and every strategy that reads only the query's own ranking (``top``, ``boundary``)
keeps retrieving more of them. A person would then look around the collection. So does
``auto`` (``localq.loop.sampling``): it spends part of each batch on *coverage*, one image
from each of several k-means clusters of the collection, clusters with no label yet
first, ranked (softly) by the current query so a weakly working prompt still steers. A
cluster's first image is its most typical; later ones are drawn at random from it, so a
class too rare to own a cluster is still reached (at its base rate, as random sampling
would reach it) rather than never.

- ``kmeans``: spherical k-means centroids (faiss) and every row's cluster;
- ``collection_clusters``: the same for a collection, fitted once and extended as it
  grows, cached in memory and in a small ``clusters.npz`` file in the collection
  directory (a missing, stale or unreadable file is simply recomputed; a failed write
  only costs the next process the recomputation);
- ``coverage``: pure arrays in, ids out: the explore part of a batch.
"""

from __future__ import annotations

import hashlib
import os
import threading
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

from localq.arrays import unit_rows

CLUSTERS_FILE = "clusters.npz"
CLUSTERS_VERSION = 1
# About one cluster per IMAGES_PER_CLUSTER images, within [MIN, MAX]: enough clusters that
# a class of a few percent of the collection owns some of them, few enough that a 100-label
# session can visit most of them.
IMAGES_PER_CLUSTER = 200
MIN_CLUSTERS = 2
MAX_CLUSTERS = 64
KMEANS_ITERS = 20
KMEANS_SEED = 1234
KMEANS_REDO = 3  # best of 3 starts: one start can merge two clusters and split another


@dataclass(frozen=True)
class Clusters:
    centroids: np.ndarray  # [C, d] float32, unit rows
    assign: np.ndarray  # [n] int32: every row's nearest centroid
    closeness: np.ndarray  # [n] float32: each row's cosine to its centroid (how typical it is)
    fitted_rows: int = 0  # rows k-means saw (the rest were assigned after); 0: not recorded

    @cached_property
    def typical_first(self) -> np.ndarray:
        """Every row id, grouped by cluster, most typical first (ties: lower id first).

        Sorted once per Clusters object: sorting every row per batch cost 180 ms of a
        250 ms round at 1M rows, where filtering this order by the allowed mask is a
        few ms and picks the same images."""
        return np.lexsort((-self.closeness, self.assign))

    @cached_property
    def starts(self) -> np.ndarray:
        """Where each cluster's rows begin in ``typical_first`` (C + 1 offsets)."""
        sizes = np.bincount(self.assign, minlength=len(self.centroids))
        return np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)


def n_clusters_for(n: int) -> int:
    return int(np.clip(n // IMAGES_PER_CLUSTER, MIN_CLUSTERS, MAX_CLUSTERS)) if n >= MIN_CLUSTERS else max(n, 1)


def kmeans(vectors: np.ndarray, n_clusters: int | None = None, *, seed: int = KMEANS_SEED) -> Clusters:
    """Spherical k-means (inner product on unit vectors) of ``vectors`` [n, d]."""
    import faiss

    x = np.ascontiguousarray(vectors, dtype=np.float32)
    n, d = x.shape
    c = n_clusters_for(n) if n_clusters is None else int(min(max(n_clusters, 1), n))
    if c <= 1:
        centroid = unit_rows(x.mean(axis=0, keepdims=True))
        return Clusters(centroid, np.zeros(n, np.int32), (x @ centroid[0]).astype(np.float32), n)
    km = faiss.Kmeans(
        d,
        c,
        niter=KMEANS_ITERS,
        nredo=KMEANS_REDO,
        seed=seed,
        spherical=True,
        verbose=False,
        max_points_per_centroid=256,
    )  # subsampled training: seconds even at 1M rows
    km.train(x)
    centroids = unit_rows(km.centroids)
    assign, closeness = _assign(x, centroids)
    return Clusters(centroids, assign, closeness, n)


def _assign(x: np.ndarray, centroids: np.ndarray, chunk: int = 65536) -> tuple[np.ndarray, np.ndarray]:
    assign = np.empty(len(x), np.int32)
    closeness = np.empty(len(x), np.float32)
    for start in range(0, len(x), chunk):
        sims = x[start : start + chunk] @ centroids.T
        assign[start : start + chunk] = sims.argmax(axis=1)
        closeness[start : start + chunk] = sims.max(axis=1)
    return assign, closeness


# -- per collection, cached ------------------------------------------------------------------
_cache: dict[tuple, Clusters] = {}
_lock = threading.Lock()


def collection_clusters(collection, fit_rows: np.ndarray | None = None) -> Clusters | None:
    """The clusters of every row of ``collection``'s index (None for an empty collection).

    Keyed by the collection's directory, row count and encoder; labeling never recomputes
    them. Rows are only ever appended, so while a collection grows (a background indexer
    behind the demo's UI) new rows join their nearest centroid, a matrix product; k-means
    runs again once it has grown by more than REFIT_GROWTH since the last fit.

    ``fit_rows`` (a mask) restricts the k-means fit to a classifier's pool: a benchmark's
    held-out split (and dev, while tuning) must not shape what ``auto`` explores, even
    through unlabeled vectors. Every row is still assigned to its nearest centroid. Such
    clusters are cached in memory only, under the mask's digest.
    """
    index = collection.index
    n = int(index.ntotal)
    if n == 0:
        return None
    if fit_rows is not None:
        fit_rows = np.asarray(fit_rows, bool)
        if not fit_rows.any():
            return None
    mask_key = None if fit_rows is None else hashlib.sha1(np.packbits(fit_rows)).hexdigest()
    key = (str(Path(collection.root).resolve()), n, collection.model_id or "", mask_key)
    with _lock:
        hit = _cache.get(key)
        if hit is not None:
            return hit
        if fit_rows is not None:
            clusters = _fit_on_rows(index.matrix(), fit_rows)
            _cache.clear()
            _cache[key] = clusters
            return clusters
        path = Path(collection.root) / CLUSTERS_FILE
        fitted_rows, earlier = _earlier(key) or _load(path, key[2]) or (0, None)
        if earlier is not None and len(earlier.assign) == n:
            clusters = earlier
        elif earlier is not None and len(earlier.assign) < n <= fitted_rows * REFIT_GROWTH:
            clusters = _extend(earlier, index.matrix())
        else:
            clusters = kmeans(index.matrix())
            _save(path, clusters, n, key[2])
        _cache.clear()  # one collection at a time is the common case; keep memory flat
        _cache[key] = clusters
        return clusters


# Re-fit k-means once the collection has this many times the rows of the last fit.
REFIT_GROWTH = 1.25


def _earlier(key: tuple) -> tuple[int, Clusters] | None:
    """Clusters of every row cached for fewer rows of the same collection and encoder."""
    for (root, rows, model_id, mask_key), clusters in _cache.items():
        if root == key[0] and model_id == key[2] and rows < key[1] and mask_key is None:
            return clusters.fitted_rows, clusters
    return None


def _fit_on_rows(x: np.ndarray, rows: np.ndarray) -> Clusters:
    """k-means of the ``rows`` (mask) of ``x``; every row of ``x`` assigned to a centroid."""
    centroids = kmeans(x[rows]).centroids
    assign, closeness = _assign(x, centroids)
    return Clusters(centroids, assign, closeness, len(x))


def _extend(clusters: Clusters, x: np.ndarray) -> Clusters:
    """The same centroids; rows added since they were fitted assigned to the nearest."""
    old = len(clusters.assign)
    assign, closeness = _assign(np.ascontiguousarray(x[old:], dtype=np.float32), clusters.centroids)
    return Clusters(
        clusters.centroids,
        np.concatenate([clusters.assign, assign]),
        np.concatenate([clusters.closeness, closeness]),
        clusters.fitted_rows,
    )


def _load(path: Path, model_id: str) -> tuple[int, Clusters] | None:
    try:
        with np.load(path, allow_pickle=False) as data:
            if int(data["version"]) != CLUSTERS_VERSION or str(data["model_id"]) != model_id:
                return None
            n = int(data["n_rows"])
            out = Clusters(
                data["centroids"].astype(np.float32),
                data["assign"].astype(np.int32),
                data["closeness"].astype(np.float32),
                n,
            )
    except (OSError, KeyError, ValueError):
        return None
    return (n, out) if len(out.assign) == n and len(out.closeness) == n else None


def _save(path: Path, clusters: Clusters, n: int, model_id: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp.npz")
    try:
        if path.exists():
            with np.load(path, allow_pickle=False) as data:
                if int(data["n_rows"]) == n and str(data["model_id"]) == model_id:
                    return  # already there
        np.savez(
            tmp,
            version=CLUSTERS_VERSION,
            n_rows=n,
            model_id=model_id,
            centroids=clusters.centroids,
            assign=clusters.assign,
            closeness=clusters.closeness,
        )
        tmp.replace(path)  # never a half-written file under the real name
    except (OSError, KeyError, ValueError):
        tmp.unlink(missing_ok=True)  # read-only collection dir: recomputed next process


# -- the explore part of a batch --------------------------------------------------------------
def coverage(
    clusters: Clusters,
    allowed: np.ndarray,
    query: np.ndarray,
    labeled_ids: np.ndarray,
    k: int,
    rng: np.random.Generator,
    *,
    temperature: float = 1.0,
) -> np.ndarray:
    """Up to ``k`` allowed ids, one per cluster, from clusters with the fewest labels so far.

    Among clusters labeled equally often, the order is a Gumbel-perturbed ranking by the
    centroid's standardized score under ``query`` divided by ``temperature``: a working
    prompt's clusters come first, yet every cluster has a chance, and clusters that were
    already labeled (the query's negatives) wait until the others were visited.

    From a chosen cluster that holds no label yet, its most typical allowed image (nearest
    its centroid): the one that best stands for it. From a cluster that holds one (or
    already gave an image to this batch), an allowed image drawn at random from it. Going
    on down the typical order would only show more of what its first label already showed,
    and never an image of a class too rare to own a cluster of its own: on the dev splits
    of long-tailed copies of CIFAR-10 and Imagenette with mismatched prompts, typical-first
    found no positive in 100 labels in 40 of 100 runs, drawing at random in 23 (mean AP
    over 10-100 labels +0.131 on Imagenette, +0.011 on CIFAR-10; the balanced data sets
    unchanged). Drawing even the first image at random lost 0.024 on the balanced ones
    (0.04-0.05 with mismatched prompts).
    See docs/benchmark.md, the within-cluster study.
    """
    allowed = np.asarray(allowed, bool)
    if k <= 0 or not allowed.any():
        return np.empty(0, np.int64)
    n_c = len(clusters.centroids)
    visits = (
        np.bincount(clusters.assign[np.asarray(labeled_ids, np.int64)], minlength=n_c)
        if len(labeled_ids)
        else np.zeros(n_c, np.int64)
    )
    rel = clusters.centroids @ np.asarray(query, np.float32).ravel()
    rel = (rel - rel.mean()) / max(float(rel.std()), 1e-9)
    key = rel / max(temperature, 1e-6) + rng.gumbel(size=n_c)
    order = np.lexsort((-key, visits))  # fewest labels first, then the best key

    # Each cluster's allowed members, most typical first, found by walking its rows in
    # ``typical_first`` from where the last pick stopped: a batch reads a few rows of the
    # clusters it visits, where filtering every row by the mask cost 130 ms at 10M.
    members = _AllowedMembers(clusters, allowed)
    chosen: list[int] = []
    open_clusters = list(order)
    while len(chosen) < k and open_clusters:
        still_open = []
        for c in open_clusters:
            c = int(c)
            row = members.at_random(c, rng) if visits[c] or members.gave(c) else members.typical(c)
            if row is None:
                continue
            chosen.append(row)
            still_open.append(c)
            if len(chosen) == k:
                break
        open_clusters = still_open  # more than one image per cluster only once every cluster gave one
    return np.asarray(chosen, np.int64)


class _AllowedMembers:
    """A cluster's allowed rows for one batch: its next most typical, or one at random;
    never a row this batch already took."""

    _FIRST_CHUNK = 256
    _RANDOM_TRIES = 32

    def __init__(self, clusters: Clusters, allowed: np.ndarray):
        self.rows, self.starts, self.allowed = clusters.typical_first, clusters.starts, allowed
        self.cursor = self.starts[:-1].copy()
        self.taken: set[int] = set()
        self.given = np.zeros(len(self.cursor), bool)

    def gave(self, c: int) -> bool:
        return bool(self.given[c])

    def _take(self, c: int, row: int) -> int:
        self.taken.add(row)
        self.given[c] = True
        return row

    def typical(self, c: int) -> int | None:
        """The most typical allowed row not yet taken. Only asked of a cluster before any
        random draw from it in this batch, so the cursor never meets a taken row."""
        start, end, chunk = int(self.cursor[c]), int(self.starts[c + 1]), self._FIRST_CHUNK
        while start < end:
            rows = self.rows[start : min(end, start + chunk)]
            # Clusters can hold rows past this view of a growing collection: those are not allowed.
            ok = rows < len(self.allowed)
            ok[ok] = self.allowed[rows[ok]]
            hit = int(np.argmax(ok))
            if ok[hit]:
                self.cursor[c] = start + hit + 1
                return self._take(c, int(rows[hit]))
            start += len(rows)
            chunk *= 4  # a mostly seen cluster: look further at a time
        self.cursor[c] = end
        return None

    def at_random(self, c: int, rng: np.random.Generator) -> int | None:
        """An allowed row not yet taken, uniformly at random among the cluster's."""
        rows = self.rows[self.starts[c] : self.starts[c + 1]]
        if not len(rows):
            return None
        n_allowed = len(self.allowed)
        for _ in range(self._RANDOM_TRIES):  # a few draws, when most of the cluster is allowed
            row = int(rows[rng.integers(len(rows))])
            if row < n_allowed and self.allowed[row] and row not in self.taken:
                return self._take(c, row)
        left = rows[rows < n_allowed]  # a mostly seen cluster: draw among what is left
        left = left[self.allowed[left]]
        if self.taken:
            left = left[~np.isin(left, np.fromiter(self.taken, np.int64, len(self.taken)))]
        return self._take(c, int(left[rng.integers(len(left))])) if len(left) else None
