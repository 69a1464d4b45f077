"""`localq tag`: keywords in XMP sidecars, read back by exiftool (a reader localq did not write).

The CLI runs in a subprocess as a person types it (tests/reliability/localq_test_cli.py, the
real CLI with the tiny colour encoder), on a real collection of real image files.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from reliability.helpers import env, popen_cli, run_cli

import localq.encoders
from conftest import ColorEncoder, write_image

pytestmark = pytest.mark.slow  # whole CLI processes and exiftool

DARKTABLE_SIDECAR = """<?xml version="1.0" encoding="UTF-8"?>
<x:xmpmeta xmlns:x="adobe:ns:meta/" x:xmptk="XMP Core 4.4.0-Exiv2">
 <rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">
  <rdf:Description rdf:about=""
    xmlns:xmp="http://ns.adobe.com/xap/1.0/"
    xmlns:dc="http://purl.org/dc/elements/1.1/"
    xmlns:darktable="http://darktable.sf.net/"
   xmp:Rating="4"
   darktable:xmp_version="5">
   <dc:subject><rdf:Bag><rdf:li>holiday</rdf:li></rdf:Bag></dc:subject>
   <dc:title><rdf:Alt><rdf:li xml:lang="x-default">Beach at noon</rdf:li></rdf:Alt></dc:title>
   <darktable:history><rdf:Seq><rdf:li darktable:operation="exposure" darktable:enabled="1"/></rdf:Seq></darktable:history>
  </rdf:Description>
 </rdf:RDF>
