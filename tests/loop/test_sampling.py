import numpy as np
import pytest

from localq.loop.sampling import DEFAULT_STRATEGY, STRATEGIES, select


class FakeIndex:
    """numpy stand-in for localq.search.exact.VectorIndex's search contract."""

    def __init__(self, vectors):
        self.vectors = np.ascontiguousarray(vectors, dtype=np.float32)

    @property
    def ntotal(self):
        return self.vectors.shape[0]

    def rows(self, ids):
        return self.vectors[np.asarray(ids, dtype=np.int64)]

    def scores(self, w, b=0.0, ids=None):
        rows = self.vectors if ids is None else self.rows(ids)
        return rows @ np.asarray(w, dtype=np.float32) + np.float32(b)

    def search(self, query, k, allowed):
        scores = self.vectors @ np.asarray(query, dtype=np.float32)
        if allowed is not None:
            scores = np.where(allowed, scores, -np.inf)
        n = self.ntotal if allowed is None else int(allowed.sum())
        order = np.argsort(-scores, kind="stable")[: min(k, n)]
        return order.astype(np.int64), scores[order].astype(np.float32)

    def candidates(self, query, n, allowed):
        return self.search(query, n, allowed)


def unit_rows(a):
    return (a / np.linalg.norm(a, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture
def index():
    rng = np.random.default_rng(0)
    return FakeIndex(unit_rows(rng.normal(size=(300, 16))))


def test_default_is_a_known_strategy():
    assert DEFAULT_STRATEGY in STRATEGIES


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("n_allowed", [0, 3, 25, 300])
def test_returns_min_k_allowed_unique_ids(index, strategy, n_allowed):
    rng = np.random.default_rng(1)
    allowed = np.zeros(index.ntotal, dtype=bool)
    allowed[rng.choice(index.ntotal, n_allowed, replace=False)] = True
    w = rng.normal(size=16).astype(np.float32)
    ids = select(strategy, index, w, -0.1, 10, allowed, np.random.default_rng(2))
    assert ids.dtype == np.int64
    assert len(ids) == min(10, n_allowed)
    assert len(set(ids.tolist())) == len(ids)
    assert allowed[ids].all()


def test_top_is_the_best_allowed(index):
    w = index.vectors[5] * 3.0
    allowed = np.ones(index.ntotal, dtype=bool)
    allowed[5] = False
    ids = select("top", index, w, 0.0, 4, allowed, np.random.default_rng(0))
    scores = index.vectors @ w
    scores[5] = -np.inf
    assert set(ids.tolist()) == set(np.argsort(-scores)[:4].tolist())


def test_boundary_picks_scores_nearest_the_threshold():
    # 1-d positions along w: the boundary w.x + b = 0 sits at 0.5.
    x = np.linspace(0, 1, 101, dtype=np.float32)
    vecs = unit_rows(np.stack([x, np.full_like(x, 2.0)], axis=1))
    idx = FakeIndex(vecs)
    w = np.array([1.0, 0.0], np.float32)
    b = -float(vecs[50] @ w)
    ids = select("boundary", idx, w, b, 3, np.ones(101, bool), np.random.default_rng(0))
    assert set(ids.tolist()) == {49, 50, 51}


class EstimatingIndex(FakeIndex):
    """An approximate index: ``candidates`` ranks and scores by noisy estimates (as IVF's
    codes do), and every float row read through ``rows`` is counted."""

    def __init__(self, vectors, noise, seed=0):
        super().__init__(vectors)
        self.noise = np.random.default_rng(seed).normal(scale=noise, size=len(vectors)).astype(np.float32)
        self.rows_read = 0

    def rows(self, ids):
        ids = np.asarray(ids, dtype=np.int64)
        self.rows_read += ids.size
        return self.vectors[ids]

    def candidates(self, query, n, allowed):
        scores = self.vectors @ np.asarray(query, dtype=np.float32) + self.noise
        scores = np.where(allowed, scores, -np.inf)
        order = np.argsort(-scores, kind="stable")[: min(n, int(allowed.sum()))]
        return order.astype(np.int64), scores[order]


def test_boundary_settles_estimated_candidates_exactly_reading_only_a_shortlist():
    from localq.loop.sampling import SHORTLIST_PER_LABEL

    # Scores spread evenly along w; the estimates are off by up to ~3 neighbours' gap.
    x = np.linspace(0, 1, 2001, dtype=np.float32)
    vecs = unit_rows(np.stack([x, np.full_like(x, 2.0)], axis=1))
    idx = EstimatingIndex(vecs, noise=5e-4)
    w = np.array([10.0, 0.0], np.float32)
    b = -float(vecs[1000] @ w)
    ids = select(
        "boundary", idx, w, b, 5, np.ones(len(x), bool), np.random.default_rng(0), candidates=2001, near_copy=1.0
    )  # two-dimensional rows: every pair is a near-copy
    exact = np.abs(vecs @ w + b)
    assert set(ids.tolist()) == set(np.argsort(exact)[:5].tolist())  # the exact nearest, not the estimates'
    assert idx.rows_read == SHORTLIST_PER_LABEL * 5  # of 2,001 candidates


def test_every_strategy_skips_near_copies_within_the_batch():
    rng = np.random.default_rng(0)
    base = unit_rows(rng.normal(size=(40, 32)))
    w = base[0].copy()
    # The 10 best-scoring rows are near-copies of one vector (a burst of one scene).
    dups = unit_rows(base[0] + 0.01 * rng.normal(size=(10, 32)))
    idx = FakeIndex(np.concatenate([dups, base[1:]]))
    allowed = np.ones(idx.ntotal, dtype=bool)
    # With the check off, top takes the burst whole; with it on, one shot of it.
    assert (select("top", idx, w, 0.0, 5, allowed, rng, near_copy=1.0) < 10).all()
    assert (select("top", idx, w, 0.0, 5, allowed, rng) < 10).sum() == 1
    # A fitted classifier (not a unit start query) that calls everything positive.
    for strategy in ("auto", "boundary", "diverse", "random"):
        ids = select(strategy, idx, 20 * w, 5.0, 5, allowed, np.random.default_rng(1))
        assert len(ids) == 5 and (ids < 10).sum() <= 1, strategy


def test_every_strategy_skips_near_copies_of_labeled_images():
    from localq.loop.sampling import Context

    rng = np.random.default_rng(0)
    base = unit_rows(rng.normal(size=(60, 32)))
    copies = unit_rows(base[:20] + 0.01 * rng.normal(size=(20, 32)))  # one near-copy of each of rows 0-19
    idx = FakeIndex(np.concatenate([base, copies]))
    labeled = np.arange(20)
    allowed = np.ones(idx.ntotal, dtype=bool)
    allowed[labeled] = False
    w = unit_rows(base[:20].sum(axis=0, keepdims=True))[0]  # a query that ranks the labeled scenes first
    ctx = Context(
        labeled_ids=labeled,
        labeled_scores=np.r_[np.ones(10), -np.ones(10)].astype(np.float32),
        batch_positives=(10, 0, 1),
    )
    for strategy in ("auto", "top", "boundary", "diverse", "random"):
        ids = select(strategy, idx, 3 * w, -1.0, 10, allowed, np.random.default_rng(2), context=ctx)
        assert len(ids) == 10 and not (ids >= 60).any(), (strategy, ids)
        off = select(strategy, idx, 3 * w, -1.0, 10, allowed, np.random.default_rng(2), context=ctx, near_copy=1.0)
        if strategy == "top":
            assert (off >= 60).sum() >= 5  # the copies rank first without the check


def test_near_copies_fill_the_batch_when_nothing_else_is_left():
    rng = np.random.default_rng(0)
    burst = unit_rows(np.ones((1, 16)) + 0.001 * rng.normal(size=(12, 16)))
    idx = FakeIndex(burst)
    ids = select("top", idx, burst[0], 0.0, 5, np.ones(12, bool), rng)
    assert len(set(ids.tolist())) == 5


def test_random_is_reproducible_with_a_seed(index):
    allowed = np.ones(index.ntotal, dtype=bool)
    w = np.ones(16, np.float32)
    a = select("random", index, w, 0.0, 10, allowed, np.random.default_rng(7))
    b = select("random", index, w, 0.0, 10, allowed, np.random.default_rng(7))
    assert np.array_equal(a, b)


def test_unknown_strategy_and_bad_mask_are_errors(index):
    allowed = np.ones(index.ntotal, dtype=bool)
    with pytest.raises(ValueError):
        select("best", index, np.ones(16), 0.0, 3, allowed, np.random.default_rng(0))
    with pytest.raises(ValueError):
        select("top", index, np.ones(16), 0.0, 3, allowed[:-1], np.random.default_rng(0))


def test_an_unfitted_query_draws_its_first_batch_among_its_best_images(index):
    w = index.vectors[0].copy()  # a unit start query with zero bias: never fitted
    allowed = np.ones(index.ntotal, dtype=bool)
    best = set(np.argsort(-(index.vectors @ w))[:40].tolist())
    for strategy in ("boundary", "diverse"):
        ids = select(strategy, index, w, 0.0, 10, allowed, np.random.default_rng(3), warmup_pool=40)
        assert set(ids.tolist()) <= best


def test_diverse_prefers_likely_positives():
    rng = np.random.default_rng(5)
    vecs = unit_rows(rng.normal(size=(400, 8)))
    idx = FakeIndex(vecs)
    w = 10.0 * unit_rows(rng.normal(size=(1, 8)))[0]
    b = -5.0  # roughly the top tenth of the vectors score above the threshold
    allowed = np.ones(idx.ntotal, dtype=bool)
    picked = np.concatenate([select("diverse", idx, w, b, 10, allowed, np.random.default_rng(s)) for s in range(20)])
    p = 1 / (1 + np.exp(-(vecs @ w + b)))
    assert p[picked].mean() > 2 * p.mean()
