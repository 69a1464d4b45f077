"""The benchmark's protocol: dev split for tuning, mismatched prompts, cold-start reporting."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner
from test_bench import clusters, small_config

import localq.encoders
from conftest import with_rows_replaced
from localq.bench.report import first_positive, robustness, write_reports
from localq.bench.runner import BENCH_PREFIX, BenchConfig, prompt_class, run_benchmark
from localq.cli.bench import bench
from localq.errors import LocalqError
from localq.loop.devsplit import dev_mask, is_dev
from localq.loop.metrics import average_precision

pytestmark = pytest.mark.slow  # runs benchmark loops


def test_dev_is_a_hash_chosen_part_of_the_pool_and_never_meets_eval(tmp_path):
    coll = clusters(tmp_path / "c", train=60, val=20)
    dev = dev_mask(coll, "train")
    train, val = coll.split_mask("train"), coll.split_mask("val")
    assert not (dev & val).any() and (dev <= train).all()
    assert 0.1 < dev.sum() / train.sum() < 0.3  # ~20% of the pool
    hashes = {r.id: r.hash for r in coll.store.images(np.flatnonzero(train))}
    assert all(dev[i] == is_dev(h) for i, h in hashes.items())  # by content hash, not by row order


def test_tune_retrieves_from_pool_minus_dev_and_measures_on_dev_only(tmp_path, monkeypatch):
    coll = clusters(tmp_path / "c", train=60, val=20)
    dev = dev_mask(coll, "train")
    retrieved = []
    from localq.loop.trainer import Trainer

    real = Trainer.next_batch

    def spy(self, *a, **kw):
        hits = real(self, *a, **kw)
        retrieved.extend(h.id for h in hits)
        return hits

    monkeypatch.setattr(Trainer, "next_batch", spy)
    config = small_config(seeds=(0,), methods=("zero-shot", "localq-auto", "random", "full"), tune=True)
    result = run_benchmark(coll, config, dataset="s")
    assert retrieved and not dev[retrieved].any()
    assert coll.split_mask("train")[retrieved].all()
    assert result.protocol == "tune" and result.eval_split == "train:dev"
    assert result.eval_size == int(dev.sum()) and result.pool_size == int(coll.split_mask("train").sum() - dev.sum())
    # Zero-shot AP recomputed by hand on dev rows only.
    rows = coll.store.labels_with_split()
    ids = np.array([i for i, _, s in rows if s == "train" and dev[i]])
    relevant = np.array([label == "1" for i, label, s in rows if s == "train" and dev[i]])
    query = coll.encoder().encode_texts(["a photo of a 1"])[0]
    zero = next(r for r in result.rows if r.method == "zero-shot" and r.target == "1")
    assert zero.ap == pytest.approx(average_precision(coll.index.matrix()[ids] @ query, relevant))


def test_tune_never_reads_the_held_out_split(tmp_path):
    # Two collections identical but for their val images: a tuning run must not tell them apart.
    a = clusters(tmp_path / "a", train=40, val=20, seed=0)
    val = np.flatnonzero(a.split_mask("val"))
    noise = np.random.default_rng(9).standard_normal((len(val), a.dim)).astype(np.float32)
    b = with_rows_replaced(a, tmp_path / "b", val, noise / np.linalg.norm(noise, axis=1, keepdims=True))
    config = small_config(seeds=(0,), methods=("zero-shot", "localq-auto", "localq-boundary", "full"), tune=True)
    rows_a = run_benchmark(a, config, dataset="s").rows
    rows_b = run_benchmark(b, config, dataset="s").rows
    assert rows_a == rows_b
    report = small_config(seeds=(0,), methods=("zero-shot",))
    assert run_benchmark(a, report, dataset="s").rows != run_benchmark(b, report, dataset="s").rows  # it can tell


def test_prompt_from_other_class_is_a_deterministic_derangement(tmp_path):
    classes = ["0", "1", "2", "3"]
    picks = [prompt_class(classes, c, "other-class") for c in classes]
    assert sorted(picks) == classes and all(p != c for p, c in zip(picks, classes))
    assert [prompt_class(classes, c, "own") for c in classes] == classes
    with pytest.raises(LocalqError):
        prompt_class(classes, "0", "nonsense")
    coll = clusters(tmp_path / "c")
    result = run_benchmark(
        coll, small_config(seeds=(0,), methods=("zero-shot", "localq-top"), prompt_from="other-class"), dataset="s"
    )
    prompts = {r.target: r.prompt for r in result.rows if r.method == "zero-shot"}
    assert prompts == {c: f"a photo of a {p}" for c, p in zip(classes, picks)}
    own = run_benchmark(coll, small_config(seeds=(0,), methods=("zero-shot",)), dataset="s")
    mismatched_ap = np.mean([r.ap for r in result.rows if r.method == "zero-shot"])
    assert mismatched_ap < np.mean([r.ap for r in own.rows]) - 0.2  # a cold start indeed


def test_reports_give_first_positive_and_classes_worse_than_random(tmp_path):
    coll = clusters(tmp_path / "c")
    result = run_benchmark(
        coll,
        small_config(methods=("zero-shot", "localq-auto", "localq-top", "random"), prompt_from="other-class"),
        dataset="s",
    )
    firsts = first_positive(result)
    assert set(firsts) == {"localq-auto", "localq-top", "random"}
    for method, runs in firsts.items():
        assert len(runs) == 4 * 2  # classes x seeds
        for (target, seed), labels in runs.items():
            rows = sorted(
                (r for r in result.rows if (r.method, r.target, r.seed) == (method, target, seed)),
                key=lambda r: r.round,
            )
            hit = next((r.labels for r in rows if r.positives > 0), float("inf"))
            assert labels == hit
    rob = robustness(result, 12)
    auto = rob["methods"]["localq-auto"]
    assert set(auto["minus_random"]) == {"0", "1", "2", "3"}
    assert auto["classes_worse_than_random"] == sorted(c for c, d in auto["minus_random"].items() if d < -0.05)
    files = write_reports(result, tmp_path / "out", budgets=(4, 8, 12), with_plot=False)
    data = json.loads(files["json"].read_text())
    assert data["robustness"]["methods"]["localq-auto"]["runs"] == 8
    assert len(data["first_positive"]["localq-top"]) == 8
    text = files["markdown"].read_text()
    assert "median labels to first positive" in text and "mismatched prompts" in text
    assert "localq-auto − random" in text


def test_cli_tune_prompt_from_and_settings(tmp_path, monkeypatch):
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
        "1",
        "--budgets",
        "4,8",
        "-q",
        "--methods",
        "zero-shot,localq-auto,random",
    ]
    res = runner.invoke(
        bench,
        args + ["--tune", "--prompt-from", "other-class", "--set", "top_share=0.5", "--out", str(tmp_path / "r")],
        catch_exceptions=False,
    )
    assert res.exit_code == 0, res.output
    data = json.loads((tmp_path / "r" / "results.json").read_text())
    assert data["protocol"] == "tune" and data["config"]["settings"] == {"top_share": 0.5}
    assert data["config"]["prompt_from"] == "other-class"
    assert "--set top_share=0.5" in data["command"] and "--tune" in data["command"]
    bad = runner.invoke(bench, args + ["--set", "nope=1"])
    assert bad.exit_code == 1 and "error: cannot set 'nope'" in bad.output
    bad = runner.invoke(bench, args + ["--set", "strategy=top"])
    assert bad.exit_code == 1 and "cannot set 'strategy'" in bad.output
    assert not any(
        c.name.startswith(BENCH_PREFIX)
        for c in localq.collection.collection.Collection.open(tmp_path / "c").store.classifiers()
    )


def test_default_repeats_is_five():
    param = next(p for p in bench.params if p.name == "repeats")
    assert param.default == 5
    assert BenchConfig().prompt_from == "own" and BenchConfig().tune is False


def test_folder_labels_read_in_chunks_keep_every_row_label_and_split(monkeypatch):
    """FolderLabels stores codes read a chunk at a time from an iterator (10M rows as
    tuples held ~3 GB): the arrays it answers with are those of the rows themselves."""
    import localq.collection.folder_labels as folder_labels

    monkeypatch.setattr(folder_labels, "_CHUNK_ROWS", 7)  # several chunks, one partial
    splits = ["train", "val", None]
    rows = [(i, f"class{i % 4}", splits[i % 3]) for i in range(0, 60, 2)]  # ids with gaps
    labels = folder_labels.FolderLabels(50, iter(rows))  # rows past the view are left out
    kept = [r for r in rows if r[0] < 50]
    ids, names = labels.rows()
    assert ids.tolist() == [r[0] for r in kept] and names.tolist() == [r[1] for r in kept]
    assert labels.splits.tolist() == [r[2] for r in kept]
    val_ids, val_names = labels.rows("val")
    assert val_ids.tolist() == [r[0] for r in kept if r[2] == "val"]
    assert val_names.tolist() == [r[1] for r in kept if r[2] == "val"]
    assert np.flatnonzero(labels.split_mask("train")).tolist() == [r[0] for r in kept if r[2] == "train"]
    assert not labels.split_mask("test").any()
    assert labels.of([0, 1, 48, 49]) == ["class0", None, "class0", None]
    empty = folder_labels.FolderLabels(10, iter([]))
    assert empty.rows()[0].size == 0 and empty.of([3]) == [None] and not empty.split_mask("val").any()
