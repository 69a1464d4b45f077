"""Real processes racing on one collection: index + index, train + train, search + index."""

from __future__ import annotations

import json
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from localq.collection.collection import Collection
from localq.errors import CollectionBusy, StaleClassifier
from localq.loop.trainer import Trainer
from localq.storage.locking import WriteLock
from localq.storage.vector_file import header
from reliability.helpers import (
    assert_one_line_error,
    popen_cli,
    popen_python,
    run_cli,
    snapshot,
    vectors_match_images,
    write_folder,
)

pytestmark = pytest.mark.slow  # races real processes

concurrency = pytest.mark.reliability("concurrency")


def _wait_all(procs, timeout=300):
    out = []
    for p in procs:
        stdout, stderr = p.communicate(timeout=timeout)
        out.append((p.returncode, stdout, stderr))
    return out


def _search_finds_each_image_first(db):
    """Each image file's embedding, as a query, must return that image first: rows match ids."""
    from PIL import Image

    from conftest import ColorEncoder

    with Collection.open(db) as coll:
        rows = coll.store.live_files()
        for path, row in rows.items():
            hits = coll.search(ColorEncoder().encode_images([Image.open(path)])[0], k=1)
            assert hits[0].id == row.id and hits[0].path == path


@concurrency
@pytest.mark.parametrize("trial", range(2))
def test_two_index_runs_on_different_folders_keep_vectors_aligned(tmp_path, trial):
    """The issue's silent corruption: two `localq index` at once, different folders."""
    a = write_folder(tmp_path / "a", 48, seed=10 + trial, prefix="a")
    b = write_folder(tmp_path / "b", 48, seed=20 + trial, prefix="b")
    db = tmp_path / "coll"
    procs = [popen_cli("index", folder, "--db", db, "-q", "--batch-size", "4") for folder in (a, b)]
    results = _wait_all(procs)
    for rc, _, stderr in results:
        assert rc == 0, stderr
        assert "Traceback" not in stderr
    vectors_match_images(db)
    _search_finds_each_image_first(db)
    check = run_cli("check", "--db", db)
    assert check.returncode == 0, check.stdout + check.stderr


@concurrency
@pytest.mark.parametrize("trial", range(2))
def test_two_index_runs_on_one_folder_insert_each_path_once(tmp_path, trial):
    folder = write_folder(tmp_path / "pics", 60, seed=trial)
    db = tmp_path / "coll"
    results = _wait_all([popen_cli("index", folder, "--db", db, "-q", "--batch-size", "4") for _ in range(2)])
    for rc, _, stderr in results:
        assert rc == 0, stderr
        assert "UNIQUE" not in stderr and "Traceback" not in stderr
    with Collection.open(db) as coll:
        live = coll.store.live_files()
        assert len(live) == 60
    vectors_match_images(db)
    _search_finds_each_image_first(db)


_TRAIN = textwrap.dedent("""
    import json, sys
    from localq.collection.collection import Collection
    from localq.loop.trainer import Trainer
    db, seed = sys.argv[1], int(sys.argv[2])
    coll = Collection.open(db)
    t = Trainer.open(coll, "race")
    sent = []
    for r in range(6):
        batch = t.next_batch(4)
        scores = {h.id: (1.0 if (h.id + seed) % 2 else -1.0) for h in batch}
        t.submit(scores)
        sent.append(scores)
    print(json.dumps([{str(k): v for k, v in s.items()} for s in sent]))
""")


def _train_script(db, seed):
    return f"import sys; sys.argv = ['x', {str(db)!r}, '{seed}']\n" + _TRAIN


