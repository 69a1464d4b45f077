"""Bad input to the API and the CLI: refused with a typed error (one `error:` line and
exit 1 on the CLI; click's usage errors: one line and exit 2), nothing written."""

from __future__ import annotations

import math
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from safetensors.numpy import save_file

from conftest import ColorEncoder, write_image
from localq.collection.collection import Collection
from localq.errors import InvalidClassifierFile, InvalidScores, LocalqError
from localq.ingest.indexer import index_paths
from localq.loop import classifier_file
from localq.loop.trainer import Trainer
from reliability.inprocess import assert_one_error_line, invoke, runner  # noqa: F401

pytestmark = pytest.mark.reliability("bad input")
DIM = ColorEncoder.dim


@pytest.fixture(scope="module")
def collection(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad-input")
    for i, rgb in enumerate([(220, 20, 20), (200, 40, 30), (20, 200, 30), (30, 40, 210), (240, 240, 240), (5, 5, 5)]):
        write_image(root / "photos" / f"img{i}.png", rgb)
    coll = Collection.open(root / "db", create=True)
    index_paths(coll, [root / "photos"], ColorEncoder())
    yield coll
    coll.close()


def state(trainer: Trainer):
    """What a refused call must leave untouched."""
    return (
        trainer.round,
        trainer.labels(),
        trainer.weights.copy(),
        trainer.bias,
        sorted(trainer.store.seen_ids(trainer.row.id)),
    )


def same_state(a, b) -> bool:
    return a[0] == b[0] and a[1] == b[1] and np.array_equal(a[2], b[2]) and a[3] == b[3] and a[4] == b[4]


@pytest.fixture
def trainer(collection):
    t = Trainer.create(collection, "t", prompt="red", replace=True)
    yield t
    collection.store.delete_classifier(t.row.id)


# -- Trainer.submit ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "scores",
    [
        {2.7: 1.0},
        {True: 1.0},
        {np.float64(2.5): 1.0},
        {"2": 1.0},
        {None: 1.0},
        {float("nan"): 1.0},
        {0: 10**400},
        {0: float("nan")},
        {0: float("inf")},
        {0: 1.5},
        {0: "1"},
        {0: True},
        {0: None},
        {0: 1j},
        {10**30: 1.0},
        {-1: 1.0},
        {},
    ],
)
def test_submit_refuses_bad_ids_and_scores(trainer, scores):
    before = state(trainer)
    with pytest.raises(InvalidScores):
        trainer.submit(scores)
    assert same_state(state(trainer), before)


@pytest.mark.slow
def test_submit_accepts_integral_numbers_of_any_kind(trainer):
    row = trainer.submit({np.int64(0): np.float32(1.0), 1.0: Fraction(1, 2), np.float64(2.0): -1})
    assert trainer.labels() == {0: 1.0, 1: 0.5, 2: -1.0} and row.round == 1


def test_submit_refuses_seen_ids_that_are_not_integers(trainer):
    before = state(trainer)
    with pytest.raises(InvalidScores):
        trainer.submit({0: 1.0}, seen=[2.7])
    assert same_state(state(trainer), before)


numbers = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(min_value=-(10**500), max_value=10**500),
    st.booleans(),
    st.none(),
    st.text(max_size=5),
    st.fractions(),
    st.decimals(allow_nan=True),
    st.builds(np.float32, st.floats(width=32)),
    st.builds(np.float64, st.floats()),
)


@pytest.mark.slow
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(key=st.one_of(numbers, st.integers(min_value=0, max_value=5)).filter(lambda k: not _signaling(k)), value=numbers)
@example(key=Fraction(10**400, 1), value=0.0)  # found by CI: float() of it overflowed into a traceback
def test_property_submit_accepts_exactly_finite_scores_in_range(collection, key, value):
    trainer = Trainer.create(collection, "prop", prompt="red", replace=True)
    key_ok = (
        not isinstance(key, (bool, np.bool_, str, type(None)))
        and not hasattr(key, "as_tuple")
        and _is_int(key)
        and 0 <= int(key) < 6
    )
    value_ok = (
        not isinstance(value, (bool, np.bool_, str, type(None)))
        and not hasattr(value, "as_tuple")
        and _finite_in_range(value)
    )
    before = state(trainer)
    if key_ok and value_ok:
        trainer.submit({key: value})
        assert trainer.labels() == {int(key): float(value)}
    else:
        with pytest.raises(InvalidScores):
            trainer.submit({key: value})
        assert same_state(state(trainer), before)


