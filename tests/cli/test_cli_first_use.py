"""What a new user meets on the command line, typed as a person types it (a real subprocess):
a mistyped path, the demo's collection found again, predictions that say what they are,
a prompt typed where a classifier name goes, help that is not cut short, progress in a log."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from reliability.helpers import assert_one_line_error, run_cli, write_folder

from conftest import ColorEncoder, write_image
from localq.collection.collection import Collection
from localq.loop.trainer import Trainer
from localq.loop.trainer_types import Settings

pytestmark = pytest.mark.slow  # whole CLI processes


def _collection(root: Path, photos: Path, n: int = 12) -> Path:
    """``n`` red-ish images and ``n`` blue ones, indexed with the test CLI (a real subprocess)."""
    for i in range(n):
        write_image(photos / "red" / f"r{i}.png", (200 + i, 20, 20))
        write_image(photos / "blue" / f"b{i}.png", (20, 20, 200 + i))
    proc = run_cli("index", photos, "--labels", "--db", root)
    assert proc.returncode == 0, proc.stderr
    return root


def _prompt_classifier(root: Path, prompt: str, name: str) -> None:
    with Collection.open(root) as coll:
        coll.bind_encoder(ColorEncoder())
        Trainer.create(coll, name, prompt=prompt, settings=Settings(k=6))


def _fit_reds(root: Path, name: str) -> None:
    """One labeled round: every red image in the batch +1, the rest -1."""
    with Collection.open(root) as coll:
        trainer = Trainer.open(coll, name)
        trainer.next_batch(24, "random")
        trainer.submit({h.id: 1.0 if "/red/" in h.path else -1.0 for h in trainer.pending})


# -- clear failures ------------------------------------------------------------------------------


def test_predict_on_a_missing_path_is_one_line_and_exit_1(tmp_path):
    root = _collection(tmp_path / "c", tmp_path / "photos", n=2)
    _prompt_classifier(root, "red", "reds")
    proc = run_cli("predict", "reds", tmp_path / "missing", "--db", root)
    assert_one_line_error(proc, "no such file or folder", "missing")
    assert proc.stdout == ""


def test_a_missing_collection_names_the_demo_collection(tmp_path):
    """After `localq demo`, `localq stats` (no --db) is pointed at the demo's collection."""
    xdg = tmp_path / "xdg"
    demo = _collection(xdg / "localq" / "demo", tmp_path / "photos", n=2)
    env = {"XDG_DATA_HOME": str(xdg), "LOCALQ_HOME": ""}
    for args in (("stats",), ("classifiers",), ("train", "a photo of a dog"), ("predict", "reds")):
        proc = run_cli(*args, extra_env=env)
        assert_one_line_error(
            proc,
            f"no collection at {xdg / 'localq' / 'default'}",
            "collections here: demo (4 images)",
            f"use --db {demo}",
        )


def test_a_missing_collection_with_none_elsewhere_keeps_the_plain_advice(tmp_path):
    proc = run_cli("stats", extra_env={"XDG_DATA_HOME": str(tmp_path / "xdg"), "LOCALQ_HOME": ""})
    assert_one_line_error(proc, "no collection at", "localq index PATH")
    assert "collections here" not in proc.stderr


# -- predictions that say what they are -------------------------------------------------------------


def test_predict_on_an_unfitted_classifier_says_it_is_the_start_query(tmp_path):
    root = _collection(tmp_path / "c", tmp_path / "photos", n=3)
    _prompt_classifier(root, "a red photo", "reds")
    proc = run_cli("predict", "reds", "--db", root)
    assert proc.returncode == 0, proc.stderr
    assert "round 0, not yet fitted on labels" in proc.stderr and "the prompt 'a red photo' alone" in proc.stderr
    assert "localq train --classifier reds" in proc.stderr
    _fit_reds(root, "reds")
    fitted = run_cli("predict", "reds", "--db", root)
    assert fitted.returncode == 0 and "not yet fitted" not in fitted.stderr


