import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import synthetic_collection
from localq.errors import ClassifierMismatch, InvalidScores, NothingToUndo
from localq.loop import classifier_file
from localq.loop.trainer import Trainer
from localq.loop.trainer_types import Settings


def labeler(coll, target: str):
    labels = coll.store.labels_by_id()
    return lambda hits: {h.id: (1.0 if labels[h.id] == target else -1.0) for h in hits}


def start(coll, centres, centre=0, noise=1.0, seed=1, **settings):
    """Start from a noisy version of the target centre, as a vague prompt would."""
    rng = np.random.default_rng(seed)
    q = centres[centre] + noise * rng.standard_normal(centres.shape[1]).astype(np.float32) / np.sqrt(centres.shape[1])
    path = classifier_file.save(Path(coll.root) / "start.npy", q, 0.0, model_id=coll.model_id, meta={})
    return Trainer.create(coll, "t", weights_file=path, settings=Settings(**settings))


def test_rounds_move_the_query_toward_the_target(tmp_path):
    coll, centres = synthetic_collection(tmp_path / "c", dim=32, spread=1.0)
    trainer = start(coll, centres, noise=1.5, target="0")
    label = labeler(coll, "0")
    before = trainer.evaluate().ap
    for _ in range(5):
        trainer.submit(label(trainer.next_batch(10)))
    after = trainer.evaluate()
    assert after.ap > before + 0.1 and after.ap > 0.9, (before, after)
    assert trainer.round == 5 and len(trainer.labels()) == 50


def test_prior_keeps_the_query_near_the_start(tmp_path):
    coll, centres = synthetic_collection(tmp_path / "c", dim=32, spread=1.0)
    drift = {}
    for target in ("0", "1"):
        for strength in (0.0, 10.0):
            # Random batches: both kinds of label come back whatever the prompt, so the labels can
            # judge it (the pull is what this measures, not the sampler).
            trainer = start(coll, centres, noise=1.5, prior_strength=strength, strategy="random")
            label = labeler(coll, target)
            for _ in range(3):
                trainer.submit(label(trainer.next_batch(10)))
            drift[target, strength] = float(trainer.query @ trainer.prior)
            coll.store.delete_classifier(trainer.row.id)
    # A labeler who wants what the prompt points at: the stronger prior keeps the query nearer it.
    assert drift["0", 10.0] > drift["0", 0.0] + 0.05, drift
    # One who wants something else ranks the prompt's best images negative: the pull is dropped
    # (localq.loop.fit.prompt_agreement), whatever the strength.
    assert drift["1", 10.0] == pytest.approx(drift["1", 0.0]), drift


def test_a_round_never_returns_seen_ids(tmp_path):
    coll, centres = synthetic_collection(tmp_path / "c", clusters=2, per_cluster=30)
    trainer = start(coll, centres)
    label = labeler(coll, "0")
    seen = set()
    for _ in range(6):
        batch = trainer.next_batch(10)
        ids = {h.id for h in batch}
        assert not ids & seen and len(ids) == 10
        seen |= ids
        trainer.submit(label(batch))
    assert trainer.next_batch(10) == []  # all 60 seen
    assert trainer.reset_seen() == 60
    assert len(trainer.next_batch(10)) == 10


def test_each_classifier_keeps_its_own_seen_set(tmp_path):
    coll, centres = synthetic_collection(tmp_path / "c", clusters=2, per_cluster=30)
    a = start(coll, centres)
    a.submit(labeler(coll, "0")(a.next_batch(10)))
    b = Trainer.create(coll, "b", images=[0])
    assert len(b.next_batch(60)) == 60
    b.reset_seen()
    assert len(a.next_batch(60)) == 50


def test_undo_restores_the_exact_previous_state(tmp_path):
    coll, centres = synthetic_collection(tmp_path / "c")
    trainer = start(coll, centres)
    label = labeler(coll, "0")
    trainer.submit(label(trainer.next_batch(10)))
    state = (
        trainer.round,
        trainer.weights.copy(),
        trainer.bias,
        trainer.labels(),
        set(coll.store.seen_ids(trainer.row.id)),
    )
    batch = trainer.next_batch(10)
    trainer.submit(label(batch))
    first = next(iter(state[3]))
    trainer.relabel(first, -state[3][first])
    trainer.undo()
    trainer.undo()
    assert trainer.round == state[0]
    np.testing.assert_array_equal(trainer.weights, state[1])
    assert trainer.bias == state[2] and trainer.labels() == state[3]
    assert set(coll.store.seen_ids(trainer.row.id)) == state[4]
    trainer.undo()
    with pytest.raises(NothingToUndo):
        trainer.undo()