@concurrency
@pytest.mark.parametrize("trial", range(2))
def test_two_processes_training_one_classifier_lose_nothing(tmp_path, trial, colour_encoder):
    folder = write_folder(tmp_path / "pics", 80, seed=trial)
    db = tmp_path / "coll"
    assert run_cli("index", folder, "--db", db, "-q").returncode == 0
    with Collection.open(db) as coll:
        coll.bind_encoder(colour_encoder)
        Trainer.create(coll, "race", prompt="red")
    procs = [popen_python(_train_script(db, seed)) for seed in (0, 1)]
    results = _wait_all(procs)
    sent = []
    for rc, stdout, stderr in results:
        assert rc == 0, stderr
        sent += json.loads(stdout)
    with Collection.open(db) as coll:
        t = Trainer.open(coll, "race")
        assert t.round == 12
        assert [r.round for r in t.history()] == list(range(13))
        history = coll.store.label_history(t.row.id)
    # Every submitted label is stored, each batch as one round of its own.
    stored = {}
    for rnd, image_id, score in history:
        stored.setdefault(rnd, {})[image_id] = score
    assert sorted(map(sorted, (s.items() for s in stored.values()))) == sorted(
        map(sorted, ({int(k): v for k, v in s.items()}.items() for s in sent))
    )
    assert run_cli("check", "--db", db).returncode == 0


_READER = textwrap.dedent("""
    import sys, numpy as np
    from PIL import Image
    sys.path.insert(0, %r)
    from conftest import ColorEncoder
    from localq.collection.collection import Collection
    from localq.loop.trainer import Trainer
    db, n = sys.argv[1], int(sys.argv[2])
    def embedding(coll, image_id):  # what the image's file embeds to: its row must hold exactly that
        return ColorEncoder().encode_images([Image.open(coll.image_rows([image_id])[0].path)])[0]
    calls = 0
    for _ in range(n):
        with Collection.open(db) as coll:
            t = Trainer.open(coll, "reader")
            preds = t.predict(threshold=-10.0)
            ids = [p.id for p in preds]
            assert len(ids) == len(set(ids))
            for p in preds[:5]:   # the score printed is the score of that image's own vector
                v = embedding(coll, p.id)
                assert abs(float(v @ t.weights + t.bias) - p.score) < 1e-4
            hits = coll.search(t.query, k=5)
            for h in hits:
                v = embedding(coll, h.id)
                assert abs(float(v @ t.query) - h.score) < 1e-4, (h, float(v @ t.query))
            calls += 1
    print(calls)
""") % str(Path(__file__).resolve().parents[1])


@concurrency
@pytest.mark.parametrize("trial", range(2))
def test_search_and_predict_while_indexing_are_never_wrong(tmp_path, trial, colour_encoder):
    first = write_folder(tmp_path / "first", 30, seed=trial)
    more = write_folder(tmp_path / "more", 120, seed=100 + trial)
    db = tmp_path / "coll"
    assert run_cli("index", first, "--db", db, "-q").returncode == 0
    with Collection.open(db) as coll:
        coll.bind_encoder(colour_encoder)
        Trainer.create(coll, "reader", prompt="red")
    indexer = popen_cli("index", more, "--db", db, "-q", "--batch-size", "2")
    reader = popen_python(f"import sys; sys.argv = ['x', {str(db)!r}, '15']\n" + _READER)
    (irc, _, ierr), (rrc, rout, rerr) = _wait_all([indexer, reader])
    assert irc == 0, ierr
    assert rrc == 0, rerr
    assert int(rout) == 15
    vectors_match_images(db)


@concurrency
def test_predict_in_one_process_during_an_index_never_raises(tmp_path, colour_encoder):
    """The issue's broadcast ValueError: a long-lived Trainer while rows are appended."""
    first = write_folder(tmp_path / "first", 20, seed=1)
    more = write_folder(tmp_path / "more", 120, seed=2)
    db = tmp_path / "coll"
    assert run_cli("index", first, "--db", db, "-q").returncode == 0
    with Collection.open(db) as coll:
        coll.bind_encoder(colour_encoder)
        t = Trainer.create(coll, "p", prompt="red")
        indexer = popen_cli("index", more, "--db", db, "-q", "--batch-size", "2")
        calls = 0
        while indexer.poll() is None or calls < 50:
            t.predict(threshold=-10.0)
            t.evaluate()
            coll.search(t.query, k=3, unseen=t.row.id)
            calls += 1
        assert indexer.returncode == 0, indexer.stderr.read()
        # The long-lived view catches up at its next write.
        t.submit({h.id: 1.0 for h in t.next_batch(2)})
        assert coll.rows() == 140