def _signaling(x) -> bool:
    return hasattr(x, "is_snan") and x.is_snan()  # a Decimal('sNaN') cannot even be a dict key


def _is_int(x) -> bool:
    try:
        return math.isfinite(float(x)) and float(x).is_integer() and int(x) == x
    except (OverflowError, ValueError, TypeError):
        return False


def _finite_in_range(x) -> bool:
    try:
        return math.isfinite(float(x)) and -1.0 <= float(x) <= 1.0
    except (OverflowError, ValueError, TypeError):
        return False


# -- classifier files ------------------------------------------------------------------------------
def write_classifier(path: Path, weight, bias=None) -> Path:
    tensors = {"weight": np.asarray(weight, np.float32)}
    if bias is not None:
        tensors["bias"] = np.asarray(bias, np.float32)
    save_file(tensors, str(path))
    return path


@pytest.mark.parametrize(
    "weight,bias,why",
    [
        (np.ones((2, 8)), [0.0], "[2, 8] is two layers"),
        (np.ones((2, 640)), [0.0], "the issue's [2, 640] read as 1280-d"),
        (np.full((1, DIM), np.nan), [0.0], "NaN weights"),
        (np.zeros((1, DIM)), [0.0], "zero weights"),
        (np.full((1, DIM), 1e38), [0.0], "1e38 weights"),
        (np.ones((1, DIM)), [np.nan], "NaN bias (stored as NULL, then a TypeError in predict)"),
        (np.ones((1, DIM)), [np.inf], "infinite bias"),
        (np.ones((1, DIM)), [1.0, 2.0], "two biases"),
        (np.ones((DIM, 1)), [0.0], "a column, not a row"),
        (np.ones((1, 1, DIM)), [0.0], "3-d"),
    ],
)
def test_bad_classifier_files_are_refused(collection, tmp_path, weight, bias, why):
    path = write_classifier(tmp_path / "c.safetensors", weight, bias)
    with pytest.raises(InvalidClassifierFile):
        classifier_file.load(path)
    with pytest.raises(LocalqError):
        Trainer.create(collection, "from-file", weights_file=path)
    assert collection.store.classifier("from-file") is None


def test_bad_npy_classifier_is_refused(tmp_path):
    np.save(tmp_path / "w.npy", np.ones((2, 640), np.float32))
    with pytest.raises(InvalidClassifierFile):
        classifier_file.load(tmp_path / "w.npy")
    np.save(tmp_path / "v.npy", np.ones(DIM, np.float32))
    (tmp_path / "v.json").write_text('{"bias": NaN}')
    with pytest.raises(InvalidClassifierFile):
        classifier_file.load(tmp_path / "v.npy")