def test_relabel_changes_one_label_and_keeps_history(tmp_path):
    coll, centres = synthetic_collection(tmp_path / "c")
    trainer = start(coll, centres)
    batch = trainer.next_batch(5)
    trainer.submit({h.id: 1.0 for h in batch})
    trainer.relabel(batch[0].id, -0.5)
    assert trainer.labels()[batch[0].id] == -0.5
    assert [(r, s) for r, i, s in coll.store.label_history(trainer.row.id) if i == batch[0].id] == [(1, 1.0), (2, -0.5)]


@pytest.mark.parametrize("bad", [{0: float("nan")}, {0: 1.5}, {0: -1.01}, {10**6: 1.0}, {"x": 1.0}, {}])
def test_invalid_scores_are_rejected_and_nothing_is_written(tmp_path, bad):
    coll, centres = synthetic_collection(tmp_path / "c")
    trainer = start(coll, centres)
    with pytest.raises(InvalidScores):
        trainer.submit(bad)
    assert trainer.round == 0 and trainer.labels() == {} and len(coll.store.seen_ids()) == 0


def test_scores_outside_the_batch_are_rejected(tmp_path):
    coll, centres = synthetic_collection(tmp_path / "c")
    trainer = start(coll, centres)
    batch_ids = {h.id for h in trainer.next_batch(5)}
    outsider = next(i for i in range(1000) if i not in batch_ids)
    with pytest.raises(InvalidScores, match="not in the current batch"):
        trainer.submit({outsider: 1.0})
    assert trainer.round == 0


def test_save_then_load_gives_identical_weights(tmp_path):
    coll, centres = synthetic_collection(tmp_path / "c")
    trainer = start(coll, centres)
    trainer.submit(labeler(coll, "0")(trainer.next_batch(10)))
    for name in ("clf.safetensors", "clf.npy"):
        path = trainer.save(tmp_path / name)
        loaded = classifier_file.load(path)
        np.testing.assert_array_equal(loaded.weight, trainer.weights)
        assert loaded.bias == pytest.approx(trainer.bias) and loaded.model_id == coll.model_id
        assert loaded.meta["rounds"] == "1"
        again = Trainer.create(coll, f"from-{name}", weights_file=path)
        np.testing.assert_array_equal(again.weights, trainer.weights)


def test_torch_state_dict_is_accepted(tmp_path):
    coll, _ = synthetic_collection(tmp_path / "c", dim=32)
    layer = torch.nn.Linear(32, 1)
    torch.save(layer.state_dict(), tmp_path / "linear.pt")
    trainer = Trainer.create(coll, "pt", weights_file=tmp_path / "linear.pt")
    np.testing.assert_allclose(trainer.weights, layer.weight.detach().numpy()[0])
    assert trainer.bias == pytest.approx(float(layer.bias.detach()[0]))


def test_mismatched_classifier_is_refused(tmp_path):
    coll, _ = synthetic_collection(tmp_path / "c", dim=32)
    wrong_dim = classifier_file.save(tmp_path / "w.safetensors", np.ones(16), 0.0, model_id=coll.model_id, meta={})
    with pytest.raises(ClassifierMismatch, match="dimension 16"):
        Trainer.create(coll, "x", weights_file=wrong_dim)
    wrong_model = classifier_file.save(
        tmp_path / "m.safetensors", np.ones(32), 0.0, model_id="open_clip:RN50:abc", meta={}
    )
    with pytest.raises(ClassifierMismatch, match="open_clip:RN50"):
        Trainer.create(coll, "y", weights_file=wrong_model)
    assert coll.store.classifiers() == []


def test_predict_lists_positives_sorted(tmp_path):
    coll, centres = synthetic_collection(tmp_path / "c", spread=0.5)
    trainer = start(coll, centres, noise=0.3)
    label = labeler(coll, "0")
    for _ in range(3):
        trainer.submit(label(trainer.next_batch(10)))
    preds = trainer.predict()
    scores = [p.score for p in preds]
    assert scores == sorted(scores, reverse=True) and all(s > 0 for s in scores)
    top = [p.label for p in preds[:50]]
    assert top.count("0") >= 45