def test_predict_limit_says_how_many_of_how_many(tmp_path):
    root = _collection(tmp_path / "c", tmp_path / "photos")
    _prompt_classifier(root, "red", "reds")
    _fit_reds(root, "reds")
    everything = run_cli("predict", "reds", "--db", root)
    total = len(everything.stdout.splitlines())
    assert total > 5 and f"{total} positive above 0.0" in everything.stderr
    limited = run_cli("predict", "reds", "--limit", "5", "--db", root)
    assert len(limited.stdout.splitlines()) == 5
    assert f"5 shown of {total} positive above 0.0" in limited.stderr
    as_json = json.loads(run_cli("predict", "reds", "--limit", "5", "--json", "--db", root).stdout)
    assert as_json["positive"] == total and len(as_json["predictions"]) == 5


def test_a_prompt_typed_for_a_classifier_name_gets_did_you_mean(tmp_path):
    root = _collection(tmp_path / "c", tmp_path / "photos", n=2)
    _prompt_classifier(root, "a photo of a church", "a-photo-of-a-church")
    for args in (
        ("predict", "a photo of a church"),
        ("history", "a photo of a church"),
        ("export", "a photo of a church", "--out", tmp_path / "out"),
    ):
        proc = run_cli(*args, "--db", root)
        assert_one_line_error(proc, "did you mean a-photo-of-a-church?")
    assert not (tmp_path / "out").exists()
    # A name that is nobody's slug keeps the rule.
    assert_one_line_error(run_cli("predict", "a photo of a dog", "--db", root), "invalid classifier name")


# -- small things ---------------------------------------------------------------------------------------


def test_export_npy_lists_every_file_it_writes(tmp_path):
    root = _collection(tmp_path / "c", tmp_path / "photos", n=2)
    _prompt_classifier(root, "red", "reds")
    _fit_reds(root, "reds")
    out = tmp_path / "out"
    proc = run_cli("export", "reds", "--format", "npy", "--out", out, "--db", root)
    assert proc.returncode == 0, proc.stderr
    listed = sorted(Path(line).name for line in proc.stdout.splitlines())
    assert (
        listed
        == sorted(p.name for p in out.iterdir())
        == ["reds-labels.csv", "reds-labels.jsonl", "reds.json", "reds.npy"]
    )


def test_check_and_repair_help_speaks_of_the_files_there_are():
    for command in ("check", "repair"):
        shown = run_cli(command, "--help").stdout
        assert "FAISS" not in shown and "vectors.npy" in shown and "IVF" in shown, shown


def test_top_level_help_does_not_cut_command_descriptions():
    proc = run_cli("--help", extra_env={"COLUMNS": "80"})
    commands = proc.stdout.split("Commands:")[1]
    assert "..." not in commands
    assert "classifiers' rounds" not in commands  # only the first sentence: check's details stay in `check --help`
    assert "fitted\n               weights." in commands or "fitted weights." in commands


def test_progress_written_to_a_pipe_is_plain_lines(tmp_path):
    photos = write_folder(tmp_path / "photos", 30, seed=1)
    proc = run_cli("index", photos, "--db", tmp_path / "c")  # stderr is a pipe, as in a log or CI
    assert proc.returncode == 0, proc.stderr
    assert "\r" not in proc.stderr and "[###" not in proc.stderr
    progress = [line for line in proc.stderr.splitlines() if line.startswith("indexing ")]
    assert progress and progress[-1].startswith("indexing 30/30 (100%)")
    assert len(progress) <= 3  # a line now and then, not one per batch


def test_classifiers_names_the_target_class_not_its_wordnet_id(tmp_path):
    photos = tmp_path / "photos"
    for i in range(4):
        write_image(photos / "n03028079" / f"c{i}.png", (200 + i, 20, 20))  # church
        write_image(photos / "n01440764" / f"t{i}.png", (20, 20, 200 + i))  # tench
    root = tmp_path / "c"
    assert run_cli("index", photos, "--labels", "--db", root).returncode == 0
    _prompt_classifier(root, "red", "churches")
    with Collection.open(root) as coll:
        trainer = Trainer.open(coll, "churches")
        trainer.submit({h.id: 1.0 if "n03028079" in h.path else -1.0 for h in trainer.next_batch(8, "random")})
    proc = run_cli("classifiers", "--db", root)
    assert proc.returncode == 0, proc.stderr
    assert "(church)" in proc.stdout and "n03028079" not in proc.stdout
    assert json.loads(run_cli("classifiers", "--json", "--db", root).stdout)["classifiers"][0]["target"] == "n03028079"
