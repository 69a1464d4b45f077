"""Hostile output folders: `embed --out` and `export --out` where someone planted symlinks,
FIFOs, devices or directories, or named a target that is no folder at all.

Each trial runs the real CLI in a subprocess (with a time limit: a FIFO opened for
writing would block forever) and wants one line and exit 1, or a run that writes only
regular files inside the folder; what lies outside is compared byte for byte."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from reliability.helpers import assert_one_line_error, indexed_with_a_round, run_cli, snapshot

pytestmark = [pytest.mark.reliability("output folders"), pytest.mark.slow]  # whole CLI processes

LIMIT = 120  # seconds; a run that blocks on a FIFO fails the trial instead of hanging the suite


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    """12 images indexed by the CLI, a classifier "c" with a round of labels."""
    base = tmp_path_factory.mktemp("outputs")
    indexed_with_a_round(base, 12, seed=3)
    return base


@pytest.fixture
def db(template, tmp_path):
    shutil.copytree(template / "coll", tmp_path / "coll")
    return tmp_path / "coll"


@pytest.fixture
def pics(template):
    return template / "pics"


def victim_dir(tmp_path: Path) -> Path:
    victim = tmp_path / "victimdir"
    victim.mkdir()
    (victim / "keep.txt").write_text("mine")
    return victim


def tree(root: Path) -> dict:
    return {str(p.relative_to(root)): (p.read_bytes() if p.is_file() else None) for p in sorted(root.rglob("*"))}


def embed(pics, out, *more):
    return run_cli("embed", pics, "--out", out, "--shard-size", "4", "-q", *more, timeout=LIMIT)


def export(db, out):
    return run_cli("export", "c", "--out", out, "--db", db, timeout=LIMIT)


# -- embed --out -------------------------------------------------------------------------------


@pytest.mark.parametrize("sub", ["img_emb", "metadata"])
def test_embed_refuses_a_planted_link_to_a_folder_elsewhere(pics, tmp_path, sub):
    victim = victim_dir(tmp_path)
    out = tmp_path / "o"
    out.mkdir()
    (out / sub).symlink_to("../victimdir")
    before = tree(victim)
    assert_one_line_error(embed(pics, out), str(out / sub), "symbolic link")
    assert tree(victim) == before


def test_embed_resume_never_follows_a_planted_temporary_file(pics, tmp_path):
    out = tmp_path / "o"
    assert embed(pics, out).returncode == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert sorted(manifest["shards"]) == ["00000", "00001", "00002"]
    # A killed run: shard 00001 not recorded, and a link planted where its temporary file goes.
    del manifest["shards"]["00001"]
    (out / "manifest.json").write_text(json.dumps(manifest))
    victim = tmp_path / "victim1"
    victim.write_bytes(b"precious")
    (out / "img_emb" / "img_emb_00001.npy.tmp").symlink_to("../../victim1")
    (out / "metadata" / "metadata_00001.parquet.tmp").symlink_to("../../victim1")
    proc = embed(pics, out)
    assert proc.returncode == 0, proc.stderr
    assert victim.read_bytes() == b"precious"
    for p in out.rglob("*"):
        assert not p.is_symlink() and (p.is_file() or p.is_dir()), p
    assert not list(out.rglob("*.tmp"))
    assert "00001" in json.loads((out / "manifest.json").read_text())["shards"]


@pytest.mark.parametrize("planted", ["link", "fifo", "directory"])
def test_embed_refuses_a_shard_file_that_is_not_a_regular_file(pics, tmp_path, planted):
    out = tmp_path / "o"
    assert embed(pics, out).returncode == 0
    manifest = json.loads((out / "manifest.json").read_text())
    del manifest["shards"]["00002"]
    (out / "manifest.json").write_text(json.dumps(manifest))
    target = out / "img_emb" / "img_emb_00002.npy"
    target.unlink()
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious")
    if planted == "link":
        target.symlink_to(victim)
    elif planted == "fifo":
        os.mkfifo(target)
    else:
        target.mkdir()
    assert_one_line_error(embed(pics, out), str(target), "refusing")
    assert victim.read_bytes() == b"precious"


def test_embed_refuses_a_fifo_manifest_without_blocking(pics, tmp_path):
    out = tmp_path / "o"
    out.mkdir()
    os.mkfifo(out / "manifest.json")
    assert_one_line_error(embed(pics, out), "manifest.json", "FIFO")


@pytest.mark.parametrize("target", ["/dev/null", "fifo"])
def test_embed_out_that_is_not_a_folder_is_one_line(pics, tmp_path, target):
    if target == "fifo":
        target = tmp_path / "f"
        os.mkfifo(target)
    assert_one_line_error(embed(pics, target), "not a folder")


# -- export --out ------------------------------------------------------------------------------


@pytest.mark.parametrize("target", ["/dev/null", "fifo", "/proc/self", "file-parent"])
def test_export_to_a_target_that_cannot_hold_files_is_one_line(db, tmp_path, target):
    if target == "fifo":
        target = tmp_path / "f"
        os.mkfifo(target)
    elif target == "file-parent":
        (tmp_path / "file").write_text("x")
        target = tmp_path / "file" / "out"
    before = snapshot(db)
    assert_one_line_error(export(db, target))
    before.assert_kept_in(snapshot(db))


@pytest.mark.parametrize("name", ["c.safetensors", "c-labels.csv", "c-labels.jsonl"])
@pytest.mark.parametrize("planted", ["fifo", "directory", "link", "device-link"])
def test_export_refuses_a_non_file_named_like_an_output(db, tmp_path, name, planted):
    out = tmp_path / "out"
    out.mkdir()
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious")
    target = out / name
    if planted == "fifo":
        os.mkfifo(target)
    elif planted == "directory":
        target.mkdir()
    elif planted == "link":
        target.symlink_to(victim)
    else:
        target.symlink_to("/dev/null")
    assert_one_line_error(export(db, out), str(target), "refusing")
    assert victim.read_bytes() == b"precious"
    # Checked before anything is written: no output file appears beside the planted one.
    assert sorted(p.name for p in out.iterdir()) == [name]


def test_export_writes_regular_files_and_replaces_old_ones(db, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "c-labels.csv").write_text("old")
    proc = export(db, out)
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in out.iterdir()) == ["c-labels.csv", "c-labels.jsonl", "c.safetensors"]
    assert (out / "c-labels.csv").read_text().startswith("id,path,label")
    assert len((out / "c-labels.jsonl").read_text().splitlines()) == 3