@pytest.mark.slow
def test_labels_survive_a_process_killed_mid_round(tmp_path):
    coll, centres = synthetic_collection(tmp_path / "c")
    start(coll, centres)
    coll.close()
    script = textwrap.dedent(f"""
        import os, signal
        import localq.loop.trainer as t
        from localq.collection.collection import Collection
        coll = Collection.open({str(tmp_path / "c")!r})
        trainer = t.Trainer.open(coll, "t")
        labels = coll.store.labels_by_id()
        batch = trainer.next_batch(10)
        trainer.submit({{h.id: 1.0 if labels[h.id] == "0" else -1.0 for h in batch}})
        def die(*a, **k):
            os.kill(os.getpid(), signal.SIGKILL)
        t.fit_linear = die   # the second round dies while fitting
        batch = trainer.next_batch(10)
        trainer.submit({{h.id: 1.0 for h in batch}})
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()
    from localq.collection.collection import Collection

    with Collection.open(tmp_path / "c") as again:
        trainer = Trainer.open(again, "t")
        assert trainer.round == 1 and len(trainer.labels()) == 10
        assert len(again.store.seen_ids(trainer.row.id)) == 10


def test_the_labels_and_their_rows_kept_between_rounds_are_the_stores(tmp_path, monkeypatch):
    """The Trainer keeps the current labels and the labeled rows from round to round: they
    stay what the store and the vectors say (and each round's label count what a count
    over every label gives) through new labels, a changed label, an undo and a round
    written by another Trainer (another process), and a round reads only the rows of
    images labeled since."""
    import localq.loop.trainer as trainer_module

    coll, centres = synthetic_collection(tmp_path / "c", dim=32, spread=1.0)
    trainer = start(coll, centres, noise=1.5, strategy="random")
    other = Trainer.open(coll, "t")
    matrix = coll.index.matrix()
    read = []

    class Counting:  # the index as HeldRows sees it, counting the rows it reads
        def __init__(self, index):
            self.index, self.dim = index, index.dim

        def rows(self, ids):
            read.append(len(ids))
            return self.index.rows(ids)

    real_of = trainer_module.HeldRows.of
    monkeypatch.setattr(trainer_module.HeldRows, "of", lambda held, index, ids: real_of(held, Counting(index), ids))

    def check():
        labels = trainer.labels()
        assert list(labels.items()) == list(coll.store.current_labels(trainer.row.id).items())
        assert coll.store.latest_round(trainer.row.id).n_labels == len(labels)  # counted from the round before
        ids = np.fromiter(labels, np.int64)
        np.testing.assert_array_equal(trainer._labeled_rows.of(coll.index, ids), np.asarray(matrix)[ids])

    for _ in range(3):
        batch = trainer.next_batch(10)
        trainer.submit({h.id: (1.0 if h.id % 3 else -1.0) for h in batch})
        check()
    read.clear()
    batch = trainer.next_batch(10)
    trainer.submit({h.id: 1.0 for h in batch})
    assert sum(read) <= 10, read  # the new labels' rows alone: not all 40 again, nor the background
    first = next(iter(trainer.labels()))
    trainer.relabel(first, 0.5)  # a changed label moves to the latest round
    check()
    assert list(trainer.labels())[-1] == first
    trainer.undo()
    check()
    other.submit({h.id: -1.0 for h in other.next_batch(5)})  # another process's round
    check()
    assert len(trainer.labels()) == 45


def test_held_rows_are_the_rows_asked_for_whatever_the_ids_do(tmp_path):
    """HeldRows answers index.rows(ids) through appends, reorders, drops and new ids mixed in,
    reading from the file only the ids it does not hold, in one array that grows by steps."""
    from localq.loop.trainer import HeldRows
    from localq.search.exact import VectorIndex

    x = np.random.default_rng(0).standard_normal((3000, 16)).astype(np.float32)
    index = VectorIndex.open(tmp_path / "vectors.npy", 16)
    index.add(x)
    rng = np.random.default_rng(1)
    held, ids = HeldRows(), np.empty(0, np.int64)
    buffers = set()
    for step in range(200):
        change = step % 5
        fresh = rng.choice(np.setdiff1d(np.arange(3000), ids), 10, replace=False)
        if change < 3:  # a round of new labels
            ids = np.concatenate([ids, fresh])
        elif change == 3 and len(ids) > 20:  # an undone round, or a changed label moving to the end
            ids = ids[:-10] if step % 2 else np.concatenate([np.delete(ids, 5), ids[5:6]])
        else:  # another process's rounds: some new, in another order
            ids = rng.permutation(np.concatenate([ids, fresh[:3]]))
        rows = held.of(index, ids)
        np.testing.assert_array_equal(rows, x[ids])
        assert not rows.flags.writeable
        buffers.add(id(held._buffer))
    assert len(buffers) < 40  # grown now and then, not a new array per call