@concurrency
def test_a_second_writer_waits_with_a_message_then_proceeds(tmp_path):
    folder = write_folder(tmp_path / "pics", 6, seed=0)
    db = tmp_path / "coll"
    assert run_cli("index", folder, "--db", db, "-q").returncode == 0
    lock = WriteLock(db)
    lock.acquire()
    proc = popen_cli("reset", "--db", db, extra_env={"LOCALQ_LOCK_TIMEOUT": "60"})
    time.sleep(3)
    assert proc.poll() is None, "the second writer must wait, not fail"
    lock.release()
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, stderr
    assert "waiting for another localq process" in stderr


@concurrency
def test_a_second_writer_fails_in_one_line_when_told_not_to_wait(tmp_path):
    folder = write_folder(tmp_path / "pics", 6, seed=0)
    db = tmp_path / "coll"
    assert run_cli("index", folder, "--db", db, "-q").returncode == 0
    before = snapshot(db)
    with WriteLock(db).hold():
        for args in (("reset", "--db", db), ("index", folder, "--db", db, "-q"), ("repair", "--db", db)):
            proc = run_cli(*args, extra_env={"LOCALQ_LOCK_TIMEOUT": "0"})
            assert_one_line_error(proc, "another localq process is writing")
        # Readers never take the lock.
        assert run_cli("search", "red", "--db", db, extra_env={"LOCALQ_LOCK_TIMEOUT": "0"}).returncode == 0
        assert run_cli("stats", "--db", db, extra_env={"LOCALQ_LOCK_TIMEOUT": "0"}).returncode == 0
    before.assert_kept_in(snapshot(db))


@concurrency
def test_rows_a_killed_writer_left_past_the_database_are_never_read_and_overwritten(tmp_path):
    # A writer killed between writing vectors.npy and committing SQLite leaves rows the
    # database does not count: readers ignore them, the next writer writes over them.
    folder = write_folder(tmp_path / "pics", 12, seed=0)
    db = tmp_path / "coll"
    assert run_cli("index", folder, "--db", db, "-q").returncode == 0
    vectors_file = db / "vectors.npy"
    good = np.load(vectors_file)
    junk = np.concatenate([good, np.full((5, good.shape[1]), 0.3, np.float32)])
    vectors_file.write_bytes(header(len(junk), good.shape[1]) + junk.tobytes())  # its header counts them too
    proc = run_cli("search", "red", "--db", db, "-k", "20")
    assert proc.returncode == 0 and len(proc.stdout.splitlines()) == 12, proc.stdout + proc.stderr
    more = write_folder(tmp_path / "more", 3, seed=7, prefix="more")
    assert run_cli("index", more, "--db", db, "-q").returncode == 0
    vectors_match_images(db)
    assert len(np.load(vectors_file)) == 15  # the junk rows were written over, then cut off
    assert run_cli("check", "--db", db).returncode == 0


@concurrency
def test_stale_trainer_undo_never_drops_a_round_it_did_not_see(tmp_path, colour_encoder):
    folder = write_folder(tmp_path / "pics", 40, seed=3)
    db = tmp_path / "coll"
    assert run_cli("index", folder, "--db", db, "-q").returncode == 0
    with Collection.open(db) as c1, Collection.open(db) as c2:
        c1.bind_encoder(colour_encoder)
        t1 = Trainer.create(c1, "s", prompt="red")
        t1.submit({h.id: 1.0 for h in t1.next_batch(3)})
        t2 = Trainer.open(c2, "s")  # round 1
        assert t2.round == 1
        t1.submit({h.id: -1.0 for h in t1.next_batch(3)})  # round 2, unseen by t2
        before = snapshot(db)
        with pytest.raises(StaleClassifier, match="round 2"):
            t2.undo()
        before.assert_kept_in(snapshot(db))
        assert t2.round == 2  # reloaded: a second undo drops the round it now shows
        t2.undo()
        assert Trainer.open(c1, "s").round == 1


