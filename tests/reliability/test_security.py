"""Hostile names: classifier names never leave --out (or name anything but a slug), and
file names, labels and prompts never reach a terminal (or a pipe) as escape sequences."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import ColorEncoder, write_image
from localq.collection.collection import Collection
from localq.display import printable
from localq.errors import InvalidName, LocalqError
from localq.ingest.indexer import index_paths
from localq.loop.export import export_classifier
from localq.loop.trainer import Trainer
from localq.names import NAME_PATTERN, check_name, is_valid_name, slug
from reliability.inprocess import assert_one_error_line, assert_terminal_safe, invoke, ok_json, runner  # noqa: F401

pytestmark = pytest.mark.reliability("security")

HOSTILE_NAMES = [
    "../../X",
    "/abs/X",
    "",
    "a\nb",
    "..",
    "a/b",
    "a\\b",
    "x" * 65,
    ".hidden",
    "-rf",
    "a..b",
    "\x1b]0;pwned\x07",
    "caf\u00e9",
    "a b",
    "a\x00b",
    "nul\u202egpj.exe",
    os.fsdecode(b"\xff"),
]


@pytest.fixture(scope="module")
def collection(tmp_path_factory):
    root = tmp_path_factory.mktemp("security")
    write_image(root / "photos" / "red.png", (220, 20, 20))
    write_image(root / "photos" / "blue.png", (20, 20, 220))
    coll = Collection.open(root / "db", create=True)
    index_paths(coll, [root / "photos"], ColorEncoder())
    yield coll
    coll.close()


def files_under(root: Path) -> set[Path]:
    return {p for p in root.rglob("*")}


@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_hostile_names_are_refused_everywhere(collection, name):
    assert not is_valid_name(name)
    with pytest.raises(InvalidName):
        Trainer.create(collection, name, prompt="red")
    with pytest.raises(InvalidName):
        Trainer.open(collection, name)
    assert name not in {c.name for c in collection.store.classifiers()}


@pytest.mark.parametrize("name", ["reds", "a", "dog.v2", "A_b-c.9", "x" * 64])
def test_slug_names_work(collection, name, tmp_path):
    t = Trainer.create(collection, name, prompt="red", replace=True)
    written = export_classifier(t, tmp_path / "out")
    assert {p.parent.resolve() for p in written} == {(tmp_path / "out").resolve()}


@given(st.text(max_size=80))
def test_property_names_and_slugs(text):
    assert is_valid_name(text) == (NAME_PATTERN.fullmatch(text) is not None and ".." not in text)
    if is_valid_name(text):
        assert check_name(text) == text and "/" not in text and not text.startswith(".")
    else:
        with pytest.raises(InvalidName) as err:
            check_name(text)
        assert "\n" not in str(err.value)
        assert_terminal_safe(str(err.value))
    assert is_valid_name(slug(text))  # a prompt always gives a usable default name


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    name=st.one_of(
        st.text(max_size=70),
        st.sampled_from(HOSTILE_NAMES),
        st.lists(st.sampled_from(["..", "/", "a", ".", "x"]), max_size=8).map("".join),
    )
)
def test_property_export_never_writes_outside_out(collection, tmp_path, name):
    out = Path(tempfile.mkdtemp(dir=tmp_path)) / "a" / "b" / "out"  # deep: '../../X' would still land in tmp_path
    before = files_under(tmp_path)
    try:
        t = Trainer.create(collection, name, prompt="red", replace=True)
    except InvalidName:
        assert not is_valid_name(name)
        return
    try:
        written = export_classifier(t, out)
    finally:
        collection.store.delete_classifier(t.row.id)
    new = files_under(tmp_path) - before
    assert {p for p in new if p.is_file()} == set(written) and all(p.parent == out for p in written)
    assert all(p == out or p in out.parents for p in new if p.is_dir())


def crafted(collection, name: str):
    """A classifier row with a name nothing in localq would create: a shared collection
    edited by someone else, or made by an older version."""
    dim = collection.dim
    w = np.ones(dim, np.float32) / np.sqrt(dim)
    return collection.store.create_classifier(
        name, source="prompt", prompt="red", prior=w, weights=w, bias=0.0, settings={}
    )


def test_export_of_a_crafted_name_writes_nothing_outside(runner, tmp_path):
    write_image(tmp_path / "p" / "red.png", (220, 20, 20))
    db = tmp_path / "deep" / "er" / "db"
    assert invoke(runner, "index", tmp_path / "p", "--db", db, "-q").exit_code == 0
    with Collection.open(db) as coll:
        for name in ("../../X", "/tmp/abs-X", "a\nb"):
            crafted(coll, name)
    before = files_under(tmp_path)
    for name in ("../../X", "/tmp/abs-X", "a\nb"):
        result = invoke(runner, "export", name, "--out", tmp_path / "deep" / "out", "--db", db)
        assert "invalid classifier name" in assert_one_error_line(result)
        result = invoke(runner, "export", name, "--db", db)  # the default folder is named after it
        assert_one_error_line(result)
    assert files_under(tmp_path) == before
    assert not Path("/tmp/abs-X.safetensors").exists()


def test_export_refuses_a_symlink_planted_in_out(collection, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "reds.safetensors").symlink_to(tmp_path / "victim.safetensors")
    t = Trainer.create(collection, "reds", prompt="red", replace=True)
    with pytest.raises(LocalqError, match="outside"):
        export_classifier(t, out)
    assert not (tmp_path / "victim.safetensors").exists()


ESCAPE_NAME = "\x1b]0;pwned\x07\x1b[2J\x1b[31mred\u202e.png"


def test_escape_sequences_in_names_are_neutralised_in_every_command(runner, tmp_path):
    photos = tmp_path / "p"
    write_image(photos / "red" / ESCAPE_NAME, (220, 20, 20))
    write_image(photos / "\x1b[1mlabel" / "blue.png", (20, 20, 220))
    (photos / "red" / ("\x1b]0;bad\x07" + ".jpg")).write_bytes(b"not a jpeg")
    (photos / os.fsdecode(b"\xff\x1b[2J.png")).write_bytes(b"nope")
    db = tmp_path / "db"
    outputs = [invoke(runner, "index", photos, "--labels", "--db", db, "-q")]
    with Collection.open(db) as coll:
        Trainer.create(coll, "reds", prompt="red \x1b]0;prompt-title\x07")
    outputs += [
        invoke(runner, "search", "red", "-k", "5", "--db", db),
        invoke(runner, "skipped", "--db", db),
        invoke(runner, "predict", "reds", "--threshold", "-100", "--db", db),
        invoke(runner, "predict", "reds", "--threshold", "-100", "--csv", "--db", db),
        invoke(runner, "predict", "reds", photos / "red", "--threshold", "-100", "--db", db),
        invoke(runner, "classifiers", "--db", db),
        invoke(runner, "export", "reds", "--out", tmp_path / "out", "--db", db),
        invoke(runner, "search", "--image", photos / "red" / ("\x1b]0;bad\x07" + ".jpg"), "--db", db),
        invoke(runner, "history", "\x1b]0;x\x07", "--db", db),
    ]
    for result in outputs:
        assert_terminal_safe(result.output)
        assert "Traceback" not in result.output
    shown = "".join(r.output for r in outputs)
    assert "\\x1b]0;pwned\\x07" in shown and "\\xff\\x1b[2J.png" in shown and "\\u202e" in shown
    assert "[\\x1b[1mlabel]" in shown  # a folder label is escaped too
    # --json stays lossless: json.dumps escapes control characters itself.
    found = ok_json(runner, "search", "red", "-k", "5", "--db", db)["results"]
    assert str(photos / "red" / ESCAPE_NAME) in {r["path"] for r in found}


def test_error_messages_are_one_safe_line(runner, tmp_path):
    result = invoke(runner, "search", "--image", tmp_path / "none\x1b]0;t\x07.jpg", "--db", tmp_path / "db")
    assert result.exit_code == 2
    assert_terminal_safe(result.output)
    assert len(result.stderr.splitlines()) == 1


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "1e999", "\x1b[2Jten"])
def test_a_threshold_that_is_not_a_finite_number_is_a_usage_error(runner, tmp_path, value):
    # float() accepts 'nan' and 'inf'; a nan threshold would silently predict nothing.
    result = invoke(runner, "predict", "reds", "--threshold", value, "--db", tmp_path / "db")
    assert result.exit_code == 2 and "--threshold" in result.stderr
    assert_terminal_safe(result.output)
    assert len(result.stderr.splitlines()) == 1


def test_tui_file_labels_are_escaped():
    from localq.tui.thumbnails import file_name

    assert file_name("/x/" + ESCAPE_NAME) == printable(ESCAPE_NAME)
    assert_terminal_safe(file_name("/x/" + ESCAPE_NAME))
    assert file_name("/x/" + os.fsdecode(b"bad\xff\xfe.jpg")) == "bad\\xff\\xfe.jpg"


@given(st.one_of(st.text(), st.binary().map(os.fsdecode), st.binary()))
def test_property_printable_is_one_safe_line(value):
    shown = printable(value)
    assert "\n" not in shown and "\r" not in shown
    assert_terminal_safe(shown)
    shown.encode("utf-8")  # never a surrogate: printing it cannot raise
    text = value.decode("utf-8", "surrogateescape") if isinstance(value, bytes) else value
    if text.isprintable() and not any(0xD800 <= ord(c) < 0xE000 for c in text) and "\u202e" not in text:
        assert shown == text  # ordinary names, accents and emoji included, are shown as they are


@pytest.mark.parametrize("name", ["../../X", "/abs/X", "", "a\nb", os.fsdecode(b"\xff")])
def test_cli_train_refuses_a_hostile_name_before_the_ui(runner, tmp_path, monkeypatch, name):
    import localq.tui.app

    def no_ui(*_a, **_k):
        raise AssertionError("the labeling UI opened: the name was accepted")

    monkeypatch.setattr(localq.tui.app, "run_train", no_ui)
    write_image(tmp_path / "p" / "red.png", (220, 20, 20))
    assert invoke(runner, "index", tmp_path / "p", "--db", tmp_path / "db", "-q").exit_code == 0
    line = assert_one_error_line(invoke(runner, "train", "red", "--name", name, "--db", tmp_path / "db"))
    assert "invalid classifier name" in line
    with Collection.open(tmp_path / "db") as coll:
        assert coll.store.classifiers() == []
