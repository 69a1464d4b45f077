"""VectorIndex and vectors.npy: filtered exact top-k against a NumPy brute-force answer, the file."""

from pathlib import Path

import numpy as np
import pytest

from localq.errors import EncoderMismatch, LocalqError, VectorsDamaged
from localq.search.exact import VectorIndex
from localq.storage.vector_file import HEADER_BYTES, VectorFile, header

DIM = 32


def unit_rows(rng, n, dim=DIM):
    x = rng.standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def brute_force(x, q, k, allowed):
    scores = x @ q
    ids = np.arange(len(x)) if allowed is None else np.flatnonzero(allowed)
    order = np.argsort(-scores[ids], kind="stable")[:k]
    return ids[order], scores[ids][order]


def assert_same_top_k(got_ids, got_scores, want_ids, want_scores, x, q):
    assert got_ids.dtype == np.int64 and got_scores.dtype == np.float32
    assert len(got_ids) == len(want_ids)
    # Scores agree position by position; ids may swap only between near-equal scores.
    np.testing.assert_allclose(got_scores, want_scores, rtol=0, atol=1e-5)
    np.testing.assert_allclose(x[got_ids] @ q, got_scores, rtol=0, atol=1e-5)
    assert np.all(np.diff(got_scores) <= 1e-6), "results must be best first"
    differ = got_ids != want_ids
    assert np.all(np.abs(got_scores[differ] - want_scores[differ]) < 1e-5)
    assert len(set(got_ids.tolist())) == len(got_ids)


@pytest.fixture
def data():
    rng = np.random.default_rng(7)
    x = unit_rows(rng, 3000)
    return rng, x


@pytest.fixture
def index(tmp_path, data):
    _, x = data
    ix = VectorIndex.open(tmp_path / "vectors.npy", DIM)
    ix.add(x[:1000])
    ix.add(x[1000:])
    return ix


def masks(rng, n, q, x):
    """Seen sets as a labeling loop makes them: random, and the query's own nearest."""
    nearest = np.argsort(-(x @ q))
    for fraction in (0.0, 0.01, 0.5, 0.9, 0.99, 0.999):
        n_seen = int(round(fraction * n))
        random_allowed = np.ones(n, bool)
        random_allowed[rng.choice(n, n_seen, replace=False)] = False
        near_allowed = np.ones(n, bool)
        near_allowed[nearest[:n_seen]] = False
        yield f"random-{fraction}", random_allowed
        yield f"near-{fraction}", near_allowed


@pytest.mark.parametrize("k", [1, 10, 50])
def test_filtered_search_equals_brute_force(index, data, k):
    rng, x = data
    for _ in range(3):
        q = rng.standard_normal(DIM).astype(np.float32)  # any norm: inner product
        for name, allowed in [("all", None), *masks(rng, len(x), q, x)]:
            ids, scores = index.search(q, k, allowed)
            want_ids, want_scores = brute_force(x, q, k, allowed)
            assert_same_top_k(ids, scores, want_ids, want_scores, x, q)
            if allowed is not None:
                assert allowed[ids].all(), f"{name}: returned a disallowed id"


@pytest.mark.parametrize("n_allowed", [0, 1, 3, 49, 50, 51])
def test_returns_exactly_min_k_allowed(index, data, n_allowed):
    rng, x = data
    allowed = np.zeros(len(x), bool)
    allowed[rng.choice(len(x), n_allowed, replace=False)] = True
    q = unit_rows(rng, 1)[0]
    ids, scores = index.search(q, 50, allowed)
    assert len(ids) == len(scores) == min(50, n_allowed)
    assert set(ids.tolist()) <= set(np.flatnonzero(allowed).tolist())
    assert (ids >= 0).all()


def test_k_larger_than_everything_and_k_zero(index, data):
    rng, x = data
    q = unit_rows(rng, 1)[0]
    ids, scores = index.search(q, 10_000, None)
    assert sorted(ids.tolist()) == list(range(len(x)))
    assert np.all(np.diff(scores) <= 0)
    for k in (0, -3):
        ids, scores = index.search(q, k, None)
        assert ids.shape == scores.shape == (0,)
        assert ids.dtype == np.int64 and scores.dtype == np.float32


