"""Cold-start exploration: clusters of a collection and the ``auto`` strategy that uses them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from test_sampling import FakeIndex, unit_rows

from conftest import synthetic_collection, with_rows_replaced
from localq.loop import classifier_file, explore
from localq.loop.sampling import Context, select
from localq.loop.trainer import Trainer
from localq.loop.trainer_types import Settings


def _blobs(n_clusters=6, per=50, dim=16, spread=0.3, seed=0):
    rng = np.random.default_rng(seed)
    centres = unit_rows(rng.standard_normal((n_clusters, dim)))
    labels = np.repeat(np.arange(n_clusters), per)
    x = unit_rows(centres[labels] + spread * rng.standard_normal((len(labels), dim)) / np.sqrt(dim))
    return x, labels, centres


def test_kmeans_recovers_well_separated_clusters():
    x, labels, _ = _blobs()
    clusters = explore.kmeans(x, 6)
    assert clusters.centroids.shape == (6, 16) and clusters.assign.shape == (300,)
    assert np.allclose(np.linalg.norm(clusters.centroids, axis=1), 1.0, atol=1e-5)
    # Every true cluster maps to one k-means cluster (purity 1 on separated blobs).
    for c in range(6):
        assert len(set(clusters.assign[labels == c].tolist())) == 1
    assert len(set(clusters.assign.tolist())) == 6
    assert np.allclose(clusters.closeness, np.sum(x * clusters.centroids[clusters.assign], axis=1), atol=1e-5)


def test_coverage_takes_one_typical_image_per_unvisited_cluster():
    x, labels, _ = _blobs()
    clusters = explore.kmeans(x, 6)
    allowed = np.ones(len(x), bool)
    query = clusters.centroids[0]
    # Clusters 0..3 (by k-means id) already have labels; coverage must go to the other two first.
    labeled = np.array([np.flatnonzero(clusters.assign == c)[0] for c in range(4)])
    allowed[labeled] = False
    ids = explore.coverage(clusters, allowed, query, labeled, 2, np.random.default_rng(0))
    assert sorted(clusters.assign[ids].tolist()) == [4, 5]
    for i in ids:  # the most typical allowed member of its cluster
        members = np.flatnonzero((clusters.assign == clusters.assign[i]) & allowed)
        assert clusters.closeness[i] == clusters.closeness[members].max()
    # Asking for more than there are clusters: every cluster once, then second images.
    many = explore.coverage(clusters, allowed, query, labeled, 9, np.random.default_rng(0))
    assert len(set(many.tolist())) == 9 and allowed[many].all()
    assert set(clusters.assign[many[:6]].tolist()) == set(range(6))


def _one_cluster(n=100, dim=8):
    """One cluster whose rows are ever less typical: row i has closeness 1 - i / n."""
    centroid = unit_rows(np.eye(dim, dtype=np.float32)[:1])
    return explore.Clusters(centroid, np.zeros(n, np.int32), (1.0 - np.arange(n) / n).astype(np.float32), n)


def test_a_cluster_that_holds_a_label_gives_images_drawn_across_it_not_its_next_most_typical():
    clusters = _one_cluster()
    allowed = np.ones(100, bool)
    labeled = [0]  # its most typical image was labeled: the cluster has been visited
    allowed[0] = False
    rng = np.random.default_rng(0)
    picks = []
    for _ in range(30):  # one image a batch, each labeled before the next
        (row,) = explore.coverage(clusters, allowed, clusters.centroids[0], np.array(labeled), 1, rng)
        picks.append(int(row))
        labeled.append(int(row))
        allowed[row] = False
    assert len(set(picks)) == 30 and 0 not in picks
    # Typical-first would have given rows 1..30 and never the least typical tenth (a class
    # too rare to own a cluster); drawn at random, the picks spread over the whole cluster.
    assert picks != list(range(1, 31))
    assert any(row >= 90 for row in picks) and max(picks) - min(picks) > 50


def test_one_batch_never_takes_a_row_twice_and_an_unvisited_cluster_starts_with_its_most_typical():
    clusters = _one_cluster()
    allowed = np.ones(100, bool)
    ids = explore.coverage(
        clusters, allowed, clusters.centroids[0], np.empty(0, np.int64), 20, np.random.default_rng(3)
    )
    assert ids[0] == 0  # no label in it yet: its most typical image first
    assert len(ids) == 20 and len(set(ids.tolist())) == 20  # then at random, never row 0 again
    # A mostly seen cluster: only what is left, each once.
    allowed[:] = False
    allowed[[7, 55, 99]] = True
    ids = explore.coverage(clusters, allowed, clusters.centroids[0], np.array([0]), 5, np.random.default_rng(3))
    assert sorted(ids.tolist()) == [7, 55, 99]


def test_coverage_ranks_clusters_by_the_query_at_low_temperature():
    x, labels, _ = _blobs()
    clusters = explore.kmeans(x, 6)
    target = 2
    ids = explore.coverage(
        clusters,
        np.ones(len(x), bool),
        clusters.centroids[target],
        np.empty(0, np.int64),
        1,
        np.random.default_rng(0),
        temperature=0.01,
    )
    assert clusters.assign[ids[0]] == target


def test_collection_clusters_are_cached_in_a_file_and_recomputed_when_stale(tmp_path, monkeypatch):
    coll, _ = synthetic_collection(tmp_path / "c", clusters=4, per_cluster=100, dim=16)
    first = explore.collection_clusters(coll)
    path = Path(coll.root) / explore.CLUSTERS_FILE
    assert path.exists() and len(first.assign) == 400
    explore._cache.clear()
    calls = []
    real = explore.kmeans
    monkeypatch.setattr(explore, "kmeans", lambda *a, **kw: calls.append(1) or real(*a, **kw))
    again = explore.collection_clusters(coll)  # read back from the file: no k-means
    assert calls == [] and np.array_equal(again.assign, first.assign)
    explore._cache.clear()
    path.write_bytes(b"not an npz file")  # a corrupt file is recomputed, never an error
    assert np.array_equal(explore.collection_clusters(coll).assign, first.assign) and calls == [1]
    explore._cache.clear()
    np.savez(
        path,
        version=explore.CLUSTERS_VERSION,
        n_rows=300,
        model_id=coll.model_id,
        centroids=first.centroids,
        assign=first.assign[:300],
        closeness=first.closeness[:300],
    )
    explore.collection_clusters(coll)  # fitted on far fewer rows than there are now: recomputed
    assert calls == [1, 1]
    explore._cache.clear()
    np.savez(
        path,
        version=explore.CLUSTERS_VERSION,
        n_rows=399,
        model_id=coll.model_id,
        centroids=first.centroids,
        assign=first.assign[:399],
        closeness=first.closeness[:399],
    )
    extended = explore.collection_clusters(coll)  # one row more than fitted: that row is assigned
    assert calls == [1, 1] and len(extended.assign) == 400


def _cold_trainer(tmp_path, strategy, seed):
    """A prompt that points away from the target cluster: its best images are all negatives."""
    coll, centres = synthetic_collection(
        tmp_path / f"c{strategy}{seed}", clusters=10, per_cluster=300, dim=32, spread=0.8, seed=seed
    )
    target, away = 3, 0
    q = centres[away] - centres[target]
    q = (q / np.linalg.norm(q)).astype(np.float32)
    path = classifier_file.save(Path(coll.root) / "q.npy", q, 0.0, model_id=coll.model_id, meta={})
    trainer = Trainer.create(coll, "t", weights_file=path, settings=Settings(strategy=strategy, k=5, target="3"))
    labels = coll.store.labels_by_id()
    return trainer, lambda hits: {h.id: 1.0 if labels[h.id] == "3" else -1.0 for h in hits}


@pytest.mark.parametrize("seed", [0, 1])
def test_auto_finds_a_positive_in_a_cold_start_where_boundary_does_not(tmp_path, seed):
    found = {}
    for strategy in ("boundary", "auto"):
        trainer, label = _cold_trainer(tmp_path, strategy, seed)
        positives = []
        for _ in range(6):
            scores = label(trainer.next_batch())
            positives.append(sum(s > 0 for s in scores.values()))
            trainer.submit(scores)
        found[strategy] = (positives, trainer.evaluate().ap)
    assert sum(found["boundary"][0]) == 0, found
    assert sum(found["auto"][0]) >= 3 and found["auto"][1] > 0.9, found


def test_auto_explores_while_cold_and_exploits_once_positives_come_back():
    x, labels, _ = _blobs(n_clusters=6, per=50)
    index = FakeIndex(x)
    clusters = explore.kmeans(x, 6)
    allowed = np.ones(len(x), bool)
    w = 5.0 * clusters.centroids[0]
    b = -3.0  # a fitted classifier (not a unit start query)
    k = 10
    ctx = dict(clusters=clusters, explore_cold=0.7, top_share=0.3)
    rng = np.random.default_rng(0)

    # Labels so far, all negative: explore (7 of 10 from coverage, spread over the clusters).
    neg = np.flatnonzero(clusters.assign == 0)[:10]
    cold = Context(labeled_ids=neg, labeled_scores=-np.ones(10, np.float32), batch_positives=(0,), **ctx)
    assert cold.wants_exploring()
    ids = select("auto", index, w, b, k, allowed, rng, context=cold)
    assert len(set(clusters.assign[ids].tolist())) >= 6

    # The last batch held positives: exploit, the query's top 3 and then its boundary.
    warm = Context(
        labeled_ids=neg, labeled_scores=np.r_[1.0, -np.ones(9)].astype(np.float32), batch_positives=(0, 1), **ctx
    )
    assert not warm.wants_exploring()
    ids = select("auto", index, w, b, k, allowed, rng, context=warm, near_copy=1.0)
    top = select("top", index, w, b, 3, allowed, rng, near_copy=1.0)
    rest = allowed.copy()
    rest[top] = False
    edge = select("boundary", index, w, b, 7, rest, rng, near_copy=1.0)
    assert ids.tolist() == top.tolist() + edge.tolist()

    # Positives exist but the latest batch came back all negative: explore again.
    relapse = Context(
        labeled_ids=neg, labeled_scores=np.r_[1.0, -np.ones(9)].astype(np.float32), batch_positives=(1, 0), **ctx
    )
    assert relapse.wants_exploring()
    ids = select("auto", index, w, b, k, allowed, rng, context=relapse)
    assert len(set(clusters.assign[ids].tolist())) >= 6


def test_auto_without_clusters_still_returns_a_full_batch():
    x, _, _ = _blobs()
    index = FakeIndex(x)
    allowed = np.zeros(len(x), bool)
    allowed[:40] = True
    ids = select("auto", index, x[0], 0.0, 10, allowed, np.random.default_rng(0))
    assert len(set(ids.tolist())) == 10 and allowed[ids].all()


def test_clusters_extend_while_a_collection_grows_and_refit_past_the_growth_limit(tmp_path):
    """A background indexer adds rows between rounds: new rows join the nearest centroid
    instead of k-means running again every round; a quarter more rows refits."""
    from types import SimpleNamespace

    from localq.loop import explore

    rng = np.random.default_rng(0)
    x = rng.normal(size=(1000, 16)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)

    class Index:
        def __init__(self, n):
            self.ntotal = n

        def matrix(self):
            return x[: self.ntotal]

    coll = SimpleNamespace(root=tmp_path, model_id="m", index=Index(600))
    first = explore.collection_clusters(coll)
    assert first.fitted_rows == 600 and len(first.assign) == 600

    coll.index = Index(700)  # +17%: extended, same centroids
    grown = explore.collection_clusters(coll)
    assert grown.fitted_rows == 600 and len(grown.assign) == 700
    np.testing.assert_array_equal(grown.centroids, first.centroids)
    np.testing.assert_array_equal(grown.assign[:600], first.assign)
    np.testing.assert_array_equal(grown.assign[600:], (x[600:700] @ first.centroids.T).argmax(axis=1))

    coll.index = Index(800)  # +33% over the fit: k-means again
    refit = explore.collection_clusters(coll)
    assert refit.fitted_rows == 800 and len(refit.assign) == 800

    explore._cache.clear()  # a new process: the file on disk is extended, not refitted
    coll.index = Index(900)
    again = explore.collection_clusters(coll)
    assert again.fitted_rows == 800 and len(again.assign) == 900
    np.testing.assert_array_equal(again.centroids, refit.centroids)


def test_clusters_fitted_on_a_pool_ignore_every_row_outside_it(tmp_path):
    # A benchmark's held-out (and, tuning, dev) vectors must not shape what auto explores.
    a, _ = synthetic_collection(tmp_path / "a", clusters=4, per_cluster=150, dim=16, seed=0)
    pool = np.arange(a.rows()) < 400
    noise = np.random.default_rng(9).standard_normal((int((~pool).sum()), 16)).astype(np.float32)
    b = with_rows_replaced(a, tmp_path / "b", ~pool, noise / np.linalg.norm(noise, axis=1, keepdims=True))
    explore._cache.clear()
    fitted_a = explore.collection_clusters(a, pool)
    fitted_b = explore.collection_clusters(b, pool)
    np.testing.assert_array_equal(fitted_a.centroids, fitted_b.centroids)
    np.testing.assert_array_equal(fitted_a.assign[pool], fitted_b.assign[pool])
    assert len(fitted_b.assign) == b.rows()  # every row still has a cluster
    # Fitted on every row, the scrambled ones do move the centroids: the mask is what protects.
    assert not np.array_equal(explore.collection_clusters(a).centroids, explore.collection_clusters(b).centroids)


def test_a_trainer_with_a_pool_split_explores_clusters_of_its_pool(tmp_path):
    from conftest import clusters as split_collection

    coll = split_collection(tmp_path / "c", train=60, val=60)
    pool = coll.split_mask("train")
    assert 0 < pool.sum() < coll.rows()
    trainer = Trainer.create(coll, "t", images=[int(np.flatnonzero(pool)[0])], settings=Settings(pool_split="train"))
    explore._cache.clear()
    used = trainer._explore_clusters()
    np.testing.assert_array_equal(used.centroids, explore.collection_clusters(coll, pool).centroids)
    assert not np.array_equal(used.centroids, explore.collection_clusters(coll).centroids)