@concurrency
def test_stale_trainer_submit_becomes_the_next_round(tmp_path, colour_encoder):
    folder = write_folder(tmp_path / "pics", 40, seed=4)
    db = tmp_path / "coll"
    assert run_cli("index", folder, "--db", db, "-q").returncode == 0
    with Collection.open(db) as c1, Collection.open(db) as c2:
        c1.bind_encoder(colour_encoder)
        t1 = Trainer.create(c1, "s", prompt="red")
        t2 = Trainer.open(c2, "s")
        b2 = t2.next_batch(3)
        t1.submit({h.id: 1.0 for h in t1.next_batch(3)})
        t1.undo()
        t1.submit({h.id: -1.0 for h in t1.next_batch(3)})  # round 1 again, other weights
        row = t2.submit({h.id: 0.5 for h in b2})
        assert row.round == 2
        labels = Trainer.open(c1, "s").labels()
        assert all(labels[h.id] == 0.5 for h in b2)
        assert len(labels) == len({h.id for h in b2} | {i for i in labels})
        # The weights t2 fitted came from both rounds' labels, not its stale copy.
        assert [r.round for r in t2.history()] == [0, 1, 2]


@concurrency
def test_a_trainer_of_a_deleted_classifier_refuses_to_write(tmp_path, colour_encoder):
    folder = write_folder(tmp_path / "pics", 20, seed=5)
    db = tmp_path / "coll"
    assert run_cli("index", folder, "--db", db, "-q").returncode == 0
    with Collection.open(db) as c1, Collection.open(db) as c2:
        c1.bind_encoder(colour_encoder)
        c2.bind_encoder(colour_encoder)
        Trainer.create(c1, "d", prompt="red")
        stale = Trainer.open(c2, "d")
        batch = stale.next_batch(2)
        Trainer.create(c1, "d", prompt="blue", replace=True)
        with pytest.raises(StaleClassifier, match="deleted"):
            stale.submit({h.id: 1.0 for h in batch})


@concurrency
def test_creating_one_classifier_in_two_processes_is_one_line(tmp_path):
    folder = write_folder(tmp_path / "pics", 20, seed=6)
    db = tmp_path / "coll"
    assert run_cli("index", folder, "--db", db, "-q").returncode == 0
    code = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(__import__("pathlib").Path(__file__).resolve().parents[1])!r})
        from conftest import ColorEncoder
        from localq.collection.collection import Collection
        from localq.errors import LocalqError
        from localq.loop.trainer import Trainer
        coll = Collection.open({str(db)!r})
        coll.bind_encoder(ColorEncoder())
        try:
            Trainer.create(coll, "same", prompt="red")
            print("created")
        except LocalqError as exc:
            print("refused:", exc)
    """)
    results = _wait_all([popen_python(code) for _ in range(3)])
    outs = sorted(stdout.strip() for rc, stdout, stderr in results if rc == 0)
    assert len(outs) == 3, [r[2] for r in results]
    assert outs.count("created") == 1
    assert all("exists" in o for o in outs if o != "created")


@concurrency
def test_lock_timeout_is_a_typed_error_in_the_core(tmp_path):
    folder = write_folder(tmp_path / "pics", 4, seed=7)
    db = tmp_path / "coll"
    assert run_cli("index", folder, "--db", db, "-q").returncode == 0
    messages = []
    with WriteLock(db).hold(), Collection.open(db, on_wait=messages.append) as coll:
        coll.lock.timeout = 0.3
        with pytest.raises(CollectionBusy, match="after 0.3 s"):
            coll.store.reset_seen()
    assert len(messages) == 1 and "waiting" in messages[0]
    np.testing.assert_equal(len(snapshot(db).vectors), 4)


@concurrency
def test_a_sqlite_writer_outside_localq_is_waited_for_not_a_traceback(tmp_path):
    """busy_timeout is honoured: a transaction held for 2 s elsewhere delays a write, never fails it."""
    import sqlite3

    folder = write_folder(tmp_path / "pics", 4, seed=8)
    db = tmp_path / "coll"
    assert run_cli("index", folder, "--db", db, "-q").returncode == 0
    other = sqlite3.connect(db / "localq.db", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    proc = popen_cli("reset", "--db", db)
    time.sleep(2)
    assert proc.poll() is None
    other.execute("COMMIT")
    other.close()
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0 and "cleared" in stdout, stderr
