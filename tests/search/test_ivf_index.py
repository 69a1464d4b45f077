"""IvfIndex: recall against exact brute force under seen sets, the VectorIndex search
contract, and the fallback chain (widened nprobe, then exact) on real FAISS.

Synthetic data as in docs/faiss-notes.md: Gaussian clusters on the unit sphere; "random" seen
sets and "near" ones (the query's own nearest rows, what a labeling loop produces)."""

import numpy as np
import pytest

from localq.search.ivf import IvfIndex, default_nlist

N, DIM, CLUSTERS, K = 30_000, 64, 100, 10
NOISE = 0.6 / np.sqrt(DIM)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    rng = np.random.default_rng(12)
    centers = rng.standard_normal((CLUSTERS, DIM)).astype(np.float32)
    centers /= np.linalg.norm(centers, axis=1, keepdims=True)
    x = centers[rng.integers(0, CLUSTERS, N)] + NOISE * rng.standard_normal((N, DIM)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    path = tmp_path_factory.mktemp("ivf") / "vectors.npy"
    np.save(path, x.astype(np.float32))
    matrix = np.load(path, mmap_mode="r")  # built from a memmap, as for a real collection
    # exact_below_rows=0: every search goes through the IVF, even with few rows allowed.
    index = IvfIndex.build(matrix, exact_below_rows=0)
    # Queries like a classifier's weights: near a cluster, not a stored row.
    picks = centers[rng.integers(0, CLUSTERS, 20)]
    queries = picks + NOISE * rng.standard_normal(picks.shape).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    return index, np.asarray(matrix), queries.astype(np.float32)


def brute_force(x, q, k, allowed):
    ids = np.arange(len(x)) if allowed is None else np.flatnonzero(allowed)
    scores = x[ids] @ q
    order = np.argsort(-scores, kind="stable")[:k]
    return ids[order], scores[order]


def seen_mask(kind, fraction, x, q, rng):
    n_seen = int(round(fraction * len(x)))
    allowed = np.ones(len(x), dtype=bool)
    if kind == "random":
        allowed[rng.choice(len(x), n_seen, replace=False)] = False
    else:
        allowed[np.argsort(-(x @ q))[:n_seen]] = False
    return allowed


def assert_contract(ids, scores, x, q, k, allowed, exact=True):
    n_allowed = len(x) if allowed is None else int(allowed.sum())
    assert ids.dtype == np.int64 and scores.dtype == np.float32
    assert len(ids) == min(k, n_allowed)
    assert len(set(ids.tolist())) == len(ids)
    assert (ids >= 0).all() and (ids < len(x)).all()
    if allowed is not None:
        assert allowed[ids].all(), "a disallowed id came back"
    assert np.all(np.diff(scores) <= 0), "results must be best first"
    if exact:
        np.testing.assert_allclose(scores, x[ids] @ q, rtol=0, atol=1e-5)  # exact, re-ranked


@pytest.mark.slow
def test_nlist_follows_four_sqrt_n(data):
    index, _, _ = data
    assert index.nlist == default_nlist(N) == round(4 * np.sqrt(N))
    assert default_nlist(100) == 2  # never more lists than k-means can train


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["random", "near"])
@pytest.mark.parametrize("fraction", [0.0, 0.01, 0.05, 0.5, 0.99])
def test_recall_at_10_against_exact(data, kind, fraction):
    index, x, queries = data
    rng = np.random.default_rng(int(fraction * 100) + (kind == "near"))
    recalls = []
    for q in queries:
        allowed = seen_mask(kind, fraction, x, q, rng)
        ids, scores = index.search(q, K, allowed)
        assert_contract(ids, scores, x, q, K, allowed)
        want, _ = brute_force(x, q, K, allowed)
        recalls.append(len(set(ids.tolist()) & set(want.tolist())) / K)
    assert np.mean(recalls) >= 0.95, (np.mean(recalls), recalls)


def test_unfiltered_search_matches_the_contract(data):
    index, x, queries = data
    ids, scores = index.search(queries[0], 50)
    assert_contract(ids, scores, x, queries[0], 50, None)


def test_k_above_the_allowed_count_returns_every_allowed_row(data):
    index, x, queries = data
    allowed = np.zeros(N, dtype=bool)
    allowed[np.random.default_rng(3).choice(N, 7, replace=False)] = True
    ids, scores = index.search(queries[0], 50, allowed)
    assert_contract(ids, scores, x, queries[0], 50, allowed)
    assert set(ids.tolist()) == set(np.flatnonzero(allowed).tolist())


