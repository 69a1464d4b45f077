"""The ``auto`` defaults chosen on the dev splits (docs/benchmark.md), as a user gets them."""

from __future__ import annotations

import numpy as np

from localq import explore, sampling
from localq.sampling import Context, select
from localq.trainer import Settings
from test_explore import _blobs
from test_sampling import FakeIndex


def test_a_trainers_default_settings_carry_the_sampling_defaults():
    s = Settings()
    assert s.strategy == "auto"
    assert (s.explore_first, s.explore_cold, s.top_share, s.explore_temperature) == (
        sampling.AUTO_EXPLORE_FIRST, sampling.AUTO_EXPLORE_COLD, sampling.AUTO_TOP_SHARE, sampling.AUTO_TEMPERATURE)


def test_by_default_auto_exploits_at_the_boundary_once_positives_come_back():
    """top_share 0 was chosen on dev: an exploiting batch is boundary's batch."""
    x, _, _ = _blobs(n_clusters=6, per=50)
    index = FakeIndex(x)
    clusters = explore.kmeans(x, 6)
    allowed = np.ones(len(x), bool)
    w, b = 5.0 * clusters.centroids[0], -3.0  # a fitted classifier
    labeled = np.flatnonzero(clusters.assign == 0)[:10]
    allowed[labeled] = False
    warm = Context(labeled_ids=labeled, labeled_scores=np.r_[1.0, -np.ones(9)].astype(np.float32),
                   batch_positives=(1,), clusters=clusters)
    assert not warm.cold()
    ids = select("auto", index, w, b, 10, allowed, np.random.default_rng(0), context=warm)
    assert ids.tolist() == select("boundary", index, w, b, 10, allowed, np.random.default_rng(0)).tolist()


def test_by_default_the_first_batch_still_explores_half():
    """A mismatched prompt needs the first batch's exploration (0.2 and 0.3 were worse on dev)."""
    x, _, _ = _blobs(n_clusters=6, per=50)
    index = FakeIndex(x)
    clusters = explore.kmeans(x, 6)
    w = clusters.centroids[0]  # an unfitted prompt: unit norm, zero bias
    ids = select("auto", index, w, 0.0, 10, np.ones(len(x), bool), np.random.default_rng(0),
                 warmup_pool=20, context=Context(clusters=clusters))
    assert len(set(ids.tolist())) == 10
    # The prompt's own half comes from its best 20 (all in its cluster); the explore half
    # reaches the clusters it does not.
    assert len(set(clusters.assign[ids].tolist())) >= 5