def test_mask_mutated_in_place_between_calls(index, data):
    # A labeling loop clears bits in one persistent mask; nothing stale may survive.
    rng, x = data
    q = unit_rows(rng, 1)[0]
    allowed = np.ones(len(x), bool)
    for _ in range(5):
        ids, _ = index.search(q, 50, allowed)
        assert allowed[ids].all()
        allowed[ids] = False
    assert np.count_nonzero(allowed) == len(x) - 250
    allowed[:] = False
    allowed[[5, 17]] = True
    assert sorted(index.search(q, 50, allowed)[0].tolist()) == [5, 17]


def test_empty_index(tmp_path):
    ix = VectorIndex.open(tmp_path / "none.faiss", DIM)
    assert ix.ntotal == 0 and ix.dim == DIM
    assert ix.matrix().shape == (0, DIM)
    ids, scores = ix.search(np.ones(DIM, np.float32), 5, None)
    assert len(ids) == len(scores) == 0
    ids, scores = ix.search(np.ones(DIM, np.float32), 5, np.zeros(0, bool))
    assert len(ids) == 0


def test_rows_are_durable_as_added_and_numpy_reads_the_file(index, data, tmp_path):
    rng, x = data
    again = VectorIndex.open(tmp_path / "vectors.npy", DIM)
    assert again.ntotal == len(x)
    np.testing.assert_array_equal(again.matrix(), x)
    np.testing.assert_array_equal(np.load(tmp_path / "vectors.npy"), x)  # a plain .npy file
    q = unit_rows(rng, 1)[0]
    np.testing.assert_array_equal(again.search(q, 7, None)[0], index.search(q, 7, None)[0])
    # A view taken before another writer appended sees its own rows until it is shown more.
    index.add(x[:3])
    assert again.ntotal == len(x)
    again.show(len(x) + 3)
    np.testing.assert_array_equal(again.matrix()[-3:], x[:3])


def test_dimension_mismatch_is_refused(index, tmp_path):
    with pytest.raises(EncoderMismatch) as err:
        VectorIndex.open(tmp_path / "vectors.npy", DIM * 2)
    assert "\n" not in str(err.value)
    with pytest.raises(ValueError):
        index.add(np.zeros((2, DIM + 1), np.float32))
    with pytest.raises(ValueError):
        index.search(np.zeros(DIM + 1, np.float32), 3, None)


@pytest.mark.parametrize(
    "content", [b"not a vectors file", b"\x93NUMPY\x01\x00" + b"x" * 200, header(10, DIM), np.zeros(3).tobytes()]
)
def test_unreadable_file_is_a_localq_error(tmp_path, content):
    path = tmp_path / "broken.npy"
    path.write_bytes(content)
    with pytest.raises(LocalqError) as err:
        VectorIndex.open(path, DIM)
    assert "\n" not in str(err.value)


def test_the_header_keeps_its_size_so_the_row_count_grows_in_place(tmp_path):
    for rows in (0, 1, 10**6, 10**11):
        assert len(header(rows, 4096)) == HEADER_BYTES
        path = tmp_path / f"h{rows}.npy"
        path.write_bytes(header(rows, 3) + np.zeros((min(rows, 2), 3), np.float32).tobytes())
        if rows <= 2:
            assert np.load(path).shape == (rows, 3)


def test_a_view_past_the_rows_on_disk_is_refused(index, data, tmp_path):
    _, x = data
    with pytest.raises(VectorsDamaged, match="holds 3000 rows but the database has 3001"):
        VectorIndex.open(tmp_path / "vectors.npy", DIM, len(x) + 1)


def test_bad_masks_and_vectors_are_rejected(index, data):
    rng, x = data
    q = unit_rows(rng, 1)[0]
    with pytest.raises(ValueError):
        index.search(q, 3, np.ones(len(x) - 1, bool))
    with pytest.raises(TypeError):
        index.search(q, 3, np.ones(len(x), np.uint8))
    with pytest.raises(ValueError):
        index.add(np.full((1, DIM), np.nan, np.float32))
    assert index.ntotal == len(x)


def test_show_fewer_rows_then_add_writes_over_the_rest(index, data, tmp_path):
    # A database put back to an earlier state counts fewer rows: the next add goes after them.
    rng, x = data
    index.show(1200)
    assert index.ntotal == 1200
    np.testing.assert_array_equal(index.matrix(), x[:1200])
    index.add(x[2000:2010])
    np.testing.assert_array_equal(index.matrix()[1200:], x[2000:2010])
    assert VectorFile.open(tmp_path / "vectors.npy", DIM).rows_on_disk == 1210  # the old tail is cut off
    np.testing.assert_array_equal(np.load(tmp_path / "vectors.npy")[1200:], x[2000:2010])
    index.show(0)
    assert index.ntotal == 0