def test_a_single_allowed_row(data):
    index, x, queries = data
    allowed = np.zeros(N, dtype=bool)
    allowed[12_345] = True
    ids, scores = index.search(queries[1], K, allowed)
    assert ids.tolist() == [12_345]
    np.testing.assert_allclose(scores, [x[12_345] @ queries[1]], atol=1e-5)


def test_nothing_allowed_or_k_zero_returns_nothing(data):
    index, _, queries = data
    for ids, scores in (index.search(queries[0], K, np.zeros(N, dtype=bool)), index.search(queries[0], 0)):
        assert ids.dtype == np.int64 and scores.dtype == np.float32 and len(ids) == len(scores) == 0


class RecordingIndex:
    """Wraps the FAISS index, records each search's nprobe; can pretend to find nothing."""

    def __init__(self, inner, find_nothing=False):
        self.inner, self.find_nothing, self.nprobes = inner, find_nothing, []
        self.ntotal, self.d, self.nlist = inner.ntotal, inner.d, inner.nlist
        self.quantizer, self.invlists = inner.quantizer, inner.invlists

    def search(self, q, k, params):
        self.nprobes.append(params.nprobe)
        scores, ids = self.inner.search(q, k, params=params)
        if self.find_nothing:
            ids[:] = -1
        return scores, ids


def test_probed_lists_all_seen_widen_nprobe_and_return_full_correct_results(data):
    # Only the rows farthest from the query are allowed: every list near it is seen,
    # so FAISS answers -1 rows (docs/faiss-notes.md, pitfall 6) until nprobe reaches them.
    index, x, queries = data
    q = queries[2]
    allowed = np.zeros(N, dtype=bool)
    allowed[np.argsort(x @ q)[:3000]] = True  # over N/16: widening, not the exact read
    recording = RecordingIndex(index._index)
    narrow = IvfIndex(recording, index.matrix, nprobe=2, exact_below_rows=0)
    ids, scores = narrow.search(q, K, allowed)
    assert_contract(ids, scores, x, q, K, allowed)
    assert recording.nprobes[0] == 2 and len(recording.nprobes) > 1, recording.nprobes
    assert recording.nprobes == sorted(recording.nprobes) and recording.nprobes[-1] <= index.nlist
    want, want_scores = brute_force(x, q, K, allowed)
    assert len(set(ids.tolist()) & set(want.tolist())) >= 0.9 * K
    np.testing.assert_allclose(scores[0], want_scores[0], atol=1e-5)


def test_a_short_first_probe_over_few_allowed_rows_scans_every_list_once(data):
    index, x, queries = data
    q = queries[2]
    allowed = np.zeros(N, dtype=bool)
    allowed[np.argsort(x @ q)[:1000]] = True  # under N/16, all far from q
    recording = RecordingIndex(index._index)
    narrow = IvfIndex(recording, _Unreadable(x.shape), nprobe=2, exact_below_rows=0)
    with pytest.raises(_Read):  # no exact read of the allowed rows: only the re-ranking reads
        narrow.search(q, K, allowed)
    assert recording.nprobes == [2, index.nlist]
    recording.nprobes.clear()
    narrow = IvfIndex(recording, index.matrix, nprobe=2, exact_below_rows=0)
    ids, scores = narrow.search(q, K, allowed)
    assert recording.nprobes == [2, index.nlist]
    want, want_scores = brute_force(x, q, K, allowed)
    assert ids.tolist() == want.tolist()
    np.testing.assert_allclose(scores, want_scores, atol=1e-5)


def test_when_even_every_list_comes_back_short_exact_search_answers(data):
    index, x, queries = data
    q = queries[3]
    allowed = seen_mask("near", 0.5, x, q, np.random.default_rng(0))
    recording = RecordingIndex(index._index, find_nothing=True)
    broken = IvfIndex(recording, index.matrix, exact_below_rows=0)
    ids, scores = broken.search(q, K, allowed)
    assert recording.nprobes[-1] == index.nlist  # widened all the way first
    want, want_scores = brute_force(x, q, K, allowed)
    assert ids.tolist() == want.tolist()
    np.testing.assert_allclose(scores, want_scores, atol=1e-5)


def test_small_allowed_sets_are_answered_exactly_by_default(data):
    index, x, queries = data
    recording = RecordingIndex(index._index)
    default = IvfIndex(recording, index.matrix)  # exact_below_rows left at its default
    q = queries[4]
    allowed = seen_mask("near", 0.99, x, q, np.random.default_rng(1))
    ids, scores = default.search(q, K, allowed)
    assert recording.nprobes == []
    want, want_scores = brute_force(x, q, K, allowed)
    assert ids.tolist() == want.tolist()
    np.testing.assert_allclose(scores, want_scores, atol=1e-5)