shapes = st.sampled_from([(DIM,), (1, DIM), (2, DIM), (DIM, 1), (1, 1, DIM), (0,), (1, 0), (2 * DIM,)])
elements = st.floats(width=32, allow_nan=True, allow_infinity=True)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    weight=shapes.flatmap(lambda s: hnp.arrays(np.float32, s, elements=elements)),
    bias=hnp.arrays(np.float32, st.sampled_from([(1,), (), (2,)]), elements=elements),
)
def test_property_classifier_files(collection, tmp_path, weight, bias):
    """A file loads iff it is one finite, non-zero, sane Linear(dim, 1); a loaded one predicts."""
    path = write_classifier(tmp_path / "p.safetensors", weight, bias)
    w = weight.astype(np.float64).reshape(-1)
    valid = (
        weight.shape in ((DIM,), (1, DIM), (2 * DIM,))
        and bias.size == 1
        and np.isfinite(w).all()
        and np.isfinite(bias).all()
        and 0 < np.linalg.norm(w) <= classifier_file.MAX_WEIGHT_NORM
        and abs(float(bias.reshape(-1)[0])) <= classifier_file.MAX_ABS_BIAS
    )
    try:
        loaded = classifier_file.load(path)
    except InvalidClassifierFile:
        assert not valid
        return
    assert valid and np.isfinite(loaded.weight).all() and math.isfinite(loaded.bias)
    try:
        t = Trainer.create(collection, "prop-file", weights_file=path, replace=True)
    except LocalqError:
        assert loaded.dim != DIM  # only the dimension can still be wrong
        return
    assert loaded.dim == DIM
    scores = [p.score for p in t.predict(threshold=-np.inf)]
    assert len(scores) == 6 and all(math.isfinite(s) for s in scores)


# -- the CLI -------------------------------------------------------------------------------------------
@pytest.fixture
def db(runner, tmp_path):
    for i, rgb in enumerate([(220, 20, 20), (20, 30, 220)]):
        write_image(tmp_path / "p" / f"{i}.png", rgb)
    assert invoke(runner, "index", tmp_path / "p", "--db", tmp_path / "db", "-q").exit_code == 0
    with Collection.open(tmp_path / "db") as coll:
        Trainer.create(coll, "reds", prompt="red")
    return tmp_path / "db"


@pytest.mark.parametrize(
    "args",
    [
        ("search", "red", "-k", "-5"),
        ("search", "red", "-k", "0"),
        ("search", "red", "-k", "x"),
        ("predict", "reds", "--limit", "-1"),
        ("predict", "reds", "--limit", "0"),
        ("index", "{tmp}/p", "--batch-size", "0"),
        ("index", "{tmp}/p", "--batch-size", "-3"),
        ("train", "red", "-k", "0"),
        ("bench", "--rounds", "0"),
        ("bench", "-k", "-1"),
        ("bench", "--repeats", "0"),
        ("search",),
        ("frobnicate",),
        ("search", "red", "--no-such-option"),
    ],
)
def test_cli_usage_errors_are_one_line_exit_2(runner, db, args):
    args = [a.replace("{tmp}", str(db.parent)) for a in args]
    line = assert_one_error_line(invoke(runner, *args, "--db", db), exit_code=2)
    assert "--help" in line


def test_cli_bad_classifier_file_is_one_line_exit_1(runner, db, tmp_path, monkeypatch):
    import localq.tui.app

    monkeypatch.setattr(localq.tui.app, "run_train", lambda *a, **k: pytest.fail("the labeling UI opened"))
    for weight, bias in ((np.ones((2, 8)), [0.0]), (np.ones((1, DIM)), [np.nan]), (np.zeros((1, DIM)), [0.0])):
        path = write_classifier(tmp_path / "bad.safetensors", weight, bias)
        assert_one_error_line(invoke(runner, "train", "--from-file", path, "--db", db))


def test_cli_search_with_an_undecodable_image_is_one_line(runner, db, tmp_path):
    (tmp_path / "q.jpg").write_bytes(b"nope")
    assert_one_error_line(invoke(runner, "search", "--image", tmp_path / "q.jpg", "--db", db))


@pytest.mark.parametrize("command", [("index", "{pics}", "-q"), ("stats",), ("search", "red"), ("check",)])
def test_an_empty_db_is_refused_not_taken_as_the_default(tmp_path, command):
    """`--db "$UNSET"` must not quietly write into (or read) the default collection."""
    from reliability.helpers import assert_one_line_error, run_cli, write_folder

    pics = write_folder(tmp_path / "pics", 2, seed=1)
    data = tmp_path / "data"
    args = [a.format(pics=pics) for a in command]
    proc = run_cli(*args, "--db", "", extra_env={"XDG_DATA_HOME": str(data), "LOCALQ_HOME": ""})
    assert_one_line_error(proc, '--db ""')
    assert not data.exists()
