"""The label-efficiency benchmark on small seeded synthetic collections."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import localq.encoders
from localq.bench.datasets import class_names, parquet_split
from localq.bench.labeler import Labeler, MappingError, labeler_for, load_mapping
from localq.bench.report import load_result, summarize, write_reports
from localq.bench.runner import BENCH_PREFIX, BenchConfig, run_benchmark
from localq.cli.bench import bench
from localq.loop.metrics import average_precision
from localq.loop.sampling import DEFAULT_STRATEGY

pytestmark = pytest.mark.slow  # runs the benchmark


from conftest import _unit, clusters, make_collection  # noqa: E402


def small_config(**kw) -> BenchConfig:
    base = dict(rounds=3, k=4, seeds=(0, 1))
    base.update(kw)
    return BenchConfig(**base)


def test_metrics_equal_hand_computed_values(tmp_path):
    # Prompt "a" = (1, 0). Val scores 0.9 > 0.7 > ... rank labels a, b, a, b, b, a:
    # AP = (1/1 + 2/3 + 3/6) / 3.
    val_x = [0.9, 0.7, 0.5, 0.3, 0.1, -0.2]
    val_labels = ["a", "b", "a", "b", "b", "a"]
    # Train (the pool): the top 2 by the prompt are one "a" and one "b".
    train_x = [0.95, 0.8, -0.5, -0.6, -0.7]
    train_labels = ["a", "b", "a", "b", "b"]
    xs = np.array(train_x + val_x)
    vectors = np.stack([xs, np.sqrt(1 - xs**2)], axis=1)
    coll = make_collection(
        tmp_path / "c",
        vectors,
        train_labels + val_labels,
        ["train"] * 5 + ["val"] * 6,
        {"a": np.array([1.0, 0.0]), "b": np.array([0.0, 1.0])},
    )
    # near_copy=1: in two dimensions most pairs of rows are near-copies.
    result = run_benchmark(
        coll,
        small_config(
            rounds=1, k=2, seeds=(0,), classes=("a",), methods=("zero-shot", "localq-top"), settings={"near_copy": 1.0}
        ),
        dataset="hand",
    )
    zero = next(r for r in result.rows if r.method == "zero-shot")
    assert zero.ap == pytest.approx((1 + 2 / 3 + 3 / 6) / 3)
    first = next(r for r in result.rows if r.method == "localq-top" and r.round == 1)
    assert (first.labels, first.batch_precision, first.positives, first.positives_per_label) == (2, 0.5, 1, 0.5)
    assert (result.pool_size, result.eval_size, result.eval_split) == (5, 6, "val")
    assert not [c for c in coll.store.classifiers() if c.name.startswith(BENCH_PREFIX)]


def test_loop_ap_matches_an_independent_evaluation(tmp_path):
    from localq.loop.trainer import Trainer
    from localq.loop.trainer_types import Settings

    coll = clusters(tmp_path / "c")
    result = run_benchmark(
        coll, small_config(rounds=2, seeds=(0,), classes=("1",), methods=("localq-top",)), dataset="synthetic"
    )
    # Replay the same run by hand through the core API and score it with metrics directly.
    from localq.bench.runner import bench_name, bench_seed_name, trainer_seed

    # Same seed name as the benchmark's classifier: the background sample is seeded by it.
    t = Trainer.create(
        coll,
        bench_name("localq-top", "1", 0),
        prompt="a photo of a 1",
        settings=Settings(
            k=4,
            strategy="top",
            pool_split="train",
            target="1",
            seed=trainer_seed(0, "1"),
            seed_name=bench_seed_name("localq-top", "1", 0),
        ),
    )
    for _ in range(2):
        t.submit({h.id: 1.0 if h.label == "1" else -1.0 for h in t.next_batch()})
    rows = coll.store.labels_with_split()
    ids = np.array([i for i, _, s in rows if s == "val"])
    relevant = np.array([label == "1" for _, label, s in rows if s == "val"])
    hand = average_precision(coll.index.matrix()[ids] @ t.weights, relevant)
    assert result.rows[-1].ap == pytest.approx(hand)


def test_random_sampling_is_reproducible_with_a_fixed_seed(tmp_path):
    config = small_config(methods=("random",), seeds=(3,))
    coll = clusters(tmp_path / "a")
    first = run_benchmark(coll, config, dataset="s").rows
    again = run_benchmark(coll, config, dataset="s").rows  # same collection, rerun
    fresh = run_benchmark(clusters(tmp_path / "b"), config, dataset="s").rows  # rebuilt from scratch
    assert first == again == fresh
    other = run_benchmark(clusters(tmp_path / "c"), small_config(methods=("random",), seeds=(4,)), dataset="s").rows
    assert [r.positives for r in other] != [r.positives for r in first]


def test_full_supervision_reaches_ap_one_on_separable_data(tmp_path):
    coll = clusters(tmp_path / "c", spread=0.2, prompt_noise=3.0)
    result = run_benchmark(coll, small_config(methods=("zero-shot", "full")), dataset="separable")
    full = [r for r in result.rows if r.method == "full"]
    assert len(full) == 4 and all(r.ap == pytest.approx(1.0) for r in full)
    assert all(r.labels == result.pool_size == 120 for r in full)


def test_every_method_runs_and_round_zero_is_zero_shot(tmp_path):
    result = run_benchmark(clusters(tmp_path / "c"), small_config(), dataset="s")
    methods = {r.method for r in result.rows}
    assert {"zero-shot", "article", "localq-top", "random", "full"} <= methods
    zero = {r.target: r.ap for r in result.rows if r.method == "zero-shot"}
    for r in result.rows:
        if r.round == 0 and r.method not in ("zero-shot", "full"):
            assert r.ap == pytest.approx(zero[r.target])
        if r.round > 0:
            assert r.labels == 4 * r.round and 0 <= r.batch_precision <= 1
    assert sum(1 for r in result.rows if r.method == "article") == 4 * 2 * 4  # classes x seeds x (round 0 + 3)
    assert result.timing["submit_calls"] > 0


def test_reports_are_written_and_parse(tmp_path):
    result = run_benchmark(clusters(tmp_path / "c"), small_config(), dataset="synthetic")
    files = write_reports(result, tmp_path / "out", budgets=(4, 8, 12), command="localq bench --db c")
    data = json.loads(files["json"].read_text())
    assert len(data["rows"]) == len(result.rows) and data["command"] == "localq bench --db c"
    with files["csv"].open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(result.rows) and float(rows[0]["ap"]) == pytest.approx(result.rows[0].ap)
    text = files["markdown"].read_text()
    assert "| method | 0 labels | 4 labels | 8 labels | 12 labels |" in text
    assert f"localq-{DEFAULT_STRATEGY} (default)" in text and "full supervision (120 labels)" in text
    assert files["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    loaded = load_result(files["json"])
    assert loaded.rows == result.rows and summarize(loaded) == summarize(
        result
    )  # round trip: reports can be redrawn without a rerun
    summary = summarize(result)
    top = [e for e in summary if e["method"] == "localq-top" and e["labels"] == 12][0]
    per_seed = [
        np.mean([r.ap for r in result.rows if r.method == "localq-top" and r.round == 3 and r.seed == s])
        for s in (0, 1)
    ]
    assert top["ap_mean"] == pytest.approx(np.mean(per_seed)) and top["ap_sd"] == pytest.approx(
        np.std(per_seed, ddof=1)
    )


def test_graded_labeler_gives_partial_scores(tmp_path):
    path = tmp_path / "map.json"
    path.write_text(json.dumps({"dog": {"wolf": 0.5}, "*": {"fox": 0.0}}))
    mapping = load_mapping(path)
    names = {"n1": "dog", "n2": "wolf", "n3": "fox", "n4": "cat"}
    labeler = labeler_for("n1", mapping, names)
    assert [labeler.score(x) for x in ("n1", "n2", "n3", "n4", None)] == [1.0, 0.5, 0.0, -1.0, -1.0]
    assert labeler_for("n4", mapping, names).related == {"n3": 0.0}
    assert Labeler("a").score("b") == -1.0
    path.write_text(json.dumps({"dog": {"wolf": 2}}))
    with pytest.raises(MappingError, match="in \\[-1, 1\\]"):
        load_mapping(path)


def test_graded_run_changes_scores_not_metrics_definition(tmp_path):
    coll = clusters(tmp_path / "c", spread=2.0)
    half = {"*": {str(c): 0.5 for c in range(4)}}  # every other class half-accepted
    plain = run_benchmark(coll, small_config(methods=("localq-top",), seeds=(0,)), dataset="s").rows
    graded = run_benchmark(coll, small_config(methods=("localq-top",), seeds=(0,), graded=half), dataset="s").rows
    assert plain[0] == graded[0]  # round 0 is the prompt alone
    assert [r.ap for r in plain] != [r.ap for r in graded]


def test_class_names_and_parquet_split_names():
    names = class_names(["n03394916", "golden_retriever", "x"], {"x": "thing"})
    assert names["golden_retriever"] == "golden retriever" and names["x"] == "thing"
    assert names["n03394916"] in ("French horn", "n03394916")  # timm's table when installed
    assert parquet_split(Path("data/train-00000-of-00002.parquet")) == "train"
    assert parquet_split(Path("plain_text/test/0000.parquet")) == "test"
    assert parquet_split(Path("validation-00000-of-00001.parquet")) == "validation"


def test_parquet_export_becomes_a_labeled_folder(tmp_path):
    pa = pytest.importorskip("pyarrow", reason="pyarrow is optional: parquet data sets need it")
    import io

    import pyarrow.parquet as pq
    from PIL import Image

    from localq.bench.datasets import unpack_parquet

    def png(colour):
        buf = io.BytesIO()
        Image.new("RGB", (4, 4), colour).save(buf, format="PNG")
        return buf.getvalue()

    features = {"img": {"_type": "Image"}, "label": {"names": ["red", "blue"], "_type": "ClassLabel"}}
    table = pa.table(
        {
            "img": [{"bytes": png((255, 0, 0)), "path": None}, {"bytes": png((0, 0, 255)), "path": "b.png"}],
            "label": [0, 1],
        }
    )
    table = table.replace_schema_metadata({"huggingface": json.dumps({"info": {"features": features}})})
    (tmp_path / "data").mkdir()
    pq.write_table(table, tmp_path / "data" / "test-00000-of-00001.parquet")
    out = unpack_parquet(sorted((tmp_path / "data").glob("*.parquet")), tmp_path / "images")
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.png"))
    assert files == ["test/blue/test-00000-of-00001-000001.png", "test/red/test-00000-of-00001-000000.png"]

    # The whole source path: unpacked inside the collection, indexed with labels and splits.
    from conftest import ColorEncoder
    from localq.bench.datasets import index_source
    from localq.collection.collection import Collection

    pq.write_table(table, tmp_path / "data" / "train-00000-of-00001.parquet")
    with Collection.open(tmp_path / "coll", create=True) as coll:
        report = index_source(coll, tmp_path / "data", ColorEncoder())
        assert report.added == 4
        assert sorted((label, split) for _, label, split in coll.store.labels_with_split()) == [
            ("blue", "test"),
            ("blue", "train"),
            ("red", "test"),
            ("red", "train"),
        ]
        assert index_source(coll, tmp_path / "data", ColorEncoder()).added == 0  # cached: a rerun embeds nothing


def test_cli_writes_reports_and_reproduces_numbers(tmp_path, monkeypatch):
    coll = clusters(tmp_path / "c")
    encoder = coll.encoder()
    coll.close()
    monkeypatch.setattr(localq.encoders, "load_encoder", lambda spec=None, weights=None: encoder)
    runner = CliRunner()
    args = [
        "--db",
        str(tmp_path / "c"),
        "--rounds",
        "2",
        "-k",
        "4",
        "--repeats",
        "2",
        "--budgets",
        "4,8",
        "-q",
        "--classes",
        "0,1",
    ]
    first = runner.invoke(bench, args + ["--out", str(tmp_path / "r1")], catch_exceptions=False)
    assert first.exit_code == 0, first.output
    assert "| method | 0 labels | 4 labels | 8 labels |" in first.output
    second = runner.invoke(bench, args + ["--out", str(tmp_path / "r2")], catch_exceptions=False)
    assert second.exit_code == 0, second.output
    one, two = (json.loads((tmp_path / d / "results.json").read_text()) for d in ("r1", "r2"))
    assert one["rows"] == two["rows"] and len(one["rows"]) > 0
    assert one["command"].startswith("bench --db ") and "--rounds 2" in one["command"]
    bad = runner.invoke(bench, ["--db", str(tmp_path / "c"), "--methods", "nope"])
    assert bad.exit_code != 0 and "unknown method nope" in bad.output


def test_labels_on_a_scene_already_labeled_are_counted_per_method(tmp_path):
    """Four shots of each scene (scripts/burst_dataset.py's naming); the article's top-k labels
    them over and over, localq's strategies skip the copies."""
    from localq.bench.report import summarize

    rng = np.random.default_rng(0)
    centre, other = _unit(rng.standard_normal((2, 16)))
    # Scenes of one class are alike (cosine ~0.4 apart), far from near-copies of each other.
    scenes = _unit(
        np.concatenate(
            [centre + 1.2 * rng.standard_normal((6, 16)) / 4, other + 1.2 * rng.standard_normal((6, 16)) / 4]
        )
    )
    vectors, labels, splits, paths = [], [], [], []
    for s, v in enumerate(scenes):
        for shot in range(4):
            vectors.append(v + 0.01 * rng.standard_normal(16))
            labels.append("a" if s < 6 else "b")
            splits.append("train")
            paths.append(f"/p/{s}.jpg" if shot == 0 else f"/p/{s}.burst{shot}.jpg")
    for i in range(8):
        vectors.append(scenes[i] + 0.3 * rng.standard_normal(16))
        labels.append("a" if i < 6 else "b")
        splits.append("val")
        paths.append(f"/val/{i}.jpg")
    coll = make_collection(tmp_path / "c", np.array(vectors), labels, splits, {"a": centre, "b": other}, paths=paths)
    result = run_benchmark(
        coll,
        small_config(rounds=2, k=4, seeds=(0,), classes=("a",), methods=("article", "localq-top")),
        dataset="bursts",
    )
    last = {r.method: r for r in result.rows if r.round == 2}
    assert last["article"].repeats >= 4  # top-k piles up the shots of the scenes it ranks first
    assert last["localq-top"].repeats == 0
    per_100 = {e["method"]: e["repeats_per_100_mean"] for e in summarize(result) if e["labels"] == 8}
    assert per_100["localq-top"] == 0 and per_100["article"] == 100 * last["article"].repeats / 8


def test_a_second_bench_on_one_collection_is_refused_in_one_line(tmp_path):
    """Two runs at once would delete each other's classifiers as stale ones."""
    import fcntl

    from localq.bench.runner import BENCH_LOCK
    from localq.errors import LocalqError

    coll = clusters(tmp_path / "c")
    with open(coll.root / BENCH_LOCK, "a+") as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # another process's run, as the lock sees it
        with pytest.raises(LocalqError, match="another `localq bench` is running"):
            run_benchmark(coll, small_config(methods=("zero-shot",)), dataset="x")
        fcntl.flock(held, fcntl.LOCK_UN)
    assert run_benchmark(coll, small_config(methods=("zero-shot",)), dataset="x").rows