def test_matrix_is_a_view_of_the_added_vectors(index, data):
    _, x = data
    m = index.matrix()
    assert m.shape == x.shape and m.dtype == np.float32
    np.testing.assert_array_equal(m, x)
    assert isinstance(m, np.memmap) and not m.flags.writeable, "matrix() maps the file, read-only"


def test_accepts_float64_and_unnormalized_queries(index, data):
    rng, x = data
    q = rng.standard_normal(DIM) * 10.0  # float64, norm far from 1
    ids, scores = index.search(q, 5, None)
    want_ids, want_scores = brute_force(x.astype(np.float64), q, 5, None)
    np.testing.assert_allclose(scores, want_scores, rtol=1e-5)


def test_overflowing_products_still_return_k_allowed_rows(tmp_path):
    # Finite vectors whose products overflow give NaN/inf scores. The contract (k allowed
    # rows, never a NaN ranked first) must hold anyway.
    rng = np.random.default_rng(3)
    ix = VectorIndex.open(tmp_path / "huge.npy", DIM)
    ix.add(rng.standard_normal((500, DIM)).astype(np.float32) * 1e20)
    sparse = rng.random(500) < 0.2  # the gather path
    dense = rng.random(500) < 0.7  # BLAS product path
    q = rng.standard_normal(DIM).astype(np.float32) * 1e20
    for mask in (None, sparse, dense):
        ids, scores = ix.search(q, 20, mask)
        assert len(ids) == 20 and (ids >= 0).all()
        if mask is not None:
            assert mask[ids].all()


@pytest.mark.parametrize("threshold", [0.0, 1.01])
def test_both_single_query_paths_match_brute_force_at_every_fraction(index, data, monkeypatch, threshold):
    # 0.0: the BLAS product path for every mask; 1.01: the gather path for every one.
    import localq.search.exact as vi

    monkeypatch.setattr(vi, "_GATHER_BELOW_FRACTION", threshold)
    monkeypatch.setattr(vi, "_GATHER_BLOCK_ROWS", 700)  # several blocks per gather
    rng, x = data
    q = rng.standard_normal(DIM).astype(np.float32)
    for name, allowed in masks(rng, len(x), q, x):
        ids, scores = index.search(q, 50, allowed)
        want_ids, want_scores = brute_force(x, q, 50, allowed)
        assert_same_top_k(ids, scores, want_ids, want_scores, x, q)
        assert allowed[ids].all(), f"{name}: returned a disallowed id"


def test_scores_of_every_row_a_block_at_a_time(index, data, monkeypatch):
    import localq.search.exact as vi

    monkeypatch.setattr(vi, "_SCAN_BLOCK_ROWS", 400)  # several blocks over 3000 rows
    rng, x = data
    w = rng.standard_normal(DIM).astype(np.float32)
    np.testing.assert_allclose(index.scores(w), x @ w, rtol=0, atol=1e-5)
    np.testing.assert_array_equal(index.matrix(), x)  # the pages let go are read again from the file


def test_gather_rows_asks_for_every_row_first_and_returns_the_rows(tmp_path, monkeypatch):
    """gather_rows hints the kernel about every row before reading any: each row asked for
    lies inside one of the ranges advised, and the rows come back unchanged (ids unsorted,
    repeated, and next to each other, whose ranges merge), from a slice of the map too."""
    import os

    import localq.storage.vector_file as vector_file

    x = np.random.default_rng(0).standard_normal((5000, 64)).astype(np.float32)
    np.save(tmp_path / "v.npy", x)
    matrix = np.load(tmp_path / "v.npy", mmap_mode="r")
    advised = []
    real_fadvise = os.posix_fadvise

    def fadvise(fd, offset, length, advice):
        advised.append((offset, offset + length, advice))
        return real_fadvise(fd, offset, length, advice)

    monkeypatch.setattr(os, "posix_fadvise", fadvise)
    ids = np.array([4999, 3, 4, 3, 2500, 17, 4998])
    rows = vector_file.gather_rows(matrix, ids)
    np.testing.assert_array_equal(rows, x[ids])
    base, row_bytes = matrix.offset, matrix.strides[0]
    assert all(advice == os.POSIX_FADV_WILLNEED for *_, advice in advised)
    for i in ids:
        start, end = base + i * row_bytes, base + (i + 1) * row_bytes
        assert any(lo <= start and end <= hi for lo, hi, _ in advised), i
    assert len(advised) < len(ids)  # neighbouring rows share a call
    np.testing.assert_array_equal(vector_file.gather_rows(matrix[100:], ids % 4900), x[100:][ids % 4900])
    np.testing.assert_array_equal(vector_file.gather_rows(x, ids), x[ids])  # not a memmap: just the rows
    with pytest.raises(IndexError):
        vector_file.gather_rows(matrix, np.array([5000]))


