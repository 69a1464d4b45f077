"""A collection searching through its IVF index (upkeep.py): the setting, the file
on disk and its record, rows added after a build, stale and damaged files, and the
labeling loop on top, all with real FAISS and SQLite files."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import localq.encoders
from conftest import ColorEncoder, synthetic_collection
from localq.cli import cli
from localq.cli.common import SEARCH_INDEX_KINDS
from localq.collection.collection import Collection
from localq.loop.trainer import Trainer
from localq.search import trailer_file, upkeep
from localq.search.exact import VectorIndex
from localq.storage.rows import NewImage

# 30 clusters x 250 rows: more rows than IvfIndex's exact shortcut (4096 allowed rows),
# so these searches go through the inverted lists.
CLUSTERS, PER_CLUSTER, DIM = 30, 250, 32


def ivf_collection(root: Path, seed: int = 0):
    coll, centres = synthetic_collection(root, clusters=CLUSTERS, per_cluster=PER_CLUSTER, dim=DIM, seed=seed)
    coll.set_search_index("ivf")
    coll.save_index()
    return coll, centres


def queries(centres, n=12, seed=5):
    rng = np.random.default_rng(seed)
    q = centres[rng.integers(0, len(centres), n)] + 0.5 * rng.standard_normal((n, DIM)).astype(np.float32) / np.sqrt(
        DIM
    )
    return q / np.linalg.norm(q, axis=1, keepdims=True)


def recall(coll, q, k, allowed, pool: bool = False) -> float:
    """Share of exact search's top k that the collection's searcher finds (as a ranked
    search, or with ``pool`` as the codes-ranked candidates sampling draws from)."""
    got, _ = (coll.searcher.candidates if pool else coll.searcher.search)(q, k, allowed)
    want, _ = coll.index.search(q, k, allowed)
    assert allowed is None or allowed[got].all()
    return len(set(got.tolist()) & set(want.tolist())) / len(want)


def test_the_cli_and_the_core_offer_the_same_kinds():
    assert SEARCH_INDEX_KINDS == upkeep.KINDS


def test_an_ivf_collection_saves_its_index_and_searches_like_exact(tmp_path):
    coll, centres = ivf_collection(tmp_path / "c")
    path = tmp_path / "c" / upkeep.FILE_NAME
    state = trailer_file.read_state(path)
    assert state["rows"] == CLUSTERS * PER_CLUSTER and state["digest"] == coll.store.vectors_digest(state["rows"])
    coll.close()

    coll = Collection.open(tmp_path / "c")  # a new process's view: loads the file, builds nothing
    mtime = path.stat().st_mtime_ns
    assert isinstance(coll.searcher, upkeep.ApproximateSearch) and coll.ivf_problem is None
    n = coll.rows()
    rng = np.random.default_rng(0)
    for q in queries(centres):
        assert recall(coll, q, 10, None) >= 0.9
        random_seen = rng.random(n) < 0.5
        assert recall(coll, q, 10, ~random_seen) >= 0.9
        near = np.ones(n, bool)
        near[np.argsort(-(coll.index.matrix() @ q))[: n // 2]] = False  # the query's own half: seen
        assert recall(coll, q, 10, near) >= 0.9
    hits = coll.search(queries(centres)[0], 5)
    assert len(hits) == 5 and hits[0].score >= hits[-1].score
    coll.save_index()  # nothing new: the 0.5 GB-per-million file is not written again
    assert path.stat().st_mtime_ns == mtime


def test_rows_added_after_a_build_are_searched_and_saved(tmp_path):
    coll, _ = ivf_collection(tmp_path / "c")
    odd = np.zeros((1, DIM), np.float32)
    odd[0, 0] = 1.0  # a direction no cluster points to
    [new_id] = coll.add_images([NewImage("/synthetic/new.png", "hnew", 1, 0.0, 1, 1, None, "train")], odd)
    assert isinstance(coll.searcher, upkeep.ApproximateSearch)
    ids, scores = coll.searcher.search(odd[0], 1)
    assert ids.tolist() == [new_id] and scores[0] == pytest.approx(1.0)
    coll.save_index()
    assert trailer_file.read_state(tmp_path / "c" / upkeep.FILE_NAME)["rows"] == new_id + 1


def test_a_file_far_behind_the_collection_is_not_caught_up_on_every_open(tmp_path, monkeypatch):
    coll, _ = ivf_collection(tmp_path / "c")
    monkeypatch.setattr(upkeep, "_CATCH_UP_AT_MOST", 10)  # and a tenth of the rows: 750
    rows = [NewImage(f"/synthetic/more{i}.png", f"hm{i}", 1, 0.0, 1, 1, None, "train") for i in range(800)]
    coll.add_images(rows, coll.index.matrix()[:800].copy())  # as a run killed before its end leaves it
    coll.close()
    coll = Collection.open(tmp_path / "c")
    assert isinstance(coll.searcher, VectorIndex) and "indexes 7500 of 8300 rows" in coll.ivf_problem
    coll.save_index()
    assert isinstance(coll.searcher, upkeep.ApproximateSearch) and coll.searcher.ivf.ntotal == 8300


@pytest.mark.slow
@pytest.mark.parametrize("damage", ["garbage", "another collection's file", "no record"])
def test_a_stale_or_damaged_ivf_file_is_never_searched(tmp_path, damage):
    coll, centres = ivf_collection(tmp_path / "c")
    coll.close()
    path = tmp_path / "c" / upkeep.FILE_NAME
    if damage == "garbage":
        path.write_bytes(b"\x00not faiss" * 1000)
    elif damage == "another collection's file":
        other, _ = ivf_collection(tmp_path / "other", seed=1)  # same size, other vectors
        other.close()
        shutil.copy(tmp_path / "other" / upkeep.FILE_NAME, path)
    else:
        data = path.read_bytes()
        path.write_bytes(data[: data.rindex(b"{")])  # FAISS bytes without localq's trailer
    coll = Collection.open(tmp_path / "c")
    assert isinstance(coll.searcher, VectorIndex), "a file that does not match must not be searched"
    assert upkeep.FILE_NAME in coll.ivf_problem
    q = queries(centres)[0]
    assert [h.id for h in coll.search(q, 10)] == coll.index.search(q, 10)[0].tolist()
    coll.save_index()  # the next write rebuilds it
    assert isinstance(coll.searcher, upkeep.ApproximateSearch) and coll.ivf_problem is None
    assert trailer_file.read_state(path)["digest"] == coll.store.vectors_digest(coll.rows())


def test_auto_switches_to_ivf_past_its_threshold_and_exact_drops_the_file(tmp_path, monkeypatch):
    coll, _ = synthetic_collection(tmp_path / "c", clusters=CLUSTERS, per_cluster=PER_CLUSTER, dim=DIM)
    path = tmp_path / "c" / upkeep.FILE_NAME
    assert coll.search_index() == "auto" and not path.exists() and isinstance(coll.searcher, VectorIndex)
    monkeypatch.setattr(upkeep, "AUTO_IVF_FROM_ROWS", CLUSTERS * PER_CLUSTER)
    coll.save_index()
    assert path.exists() and isinstance(coll.searcher, upkeep.ApproximateSearch)
    coll.set_search_index("exact")
    coll.save_index()
    assert not path.exists() and isinstance(coll.searcher, VectorIndex)
    with pytest.raises(ValueError, match="unknown search index"):
        coll.set_search_index("hnsw")


def run_loop(coll, strategy: str, rounds: int = 4, target: str = "0") -> list[list[int]]:
    labels = coll.store.labels_by_id()
    trainer = Trainer.create(coll, f"t{target}", images=[min(i for i, label in labels.items() if label == target)])
    batches: list[list[int]] = []
    for _ in range(rounds):
        ids = [h.id for h in trainer.next_batch(10, strategy=strategy)]
        assert len(set(ids)) == 10 and not set(ids) & {i for b in batches for i in b}
        batches.append(ids)
        trainer.submit({i: (1.0 if labels[i] == target else -1.0) for i in ids})
    return batches


def test_top_batches_through_the_ivf_index_are_exact_searchs(tmp_path):
    batches = {}
    for kind in ("ivf", "exact"):
        coll, _ = synthetic_collection(tmp_path / kind, clusters=CLUSTERS, per_cluster=PER_CLUSTER, dim=DIM)
        coll.set_search_index(kind)
        coll.save_index()
        assert isinstance(coll.searcher, upkeep.ApproximateSearch if kind == "ivf" else VectorIndex)
        batches[kind] = run_loop(coll, "top")
    assert batches["ivf"] == batches["exact"]


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["auto", "boundary", "diverse", "random"])
def test_every_strategy_runs_on_the_ivf_index_and_finds_what_exact_search_finds(tmp_path, strategy):
    found = {}
    for kind in ("ivf", "exact"):
        coll, _ = synthetic_collection(tmp_path / kind, clusters=CLUSTERS, per_cluster=PER_CLUSTER, dim=DIM)
        coll.set_search_index(kind)
        coll.save_index()
        labels = coll.store.labels_by_id()
        found[kind] = sum(
            labels[i] == target
            for target in ("0", "1", "2", "3")
            for b in run_loop(coll, strategy, target=target)
            for i in b
        )
    # The warm-up and boundary pools are approximate through the IVF, so a session's
    # draws differ from exact search's; over four sessions they find about as many of
    # the example's class.
    assert found["ivf"] >= 0.7 * found["exact"], found


@pytest.mark.parametrize("k", [1000, 5000])
def test_candidate_pools_of_boundary_and_warm_up_keep_their_recall(tmp_path, k):
    # boundary and diverse read the best 10,000 candidates, a warm-up the best 100 per
    # label: approximate pools, whose members matter, not their order.
    coll, centres = ivf_collection(tmp_path / "c")
    rng = np.random.default_rng(3)
    for q in queries(centres, n=4):
        allowed = rng.random(coll.rows()) < 0.9
        assert recall(coll, q, k, allowed) >= 0.95
        # Ranked by the codes alone, a pool's edge is blurred by their error (here 32-d
        # codes; at 10M x 512 the boundary batches drawn from such pools were exact
        # search's own, docs/bench/round-10m-with-agreement.md).
        assert recall(coll, q, k, allowed, pool=True) >= 0.8


def test_index_option_sets_the_search_index_and_stats_report_it(tmp_path, colour_folder, monkeypatch):
    monkeypatch.setattr(
        localq.encoders, "load_encoder", lambda spec="lite0", weights=None: ColorEncoder(), raising=False
    )
    runner, db = CliRunner(), str(tmp_path / "c")
    result = runner.invoke(cli, ["index", str(colour_folder), "--labels", "--db", db, "--index", "ivf"])
    assert result.exit_code == 0, result.output
    assert "building the IVF search index over 12 vectors" in result.output  # before minutes of silence
    stats = json.loads(runner.invoke(cli, ["stats", "--db", db, "--json"]).output)
    assert (stats["search_index"], stats["search"]) == ("ivf", "ivf") and stats["bytes"][upkeep.FILE_NAME] > 0
    assert "search      ivf (setting ivf" in runner.invoke(cli, ["stats", "--db", db]).output
    found = json.loads(runner.invoke(cli, ["search", "red", "-k", "3", "--db", db, "--json"]).output)["results"]
    assert [r["label"] for r in found] == ["red"] * 3
    result = runner.invoke(cli, ["index", str(colour_folder), "--db", db, "--index", "exact"])
    assert result.exit_code == 0 and not (Path(db) / upkeep.FILE_NAME).exists()
    bad = runner.invoke(cli, ["index", str(colour_folder), "--db", db, "--index", "hnsw"])
    assert bad.exit_code == 2 and "'hnsw' is not one of" in bad.output


def test_check_reports_a_stale_ivf_file_and_repair_rebuilds_it(tmp_path):
    coll, _ = ivf_collection(tmp_path / "c")
    path = tmp_path / "c" / upkeep.FILE_NAME
    assert any(f.topic == "ivf" and f.ok and "indexes 7500 rows" in f.detail for f in coll.check().findings)
    data = path.read_bytes()
    path.write_bytes(data[: data.rindex(b"{")])  # the record lost
    coll.close()
    coll = Collection.open(tmp_path / "c")
    report = coll.check()
    assert not report.ok and any(f.topic == "ivf" and not f.ok for f in report.findings)
    repaired = coll.repair()
    assert repaired.ok and f"rebuilt {upkeep.FILE_NAME}" in repaired.repaired
    assert trailer_file.read_state(path)["rows"] == 7500


def test_a_reader_behind_a_writers_newer_file_searches_exactly_then_takes_it_after_a_refresh(tmp_path):
    ivf_collection(tmp_path / "c")[0].close()
    reader = Collection.open(tmp_path / "c")
    reader.index  # this process's view: 7,500 rows
    writer = Collection.open(tmp_path / "c")
    rows = [NewImage(f"/synthetic/w{i}.png", f"hw{i}", 1, 0.0, 1, 1, None, "train") for i in range(5)]
    writer.add_images(rows, writer.index.matrix()[:5].copy())
    writer.save_index()  # vectors.ivf now indexes 7,505 rows
    assert isinstance(reader.searcher, VectorIndex) and "indexes 7505 rows, the collection 7500" in reader.ivf_problem
    assert reader.refresh()  # takes in the writer's rows
    assert isinstance(reader.searcher, upkeep.ApproximateSearch) and reader.ivf_problem is None
