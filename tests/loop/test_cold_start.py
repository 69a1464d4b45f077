"""A person breaking a cold start through the API: another prompt, more like this, an example image.

Runs on a real collection of PNGs (SQLite + FAISS on disk) embedded by the colour test
encoder, so "red" retrieves red images and a red file is near the red ones."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import ColorEncoder, OtherEncoder, synthetic_collection, write_image
from localq.collection.collection import Collection
from localq.errors import BadImage, EncoderMismatch, ImageNotFound, InvalidPrompt, InvalidScores, LocalqError
from localq.ingest.indexer import index_paths
from localq.loop.trainer import Trainer
from localq.loop.trainer_types import COLD_ROUNDS, Settings


@pytest.fixture
def colours(colour_folder, tmp_path):
    """12 images (red, green, blue; 3 train + 1 val each) and a classifier started from a wrong prompt."""
    coll = Collection.open(tmp_path / "coll", create=True)
    index_paths(coll, [colour_folder], ColorEncoder(), with_labels=True)
    # near_copy=1: the images of one colour are identical, each a copy of the others; these
    # tests are about prompt batches, not about skipping copies.
    trainer = Trainer.create(
        coll, "reds", prompt="blue", settings=Settings(k=3, target="red", strategy="top", near_copy=1.0)
    )
    yield coll, trainer
    coll.close()


def seen(trainer) -> set[int]:
    return set(trainer.store.seen_ids(trainer.row.id).tolist())


def labels_of(coll, hits) -> list[str]:
    return coll.labels_of([h.id for h in hits])


def test_a_prompt_batch_is_labeled_into_the_same_classifier_and_recorded(colours):
    coll, trainer = colours
    assert set(labels_of(coll, trainer.next_batch())) == {"blue"}  # the wrong start: no red in sight
    batch = trainer.batch_for_prompt("a red thing")
    assert labels_of(coll, batch) == ["red"] * 3 and trainer.pending == batch
    trainer.submit({h.id: 1.0 for h in batch})
    assert trainer.history()[-1].strategy == "prompt:a red thing"
    assert seen(trainer) == {h.id for h in batch} and trainer.labels() == {h.id: 1.0 for h in batch}
    again = trainer.batch_for_prompt("red")  # unseen only: the last red one, then the nearest others
    assert not {h.id for h in again} & seen(trainer) and labels_of(coll, again)[0] == "red"
    assert trainer.summary().positives == 3 and trainer.target_label() == "red"


def test_a_prompt_batch_respects_the_pool_split(colours):
    coll, trainer = colours
    trainer.update_settings(pool_split="train")
    ids = [h.id for h in trainer.batch_for_prompt("red", k=12)]
    assert len(ids) == 9 and set(coll.store.images(ids)[i].split for i in range(9)) == {"train"}


def test_undo_of_a_prompt_round_restores_the_earlier_state(colours):
    coll, trainer = colours
    trainer.submit({h.id: -1.0 for h in trainer.next_batch()})
    before = (trainer.round, trainer.weights.copy(), trainer.labels(), seen(trainer))
    trainer.submit({h.id: 1.0 for h in trainer.batch_for_prompt("red")})
    trainer.undo()
    assert (trainer.round, trainer.labels(), seen(trainer)) == (before[0], before[2], before[3])
    np.testing.assert_array_equal(trainer.weights, before[1])
    assert [r.strategy for r in trainer.history()] == [None, "top"]


@pytest.mark.parametrize("text", ["", "   ", None])
def test_an_empty_prompt_is_refused(colours, text):
    _, trainer = colours
    with pytest.raises(InvalidPrompt, match="empty"):
        trainer.batch_for_prompt(text)
    assert trainer.pending == [] and trainer.round == 0


def test_more_like_this_gives_unseen_neighbours_and_is_recorded(colours):
    coll, trainer = colours
    red = next(i for i, label in coll.store.labels_by_id().items() if label == "red")
    batch = trainer.batch_like(red)
    assert red not in {h.id for h in batch} and labels_of(coll, batch) == ["red"] * 3
    trainer.submit({batch[0].id: 1.0, batch[1].id: 1.0})  # the third left unscored: still seen
    assert trainer.history()[-1].strategy == f"like:{red}" and seen(trainer) == {h.id for h in batch}
    rest = trainer.batch_like(red, k=12)
    assert len(rest) == 12 - 1 - 3 and not {h.id for h in rest} & seen(trainer)


@pytest.mark.parametrize("bad", [10**6, -1, "x", None])
def test_more_like_this_refuses_unknown_ids(colours, bad):
    _, trainer = colours
    with pytest.raises(ImageNotFound):
        trainer.batch_like(bad)


def test_an_image_of_the_collection_becomes_an_example_round(colours):
    coll, trainer = colours
    batch = trainer.next_batch()  # a batch on screen survives an example added meanwhile
    red = next(i for i, label in coll.store.labels_by_id().items() if label == "red")
    row = trainer.add_example(red)
    assert row.round == 1 and row.strategy == f"example:{red}" and row.n_labels == 1
    assert trainer.labels() == {red: 1.0} and seen(trainer) == {red}
    assert trainer.pending == batch
    trainer.submit({batch[0].id: -1.0})
    assert [r.strategy for r in trainer.history()] == [None, f"example:{red}", "top"]
    assert trainer.labels() == {red: 1.0, batch[0].id: -1.0}
    assert trainer.add_example(str(red), score=-0.5).strategy == f"example:{red}"  # a digit string is an id
    assert trainer.labels()[red] == -0.5


def test_a_file_outside_the_collection_is_indexed_then_labeled(colours, tmp_path):
    coll, trainer = colours
    rows = coll.store.n_rows()
    fox = write_image(tmp_path / "elsewhere" / "fox.png", (230, 30, 20))
    weights = trainer.weights.copy()
    row = trainer.add_example(fox)
    new_id = coll.id_of_path(fox)
    assert new_id == rows and coll.store.n_rows() == rows + 1 and coll.index.ntotal == rows + 1
    assert row.strategy == "example:fox.png" and trainer.labels() == {new_id: 1.0} and seen(trainer) == {new_id}
    assert not np.array_equal(trainer.weights, weights)  # fitted on it
    # The new image is a real member of the collection: search finds it, more-like-this works from it.
    assert new_id in {h.id for h in coll.search_text("red", k=5)}
    assert set(labels_of(coll, trainer.batch_like(new_id))) == {"red"}
    trainer.pending = []
    # The same file again is the same image, not a second row.
    trainer.add_example(str(fox), score=0.5)
    assert coll.store.n_rows() == rows + 1 and trainer.labels() == {new_id: 0.5}
    # Undo drops the rounds; the image stays indexed (it is part of the collection now).
    trainer.undo()
    trainer.undo()
    assert trainer.round == 0 and trainer.labels() == {} and seen(trainer) == set()
    np.testing.assert_array_equal(trainer.weights, weights)
    assert coll.id_of_path(fox) == new_id


def test_a_reopened_collection_indexes_an_example_with_its_own_encoder(colours, tmp_path):
    coll, trainer = colours
    root = coll.root
    coll.close()
    with Collection.open(root) as again:
        again.bind_encoder(ColorEncoder())  # stands in for the registry loading the collection's encoder
        t = Trainer.open(again, "reds")
        t.add_example(write_image(tmp_path / "x" / "red.jpg", (240, 10, 10)))
        assert t.history()[-1].strategy == "example:red.jpg" and len(t.labels()) == 1


def test_bad_example_files_are_refused_and_nothing_is_written(colours, tmp_path):
    coll, trainer = colours
    rows = coll.store.n_rows()
    (tmp_path / "broken.png").write_bytes(b"not an image at all")
    (tmp_path / "empty.jpg").write_bytes(b"")
    cases = [
        (tmp_path / "missing.png", ImageNotFound, "no image file"),
        (tmp_path, ImageNotFound, "folder"),
        (tmp_path / "broken.png", BadImage, "not an image"),
        (tmp_path / "empty.jpg", BadImage, "empty file"),
        ("", ImageNotFound, "no image file"),
    ]
    for path, error, message in cases:
        with pytest.raises(error, match=message) as info:
            trainer.add_example(path)
        assert "\n" not in str(info.value)
    with pytest.raises(ImageNotFound, match="not in the collection"):
        trainer.add_example(10**6)
    assert trainer.round == 0 and trainer.labels() == {} and coll.store.n_rows() == rows
    assert coll.store.skipped() == []  # a typo is not recorded as a skipped file of the collection


def test_an_example_embedded_by_another_model_is_refused(colours, tmp_path):
    coll, trainer = colours
    fox = write_image(tmp_path / "fox.png", (230, 30, 20))
    with pytest.raises(EncoderMismatch, match="test-colour/v1"):
        trainer.add_example(fox, encoder=OtherEncoder())
    assert trainer.round == 0 and coll.id_of_path(fox) is None


def test_an_example_from_the_held_out_split_is_refused(colours):
    coll, trainer = colours
    trainer.update_settings(pool_split="train")
    val_red = next(i for i, label, split in coll.store.labels_with_split() if split == "val" and label == "red")
    with pytest.raises(InvalidScores, match="held out"):
        trainer.add_example(val_red)
    assert trainer.round == 0


def test_the_summary_says_when_the_loop_is_cold(tmp_path):
    coll, centres = synthetic_collection(tmp_path / "c", clusters=4, per_cluster=50, dim=16)
    labels = coll.store.labels_by_id()
    trainer = Trainer.create(coll, "t", images=[0], settings=Settings(k=5))
    target = labels[0]
    assert not trainer.summary().cold  # nothing labeled yet: nothing to warn about

    def negatives_only():
        batch = [h for h in trainer.next_batch(40, strategy="random") if labels[h.id] != target][:5]
        trainer.pending = batch
        return trainer.submit({h.id: -1.0 for h in batch})

    negatives_only()
    s = trainer.summary()
    assert s.cold and s.positives == 0 and s.last_round_positives == 0 and s.last_round_labels == 5
    trainer.add_example(0)
    s = trainer.summary()
    assert not s.cold and s.positives == 1 and s.last_round_positives == 1 and s.rounds_without_positive == 0
    for i in range(COLD_ROUNDS):
        negatives_only()
        assert trainer.summary().cold == (i + 1 >= COLD_ROUNDS)
    assert trainer.summary().rounds_without_positive == COLD_ROUNDS
    trainer.undo()
    assert not trainer.summary().cold


def test_k_must_be_positive(colours):
    _, trainer = colours
    with pytest.raises(LocalqError, match="k=0"):
        trainer.batch_for_prompt("red", k=0)


def test_train_adds_examples_before_the_ui_opens(tmp_path, colour_folder, monkeypatch):
    from click.testing import CliRunner

    import localq.encoders
    import localq.tui.app
    from localq.cli import cli

    monkeypatch.setattr(
        localq.encoders, "load_encoder", lambda spec="lite0", weights=None: ColorEncoder(), raising=False
    )
    opened = []
    monkeypatch.setattr(localq.tui.app, "run_train", lambda coll, trainer, **kw: opened.append(trainer.round))
    runner, db = CliRunner(), str(tmp_path / "c")
    assert runner.invoke(cli, ["index", str(colour_folder), "--labels", "--db", db]).exit_code == 0
    fox = write_image(tmp_path / "fox.png", (230, 30, 20))
    result = runner.invoke(
        cli, ["train", "blue", "--name", "reds", "--example", str(fox), "--example", "0", "--db", db]
    )
    assert result.exit_code == 0, result.output
    assert opened == [2] and "added" in result.output
    with Collection.open(db) as coll:
        history = [r.strategy for r in Trainer.open(coll, "reds").history()]
    assert history == [None, "example:fox.png", "example:0"]
    bad = runner.invoke(cli, ["train", "--classifier", "reds", "--example", str(tmp_path / "nope.jpg"), "--db", db])
    assert bad.exit_code == 1 and bad.output.strip().splitlines()[-1].startswith("error: no image file at")
    assert opened == [2]  # the UI did not open