def test_gather_rows_trusts_the_map_when_the_file_under_its_name_is_shorter_or_gone(tmp_path):
    import localq.storage.vector_file as vector_file

    x = np.random.default_rng(0).standard_normal((100, 8)).astype(np.float32)
    np.save(tmp_path / "v.npy", x)
    matrix = np.load(tmp_path / "v.npy", mmap_mode="r")
    np.save(tmp_path / "short.npy", x[:10] + 1)
    (tmp_path / "short.npy").replace(tmp_path / "v.npy")  # another file under the name
    ids = np.array([2, 50, 99])
    np.testing.assert_array_equal(vector_file.gather_rows(matrix, ids), x[ids])
    (tmp_path / "v.npy").unlink()
    np.testing.assert_array_equal(vector_file.gather_rows(matrix, ids), x[ids])


def test_gathered_rows_do_not_stay_mapped(tmp_path):
    """Rows read at random must not count against the process's resident memory: reading
    them through the map left each one's pages (and the folios around them) mapped."""
    import localq.storage.vector_file as vector_file

    def mapped_file_kb():
        status = Path("/proc/self/status").read_text()
        return int(next(line for line in status.splitlines() if line.startswith("RssFile:")).split()[1])

    x = np.random.default_rng(0).standard_normal((32768, 256)).astype(np.float32)  # 32 MiB
    np.save(tmp_path / "v.npy", x)
    matrix = np.load(tmp_path / "v.npy", mmap_mode="r")
    ids = np.sort(np.random.default_rng(1).choice(len(x), 4096, replace=False))
    before = mapped_file_kb()
    np.testing.assert_array_equal(vector_file.gather_rows(matrix, ids), x[ids])
    assert mapped_file_kb() - before < 1024
    np.asarray(matrix[ids])  # the map itself does map them: the measure can see it
    assert mapped_file_kb() - before > 4096


@pytest.mark.parametrize("pattern", ["dense", "sparse", "runs", "repeats"])
def test_gather_rows_reads_near_rows_as_one_span_and_returns_them_as_asked(tmp_path, monkeypatch, pattern):
    """Rows asked for that lie near one another are read in spans (the rows between read
    and dropped), in at most _SPAN_BYTES at a time; the answer is matrix[ids] whatever the
    ids' order, density or repeats."""
    import os

    import localq.storage.vector_file as vector_file

    x = np.random.default_rng(0).standard_normal((6000, 32)).astype(np.float32)
    np.save(tmp_path / "v.npy", x)
    matrix = np.load(tmp_path / "v.npy", mmap_mode="r")
    monkeypatch.setattr(vector_file, "_SPAN_BYTES", 64 * 128)  # spans of at most 64 rows here
    reads = []
    real_preadv = os.preadv
    monkeypatch.setattr(
        os, "preadv", lambda fd, views, offset: reads.append(len(views[0])) or real_preadv(fd, views, offset)
    )
    rng = np.random.default_rng(1)
    ids = {
        "dense": rng.permutation(6000)[:3000],
        "sparse": rng.choice(6000, 50, replace=False),
        "runs": np.concatenate([np.arange(100, 400), np.arange(5000, 5010)])[::-1],
        "repeats": rng.integers(0, 6000, 4000),
    }[pattern]
    np.testing.assert_array_equal(vector_file.gather_rows(matrix, ids), x[ids])
    assert max(reads) <= 64 * 128
    if pattern == "dense":
        assert len(reads) <= 6000 // 64 + 1  # one read per span, not per row
