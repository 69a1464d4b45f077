"""The ``auto`` defaults chosen on the dev splits (docs/benchmark.md), as a user gets them."""

from __future__ import annotations

import numpy as np
from test_explore import _blobs
from test_sampling import FakeIndex

from localq.loop import explore, sampling
from localq.loop.sampling import Context, select
from localq.loop.trainer_types import Settings


def test_a_trainers_default_settings_carry_the_sampling_defaults():
    s = Settings()
    assert s.strategy == "auto"
    assert (s.explore_first, s.explore_cold, s.top_share, s.explore_temperature) == (
        sampling.AUTO_EXPLORE_FIRST,
        sampling.AUTO_EXPLORE_COLD,
        sampling.AUTO_TOP_SHARE,
        sampling.AUTO_TEMPERATURE,
    )


def test_by_default_auto_refines_half_from_the_top_half_at_the_boundary():
    x, _, _ = _blobs(n_clusters=6, per=50)
    index = FakeIndex(x)
    clusters = explore.kmeans(x, 6)
    allowed = np.ones(len(x), bool)
    w, b = 5.0 * clusters.centroids[0], -3.0  # a fitted classifier
    labeled = np.flatnonzero(clusters.assign == 0)[:10]
    allowed[labeled] = False
    warm = Context(
        labeled_ids=labeled,
        labeled_scores=np.r_[1.0, -np.ones(9)].astype(np.float32),
        batch_positives=(1,),
        clusters=clusters,
    )
    assert warm.phase() == "refining"
    ids = select("auto", index, w, b, 10, allowed, np.random.default_rng(0), context=warm, near_copy=1.0)
    top = select("top", index, w, b, 5, allowed, np.random.default_rng(0), near_copy=1.0)
    rest = allowed.copy()
    rest[top] = False
    edge = select("boundary", index, w, b, 5, rest, np.random.default_rng(0), near_copy=1.0)
    assert ids.tolist() == top.tolist() + edge.tolist()


def test_by_default_the_first_batch_is_the_prompts_best():
    """Exploration waits until a batch comes back without a positive."""
    x, _, _ = _blobs(n_clusters=6, per=50)
    index = FakeIndex(x)
    clusters = explore.kmeans(x, 6)
    w = clusters.centroids[0]  # an unfitted prompt: unit norm, zero bias
    assert Context(clusters=clusters).phase() == "start"
    ids = select(
        "auto",
        index,
        w,
        0.0,
        10,
        np.ones(len(x), bool),
        np.random.default_rng(0),
        context=Context(clusters=clusters),
        near_copy=1.0,
    )
    assert (
        ids.tolist()
        == select("top", index, w, 0.0, 10, np.ones(len(x), bool), np.random.default_rng(0), near_copy=1.0).tolist()
    )


def test_a_batch_without_a_positive_starts_exploring_and_the_next_positive_ends_it():
    labeled = np.arange(10)
    cold = Context(labeled_ids=labeled, labeled_scores=-np.ones(10, np.float32), batch_positives=(0,))
    assert cold.phase() == "exploring"
    found = Context(
        labeled_ids=np.arange(20), labeled_scores=np.r_[-np.ones(19), 1.0].astype(np.float32), batch_positives=(0, 1)
    )
    assert found.phase() == "refining"
    relapse = Context(
        labeled_ids=np.arange(30),
        labeled_scores=np.r_[-np.ones(19), 1.0, -np.ones(10)].astype(np.float32),
        batch_positives=(0, 1, 0),
    )
    assert relapse.phase() == "exploring"