</x:xmpmeta>
"""

# In CI (.ci/run installs it) a missing exiftool fails the tests instead of skipping them.
needs_exiftool = pytest.mark.skipif(
    shutil.which("exiftool") is None and os.environ.get("CI", "").lower() not in ("1", "true", "yes"),
    reason="exiftool missing: apt-get install libimage-exiftool-perl (.ci/run does)",
)


def exiftool(path: Path) -> dict:
    out = subprocess.run(
        ["exiftool", "-j", "-struct", "-XMP:all", str(path)], capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout)[0]


def as_list(value) -> list:
    return value if isinstance(value, list) else [] if value is None else [value]


def originals(root: Path) -> dict:
    """size, mtime (ns) and hash of every photo: what tagging must never change."""
    return {
        p: (p.stat().st_size, p.stat().st_mtime_ns, hashlib.sha256(p.read_bytes()).hexdigest())
        for p in sorted(root.rglob("*.png"))
    }


@pytest.fixture
def photos(tmp_path) -> Path:
    root = tmp_path / "photos"
    for split, n in (("train", 3), ("val", 1)):
        for name, rgb in (("red", (220, 20, 20)), ("green", (20, 200, 30)), ("blue", (30, 40, 210))):
            for i in range(n):
                write_image(root / split / name / f"{name}{i}.png", rgb)
    return root


def make_classifier(db: Path, positive: str = "red", negative_only: bool = False) -> None:
    """A fitted classifier "reds": one round, `positive` images +1, the rest -1."""
    from localq.collection.collection import Collection
    from localq.loop.trainer import Trainer

    with Collection.open(db) as coll:
        trainer = Trainer.create(coll, "reds", prompt="red")
        labels = coll.labels_of(range(coll.rows()))
        trainer.submit({i: 1.0 if labels[i] == positive else -1.0 for i in range(coll.rows())})


@pytest.fixture
def tagged(tmp_path, photos, monkeypatch):
    monkeypatch.setattr(
        localq.encoders, "load_encoder", lambda spec="lite0", weights=None: ColorEncoder(), raising=False
    )
    db = tmp_path / "db"
    proc = run_cli("index", photos, "--labels", "--db", db)
    assert proc.returncode == 0, proc.stderr
    make_classifier(db)
    return db, photos


def tag(db, *args, **kw):
    return run_cli("tag", "reds", "--db", db, *args, **kw)


def reds(photos: Path) -> list[Path]:
    return sorted(photos.rglob("red*.png"))


@needs_exiftool
def test_tag_merges_keywords_exiftool_reads_them_and_originals_are_untouched(tagged):
    db, photos = tagged
    first = reds(photos)[0]
    (first.parent / (first.name + ".xmp")).write_text(DARKTABLE_SIDECAR)
    before = originals(photos)
    proc = tag(db, "--keyword", "red thing")
    assert proc.returncode == 0, proc.stderr
    assert (
        "'red thing': 4 of 12 photos positive above 0.0; 4 sidecars gained the keyword, 0 updated, 0 lost it"
        in proc.stderr
    )
    assert originals(photos) == before  # size, mtime and content of every photo
    for photo in reds(photos):
        meta = exiftool(photo.with_name(photo.name + ".xmp"))
        assert "red thing" in as_list(meta["Subject"])
        assert as_list(meta["HierarchicalSubject"]) == ["localq|red thing"]
        entry = as_list(meta["Tags"])[0]
        assert (entry["Classifier"], entry["Keyword"], entry["Round"]) == ("reds", "red thing", 1)
        assert entry["Score"] > 0
    kept = exiftool(first.with_name(first.name + ".xmp"))  # everything darktable wrote is still there
    assert as_list(kept["Subject"]) == ["holiday", "red thing"]
    assert kept["Rating"] == 4 and kept["Title"] == "Beach at noon" and kept["Xmp_version"] == 5
    assert as_list(kept["History"]) == [{"Operation": "exposure", "Enabled": 1}]
    assert not list(photos.rglob("green*.xmp")) and not list(photos.rglob("blue*.xmp"))
    assert not [p for p in photos.rglob("*") if p.name.endswith(".tmp")]


@needs_exiftool
def test_rerun_updates_the_set_and_remove_takes_back_only_localq(tagged):
    db, photos = tagged
    first = reds(photos)[0]
    sidecar = first.with_name(first.name + ".xmp")
    sidecar.write_text(
        DARKTABLE_SIDECAR.replace("<rdf:li>holiday</rdf:li>", "<rdf:li>holiday</rdf:li><rdf:li>reds</rdf:li>")
    )
    assert tag(db).returncode == 0
    # More rounds: greens become the positives, reds the negatives.
    from localq.collection.collection import Collection
    from localq.loop.trainer import Trainer

    with Collection.open(db) as coll:
        trainer = Trainer.open(coll, "reds")
        labels = coll.labels_of(range(coll.rows()))
        trainer.submit({i: 1.0 if labels[i] == "green" else -1.0 for i in range(coll.rows())})
    proc = tag(db)
    assert proc.returncode == 0, proc.stderr
    assert "4 sidecars gained the keyword, 0 updated, 4 lost it" in proc.stderr
    greens = sorted(photos.rglob("green*.png"))
    for photo in greens:
        meta = exiftool(photo.with_name(photo.name + ".xmp"))
        assert as_list(meta["Subject"]) == ["reds"] and as_list(meta["Tags"])[0]["Round"] == 2
    # Red photos lost localq's keyword; a sidecar localq alone had written is gone; the
    # person's own "reds" keyword (there before localq came) stays.
    assert [p for p in reds(photos) if p.with_name(p.name + ".xmp").exists()] == [first]
    meta = exiftool(sidecar)
    assert as_list(meta["Subject"]) == ["holiday", "reds"] and "HierarchicalSubject" not in meta and "Tags" not in meta
    assert meta["Rating"] == 4
    proc = tag(db, "--remove")
    assert proc.returncode == 0 and "0 sidecars gained the keyword, 0 updated, 4 lost it" in proc.stderr
    assert not list(photos.rglob("green*.xmp"))
    assert as_list(exiftool(sidecar)["Subject"]) == ["holiday", "reds"]


def test_dry_run_lists_and_writes_nothing(tagged):
    db, photos = tagged
    proc = tag(db, "--dry-run")
    assert proc.returncode == 0, proc.stderr
    assert len([line for line in proc.stdout.splitlines() if line.startswith("add ")]) == 4
    assert "4 sidecars would gain the keyword" in proc.stderr
    assert not list(photos.rglob("*.xmp"))


@needs_exiftool
def test_sidecar_style_photo_xmp_and_paths(tagged):
    db, photos = tagged
    proc = tag(db, photos / "val", "--sidecar-style", "photo.xmp", "--json")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert (out["photos"], out["positives"], out["added"]) == (3, 1, 1)
    assert sorted(p.name for p in photos.rglob("*.xmp")) == ["red0.xmp"]
    assert as_list(exiftool(photos / "val" / "red" / "red0.xmp")["Subject"]) == ["reds"]


def test_unusable_sidecars_and_locked_folders_one_line_each_others_written(tagged):
    db, photos = tagged
    red = photos / "train" / "red"
    (red / "red0.png.xmp").write_text("shopping list: milk\n")  # not XMP
    (red / "red1.png.xmp").write_text(DARKTABLE_SIDECAR)
    (red / "red1.png.xmp").chmod(0o444)  # read-only
    locked = photos / "val" / "red"
    locked.chmod(0o555)  # a folder the person locked
    try:
        dry = tag(db, "--dry-run")  # says beforehand what a real run could not write
        proc = tag(db)
    finally:
        locked.chmod(0o755)
    assert proc.returncode == 1
    problems = [line for line in proc.stderr.splitlines() if line.startswith("problem: ")]
    assert len(problems) == 3 and "Traceback" not in proc.stderr
    assert (
        dry.returncode == 1 and [line for line in dry.stderr.splitlines() if line.startswith("problem: ")] == problems
    )
    assert any("red0.png.xmp is not an XMP sidecar" in line for line in problems)
    assert any("red1.png.xmp is read-only" in line for line in problems)
    assert any(f"folder {locked} is read-only" in line for line in problems)
    assert proc.stderr.splitlines()[-1].endswith(
        "1 sidecars gained the keyword, 0 updated, 0 lost it; 3 could not be used (listed above)"
    )
    assert (red / "red0.png.xmp").read_text() == "shopping list: milk\n"
    assert (red / "red1.png.xmp").read_text() == DARKTABLE_SIDECAR
    assert (red / "red2.png.xmp").exists() and not list(locked.glob("*.xmp"))


def test_a_photo_that_became_a_folder_is_one_line(tagged):
    db, photos = tagged
    photo = photos / "train" / "red" / "red0.png"
    photo.unlink()
    photo.mkdir()
    proc = tag(db)
    assert proc.returncode == 1
    problems = [line for line in proc.stderr.splitlines() if line.startswith("problem: ")]
    assert problems == [
        f"problem: {photo} is a folder now, not a photo; run `localq index` on its folder to update the collection"
    ]
    assert not (photos / "train" / "red" / "red0.png.xmp").exists()
    assert len(list(photos.rglob("*.xmp"))) == 3


def test_two_runs_at_once_take_turns(tagged):
    db, photos = tagged
    from localq.photos.tagging import tag_lock

    with tag_lock(db):
        proc = tag(db, extra_env={"LOCALQ_LOCK_TIMEOUT": "1"})
    assert proc.returncode == 1
    lines = proc.stderr.splitlines()
    assert lines[0].startswith("waiting for another `localq tag` run on")
    assert lines[1].startswith("error: another `localq tag` run on") and len(lines) == 2
    assert not list(photos.rglob("*.xmp"))
    both = [popen_cli("tag", "reds", "--db", db) for _ in range(2)]
    assert [p.wait(timeout=120) for p in both] == [0, 0]
    assert len(list(photos.rglob("*.xmp"))) == 4


def test_bad_keyword_is_one_line(tagged):
    db, _ = tagged
    proc = tag(db, "--keyword", "a|b")
    assert proc.returncode == 1 and proc.stderr.startswith("error: keyword 'a|b' cannot be used")


def test_a_failed_write_leaves_the_old_sidecar_whole(tmp_path, monkeypatch):
    from localq.errors import SidecarProblem
    from localq.photos import xmp

    sidecar = tmp_path / "a.jpg.xmp"
    sidecar.write_text(DARKTABLE_SIDECAR)

    def fail(*args):
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(SidecarProblem, match="cannot write .*a.jpg.xmp: Input/output error"):
        xmp.update(sidecar, "dog", xmp.Tag("dog", "dog", 1.0, 1))
    assert sidecar.read_text() == DARKTABLE_SIDECAR and os.listdir(tmp_path) == ["a.jpg.xmp"]


def test_kill_9_mid_run_leaves_no_half_written_sidecar(tmp_path):
    from localq.photos import xmp

    for i in range(300):
        (tmp_path / f"p{i}.jpg.xmp").write_text(DARKTABLE_SIDECAR)
    # Alternately one sidecar at a time and in batches (what `localq tag` does), for ever.
    code = (
        "from pathlib import Path; from localq.photos import xmp\n"
        f"paths = [Path({str(tmp_path)!r}) / f'p{{i}}.jpg.xmp' for i in range(300)]\n"
        "for k in range(1000):\n"
        "    if k % 2:\n"
        "        for p in paths: xmp.update(p, 'dog', xmp.Tag('dog', 'dog', k, 1))\n"
        "        continue\n"
        "    with xmp.SidecarWriter(batch=100) as writer:\n"
        "        for p in paths: writer.add(xmp.plan(p, 'dog', xmp.Tag('dog', 'dog', k, 1)))\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], env=env())
    time.sleep(3)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    sidecars = sorted(tmp_path.glob("*.xmp"))
    assert len(sidecars) == 300
    for s in sidecars:  # each parses, and still holds what the person wrote
        assert xmp._bag(xmp._parse(s, s.read_bytes()).xmpData(), "Xmp.dc.subject")[0] == "holiday"
    assert any(xmp.read_tags(s) for s in sidecars)  # the run did get somewhere
    # What a kill can leave is a hidden temporary file, never a sidecar's name.
    assert all(p.name.startswith(".") and p.name.endswith(".tmp") for p in tmp_path.iterdir() if p not in sidecars)


def test_an_unreadable_sidecar_is_a_problem_of_its_own(tmp_path, monkeypatch):
    from localq.errors import SidecarProblem
    from localq.photos import xmp

    sidecar = tmp_path / "a.jpg.xmp"
    sidecar.write_text(DARKTABLE_SIDECAR)
    real = Path.read_bytes

    def denied(self):
        if self == sidecar:
            raise PermissionError(13, "Permission denied")
        return real(self)

    monkeypatch.setattr(Path, "read_bytes", denied)
    with pytest.raises(SidecarProblem, match=r"cannot read .*a.jpg.xmp: Permission denied"):
        xmp.update(sidecar, "dog", xmp.Tag("dog", "dog", 1.0, 1))


def test_full_disk_is_one_line_and_loses_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(
        localq.encoders, "load_encoder", lambda spec="lite0", weights=None: ColorEncoder(), raising=False
    )
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=512k", "tmpfs", str(disk)], capture_output=True, text=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs to fill up here: {mounted.stderr.strip()}")
    try:
        for i in range(3):
            write_image(disk / f"red{i}.png", (220, 20, 20))
        write_image(disk / "blue0.png", (30, 40, 210))
        db = tmp_path / "db"
        assert run_cli("index", disk, "--db", db).returncode == 0
        from localq.collection.collection import Collection
        from localq.loop.trainer import Trainer

        with Collection.open(db) as coll:
            trainer = Trainer.create(coll, "reds", prompt="red")
            rows = coll.image_rows(range(coll.rows()))
            trainer.submit({r.id: 1.0 if "red" in Path(r.path).name else -1.0 for r in rows})
        kept = disk / "red0.png.xmp"
        kept.write_text(DARKTABLE_SIDECAR)
        fd = os.open(disk / "filler", os.O_WRONLY | os.O_CREAT)  # fill the disk to the last block
        try:
            while os.write(fd, b"\0" * 4096):
                pass
        except OSError:
            pass
        finally:
            os.close(fd)
        proc = run_cli("tag", "reds", "--db", db)
        assert proc.returncode == 1 and "Traceback" not in proc.stderr
        lines = proc.stderr.splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: no space left on the disk holding"), proc.stderr
        assert "0 sidecars were written before it" in lines[0]
        assert kept.read_text() == DARKTABLE_SIDECAR
        assert not [p for p in disk.iterdir() if p.name.endswith(".tmp")]
    finally:
        subprocess.run(["umount", str(disk)], check=False)


def test_photos_outside_the_collection_are_embedded_on_the_fly(tagged, tmp_path):
    db, photos = tagged
    new = tmp_path / "new"
    write_image(new / "red-new.png", (225, 15, 25))
    write_image(new / "blue-new.png", (30, 40, 210))
    (new / "broken.png").write_bytes(b"not a png")
    proc = tag(db, new)
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in new.glob("*.xmp")) == ["red-new.png.xmp"]
    assert f"skipped {new / 'broken.png'}:" in proc.stderr
    assert "1 of 2 photos positive" in proc.stderr
    assert not list(photos.rglob("*.xmp"))  # the collection's photos are not under PATHS


def test_one_failed_fsync_is_that_sidecars_problem_the_others_are_written(tmp_path, monkeypatch):
    import threading

    from localq.photos import xmp

    sidecars = [tmp_path / f"p{i}.jpg.xmp" for i in range(3)]
    for s in sidecars:
        s.write_text(DARKTABLE_SIDECAR)
    real, calls, lock = os.fsync, [], threading.Lock()

    def flaky(fd):
        with lock:
            calls.append(fd)
            second = len(calls) == 2
        if second:  # one file's data did not reach the disk
            raise OSError(5, "Input/output error")
        return real(fd)

    problems = []
    monkeypatch.setattr(os, "fsync", flaky)
    with xmp.SidecarWriter(on_problem=lambda edit, message: problems.append((edit.sidecar, message))) as writer:
        for s in sidecars:
            writer.add(xmp.plan(s, "dog", xmp.Tag("dog", "dog", 1.0, 1)))
    assert (
        len(problems) == 1
        and "Input/output error" in problems[0][1]
        and problems[0][1].endswith("Input/output error")
        and str(problems[0][0]) in problems[0][1]
    )
    failed = problems[0][0]
    assert failed.read_text() == DARKTABLE_SIDECAR  # left as it was
    assert all(xmp.read_tags(s) for s in sidecars if s != failed)
    assert sorted(tmp_path.iterdir()) == sorted(sidecars)  # no temporary file left behind
