import json

import pytest
from click.testing import CliRunner

import localq.encoders
from conftest import ColorEncoder
from localq.cli import cli


@pytest.fixture
def runner(monkeypatch):
    # The CLI resolves load_encoder at call time; a colour encoder keeps these tests about the CLI.
    monkeypatch.setattr(
        localq.encoders, "load_encoder", lambda spec="lite0", weights=None: ColorEncoder(), raising=False
    )
    return CliRunner()


def run(runner, *args, ok=True):
    result = runner.invoke(cli, list(args), catch_exceptions=False)
    if ok:
        assert result.exit_code == 0, result.output
    return result


def test_every_command_has_help_with_an_example(runner):
    for name, command in cli.commands.items():
        result = run(runner, name, "--help")
        assert "Example:" in result.output, name
        assert command.help, name


def test_index_stats_search_reset(runner, tmp_path, colour_folder):
    db = str(tmp_path / "c")
    out = json.loads(run(runner, "index", str(colour_folder), "--labels", "--db", db, "--json").output)
    assert out["version"] == 1 and out["added"] == 12 and out["skipped"] == []
    stats = json.loads(run(runner, "stats", "--db", db, "--json").output)
    assert (stats["images"], stats["dim"], stats["model_id"], stats["seen"]) == (12, 15, "test-colour/v1", 0)
    assert stats["bytes"]["localq.db"] > 0 and stats["bytes"]["vectors.npy"] > 0
    found = json.loads(run(runner, "search", "red", "-k", "3", "--db", db, "--json").output)["results"]
    assert [r["label"] for r in found] == ["red"] * 3 and found[0]["score"] >= found[-1]["score"]
    text = run(
        runner, "search", "--image", str(colour_folder / "val" / "blue" / "blue0.png"), "-k", "1", "--db", db
    ).output
    assert "blue0.png" in text
    assert "cleared 0 seen flags" in run(runner, "reset", "--db", db).output


def test_search_unseen_never_returns_seen_images(runner, tmp_path, colour_folder):
    from localq.collection.collection import Collection
    from localq.loop.trainer import Trainer

    db = str(tmp_path / "c")
    run(runner, "index", str(colour_folder), "--labels", "--db", db)
    with Collection.open(db) as coll:
        trainer = Trainer.create(coll, "reds", prompt="red")
        batch = trainer.next_batch(3)
        trainer.submit({h.id: 1.0 for h in batch})
        seen = {h.path for h in batch}
    found = json.loads(run(runner, "search", "red", "-k", "12", "--unseen", "--db", db, "--json").output)["results"]
    assert len(found) == 9 and not {r["path"] for r in found} & seen
    found = json.loads(
        run(runner, "search", "red", "-k", "12", "--unseen", "--classifier", "reds", "--db", db, "--json").output
    )
    assert len(found["results"]) == 9
    assert "cleared 3 seen flags of reds" in run(runner, "reset", "--classifier", "reds", "--db", db).output


def test_classifier_commands(runner, tmp_path, colour_folder):
    from localq.collection.collection import Collection
    from localq.loop.trainer import Trainer

    db = str(tmp_path / "c")
    run(runner, "index", str(colour_folder), "--labels", "--db", db)
    with Collection.open(db) as coll:
        trainer = Trainer.create(coll, "reds", prompt="red")
        labels = coll.store.labels_by_id()
        for _ in range(2):
            trainer.submit({h.id: 1.0 if labels[h.id] == "red" else -1.0 for h in trainer.next_batch(4)})
    listed = json.loads(run(runner, "classifiers", "--db", db, "--json").output)["classifiers"]
    assert listed[0]["name"] == "reds" and listed[0]["round"] == 2 and listed[0]["target"] == "red"
    preds = json.loads(run(runner, "predict", "reds", "--db", db, "--json").output)["predictions"]
    assert preds and all(p["label"] == "red" for p in preds[:3])
    val = json.loads(run(runner, "predict", "reds", "--split", "val", "--db", db, "--json").output)["predictions"]
    assert {p["path"] for p in val} <= {str(p) for p in colour_folder.glob("val/*/*")}
    csv_out = run(runner, "predict", "reds", str(colour_folder / "val"), "--db", db, "--csv").output
    assert csv_out.splitlines()[0] == "path,score,label" and "red0.png" in csv_out
    written = run(runner, "export", "reds", "--out", str(tmp_path / "exp"), "--db", db).output.split()
    assert [p.rsplit(".", 1)[-1] for p in written] == ["safetensors", "csv", "jsonl"]
    rows = [json.loads(line) for line in open(written[2])]
    assert len(rows) == 8 and {r["label"] for r in rows} <= {1.0, -1.0}
    hist = json.loads(run(runner, "history", "reds", "--db", db, "--json").output)["rounds"]
    assert [r["round"] for r in hist] == [0, 1, 2] and hist[-1]["labels"] == 8
    assert "back at round 1" in run(runner, "undo", "reds", "--db", db).output


def test_errors_are_one_line_and_exit_1(runner, tmp_path):
    result = run(runner, "stats", "--db", str(tmp_path / "nothing"), ok=False)
    assert result.exit_code == 1
    assert result.output.count("\n") == 1 and result.output.startswith("error: no collection at")


def test_wrong_encoder_is_refused(runner, tmp_path, colour_folder, monkeypatch):
    db = str(tmp_path / "c")
    run(runner, "index", str(colour_folder), "--db", db)
    from conftest import OtherEncoder

    monkeypatch.setattr(localq.encoders, "load_encoder", lambda spec="lite0", weights=None: OtherEncoder())
    result = run(runner, "index", str(colour_folder), "--db", db, "--encoder", "other", ok=False)
    assert result.exit_code == 1 and "was built with test-colour/v1" in result.output


def test_an_os_error_of_any_kind_is_one_line_not_a_traceback():
    """Refusals that are not a full disk (permissions, a name too long, a bytes file name)."""
    import errno

    import click
    from click.testing import CliRunner

    from localq.cli.common import friendly_errors

    for exc in (
        PermissionError(errno.EACCES, "Permission denied", "/srv/photos/x.xmp"),
        OSError(errno.ENAMETOOLONG, "File name too long", b"/srv/\xff" + b"a" * 300),
        OSError("no errno at all"),
    ):

        @click.command()
        @friendly_errors
        def cmd(exc=exc):
            raise exc

        result = CliRunner().invoke(cmd, [])
        lines = result.output.strip().splitlines()
        assert result.exit_code == 1 and len(lines) == 1 and lines[0].startswith("error: "), result.output
        assert "Traceback" not in result.output
