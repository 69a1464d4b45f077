"""Each image's current label, read every round, costs one pass over an index however
many labels a classifier holds (issue 21: 1.3 s a call at 7,000 labels, a subquery per
label). The index comes from a named migration, so a collection made by an older localq
opens unchanged and gains it. scripts/bench_round.py --label-scales times whole rounds."""

from __future__ import annotations

import shutil
import sqlite3
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import synthetic_collection
from localq.collection.collection import Collection

pytestmark = pytest.mark.slow  # 10,000 labels

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


def _classifier(coll) -> int:
    w = np.ones(coll.dim, np.float32)
    return coll.store.create_classifier("c", source="prompt", prompt=None, prior=w, weights=w, bias=0.0, settings={}).id


def test_current_labels_are_each_images_latest_in_the_order_given(tmp_path):
    coll, _ = synthetic_collection(tmp_path / "c", per_cluster=20)
    cid = _classifier(coll)
    w = np.ones(coll.dim, np.float32)
    rounds = [{5: 1.0, 2: -1.0}, {7: 0.5, 5: -1.0}, {2: 0.0, 9: 1.0}]
    for r, scores in enumerate(rounds, start=1):
        coll.store.commit_round(cid, r, scores, scores, w, 0.0, None)
    assert list(coll.store.current_labels(cid).items()) == [(5, -1.0), (7, 0.5), (2, 0.0), (9, 1.0)]
    coll.store.undo_round(cid, 3)
    assert coll.store.current_labels(cid) == {5: -1.0, 7: 0.5, 2: -1.0}


def test_ten_thousand_labels_read_in_well_under_a_second(tmp_path):
    coll, _ = synthetic_collection(tmp_path / "c", clusters=10, per_cluster=1200, dim=8)
    cid = _classifier(coll)
    w = np.ones(coll.dim, np.float32)
    rng = np.random.default_rng(0)
    given = rng.permutation(12000)[:10000]
    with coll.store.transaction() as c:  # 1,000 rounds of 10, as a long session leaves them
        c.executemany(
            "INSERT INTO labels(classifier_id, round, image_id, score, at) VALUES (?, ?, ?, ?, '')",
            [(cid, 1 + n // 10, int(i), 1.0) for n, i in enumerate(given)],
        )
        c.execute("UPDATE classifiers SET round = 1000 WHERE id = ?", (cid,))
    coll.store.commit_round(cid, 1001, {int(given[0]): -1.0}, [], w, 0.0, None)
    t0 = time.perf_counter()
    labels = coll.store.current_labels(cid)
    seconds = time.perf_counter() - t0
    assert len(labels) == 10000 and labels[int(given[0])] == -1.0
    assert seconds < 1.0, f"{seconds:.2f} s for 10,000 labels (a subquery per label took ~13 s)"


def test_a_collection_from_an_older_localq_gains_the_index_and_keeps_its_labels(tmp_path):
    root = tmp_path / "coll"
    shutil.copytree(FIXTURES / "collection-0.1.0", root)

    def labels():
        conn = sqlite3.connect(root / "localq.db")
        try:
            return conn.execute("SELECT * FROM labels ORDER BY 1, 2, 3").fetchall()
        finally:
            conn.close()

    before = labels()
    with Collection.open(root) as coll:
        indexes = {r[0] for r in coll.store.conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
        done = {r[0] for r in coll.store.conn.execute("SELECT name FROM _migrations")}
    assert "labels_by_image" in indexes and "m007_labels_by_image" in done
    assert labels() == before