def test_save_and_load_round_trip(data, tmp_path):
    index, x, queries = data
    path = tmp_path / "index.ivf"
    index.save(path)
    loaded = IvfIndex.load(path, index.matrix, exact_below_rows=0)
    assert loaded.ntotal == N and loaded.nlist == index.nlist
    allowed = seen_mask("random", 0.5, x, queries[5], np.random.default_rng(2))
    for got, want in zip(loaded.search(queries[5], K, allowed), index.search(queries[5], K, allowed)):
        np.testing.assert_array_equal(got, want)
    with pytest.raises(ValueError):
        IvfIndex.load(path, index.matrix[:100])  # the rows it covers must all be there


def test_bad_masks_and_queries_are_refused(data):
    index, _, queries = data
    with pytest.raises(TypeError):
        index.search(queries[0], K, np.ones(N, dtype=np.uint8))
    with pytest.raises(ValueError):
        index.search(queries[0], K, np.ones(N - 1, dtype=bool))
    with pytest.raises(ValueError):
        index.search(queries[0][:10], K)
    with pytest.raises(ValueError):
        index.search(np.full(DIM, np.nan, np.float32), K)


def test_extend_adds_the_new_rows_to_the_trained_lists(data):
    import faiss

    index, x, queries = data
    q = queries[6]
    # 300 new rows closer to q than any old one (q plus a little noise).
    new = q + 0.05 * np.random.default_rng(4).standard_normal((300, DIM)).astype(np.float32)
    grown = np.vstack([x, new / np.linalg.norm(new, axis=1, keepdims=True)]).astype(np.float32)
    copy = IvfIndex(faiss.clone_index(index._index), x, exact_below_rows=0)
    copy.extend(grown)
    assert copy.ntotal == len(grown)
    ids, scores = copy.search(q, K)
    assert_contract(ids, scores, grown, q, K, None)
    assert (ids >= N).all()
    with pytest.raises(ValueError):
        copy.extend(x[:100])  # fewer rows than already indexed


@pytest.mark.parametrize("nlist, nprobe", [(64, 32), (4000, 40), (12649, 126)])
def test_the_first_probe_is_about_one_percent_of_the_lists_and_at_least_32(nlist, nprobe):
    import faiss

    quantizer = faiss.IndexFlatIP(8)
    ivf = faiss.IndexIVFScalarQuantizer(quantizer, 8, nlist, faiss.ScalarQuantizer.QT_8bit, faiss.METRIC_INNER_PRODUCT)
    assert IvfIndex(ivf, np.zeros((0, 8), np.float32)).nprobe == nprobe


@pytest.mark.parametrize("kind", ["random", "near"])
@pytest.mark.parametrize("fraction", [0.0, 0.5, 0.99])
def test_candidates_are_a_pool_ranked_by_the_codes_without_reading_float_rows(data, kind, fraction):
    """Boundary sampling's pool: thousands of rows ranked by the SQ8 estimates, with no
    float row read (the rows here are an array that refuses to be read)."""
    index, x, queries = data
    rng = np.random.default_rng(3)
    q = queries[1]
    allowed = seen_mask(kind, fraction, x, q, rng)
    n = 2000
    unreadable = IvfIndex(index._index, _Unreadable(x.shape), exact_below_rows=0)
    try:
        ids, estimates = unreadable.candidates(q, n, allowed)
    except _Read:
        # Only the documented last resort reads rows: few rows allowed, first probe short.
        assert allowed.sum() <= len(x) / 16
        ids, estimates = index.candidates(q, n, allowed)
    assert_contract(ids, estimates, x, q, n, allowed, exact=False)
    assert np.abs(estimates - x[ids] @ q).max() < 0.01  # SQ8 estimates of unit vectors
    exact_ids, _ = brute_force(x, q, n, allowed)
    assert len(set(ids.tolist()) & set(exact_ids.tolist())) / len(exact_ids) >= 0.85  # misses lie at the edge
    assert set(exact_ids[:K].tolist()) <= set(ids.tolist())


class _Read(Exception):
    pass


class _Unreadable(np.ndarray):
    """Shaped like the float rows; reading any of them raises _Read."""

    def __new__(cls, shape):
        return np.zeros((1, shape[1]), np.float32).view(cls)._with_rows(shape[0])

    def _with_rows(self, n):
        self.rows = n
        return self

    def __len__(self):
        return self.rows

    def __getitem__(self, item):
        raise _Read
