"""A full disk: every command on a collection in a small tmpfs filled to the brim.

Each trial mounts a fresh 30 MB tmpfs (root only: without it the trials skip, saying
so), copies a real collection into it, fills what is left but ``free_kib`` with a
filler file, and runs one command through the real CLI in a subprocess. The command
either works or fails with the one line "no space left on DIR: free some and re-run;
nothing was lost": never a traceback, never "damaged". Then the filler goes, and the
collection must be whole (labels, rounds and vectors as before, `localq check` clean),
and an output never lies truncated under its final name.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from localq.collection.collection import Collection
from localq.loop.trainer import Trainer
from reliability.helpers import env, run_cli, snapshot, write_folder

pytestmark = [pytest.mark.reliability("full disk"), pytest.mark.slow]  # whole CLI processes

FREE_KIB = [0, 40, 100]
NO_SPACE = "no space left on"


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    """Outside the tmpfs: pictures, a collection of 30 with classifier "c" (2 rounds),
    shards of 60 more pictures, and a reference export."""
    from conftest import ColorEncoder

    base = tmp_path_factory.mktemp("fulldisk")
    pics = write_folder(base / "pics", 30, seed=0)
    more = write_folder(base / "more", 60, seed=7, prefix="m")
    db = base / "coll"
    assert run_cli("index", pics, "--db", db, "-q").returncode == 0
    with Collection.open(db) as coll:
        coll.bind_encoder(ColorEncoder())
        t = Trainer.create(coll, "c", prompt="red")
        for score in (1.0, -1.0):
            t.submit({h.id: score for h in t.next_batch(4)})
    assert run_cli("embed", more, "--out", base / "shards", "-q").returncode == 0
    assert run_cli("export", "c", "--out", base / "reference", "--db", db).returncode == 0
    return base


@pytest.fixture
def disk(tmp_path):
    """A fresh 30 MB tmpfs at tmp_path/m, unmounted afterwards."""
    mount = tmp_path / "m"
    mount.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    proc = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=30m", "tmpfs", str(mount)], capture_output=True, text=True
    )
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.strip() or proc.returncode}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def fill(mount: Path, free_kib: int) -> Path:
    """Take all the space but ``free_kib`` KiB; return the filler (delete it to free the space)."""
    filler = mount / "filler"
    st = os.statvfs(mount)
    size = st.f_bavail * st.f_frsize - free_kib * 1024
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        if size > 0:
            os.posix_fallocate(fd, 0, size)
    finally:
        os.close(fd)
    return filler


def assert_worked_or_no_space(proc, where: Path) -> bool:
    """True if the command worked; else it failed with the one no-space line naming ``where``."""
    text = proc.stdout + proc.stderr
    assert "Traceback" not in text, text
    assert "damaged" not in text, text
    if proc.returncode == 0:
        return True
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 1 and len(lines) == 1, proc.stderr
    assert lines[0].startswith(f"error: {NO_SPACE} ") and "nothing was lost" in lines[0], lines[0]
    assert str(where) in lines[0], (str(where), lines[0])
    return False


def whole(db: Path, before) -> None:
    """Labels, rounds and every vector there before are as they were (an index cut short
    by the full disk may have committed batches before it: those are kept too)."""
    after = snapshot(db)
    assert (after.labels, after.rounds) == (before.labels, before.rounds), "labels or rounds changed"
    assert all(after.vectors.get(i) == v for i, v in before.vectors.items()), "a vector changed or was lost"
    proc = run_cli("check", "--db", db)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.fixture
def setup(template, disk):
    """The collection copied as a closed one lies on disk: without SQLite's -shm and -wal
    files, which a full disk leaves no room to make (the snapshot reads the template,
    whose -wal is empty: its writers have all closed)."""
    db = disk / "coll"
    before = snapshot(template / "coll")
    shutil.copytree(template / "coll", db, ignore=shutil.ignore_patterns("*-shm", "*-wal"))
    return template, disk, db, before


# Commands on the collection: each either works or says "no space"; afterwards, with space
# freed, the same command works and the collection is whole.
COMMANDS = {
    "index": lambda t, db: ("index", t / "more", "--db", db, "-q"),
    "ingest": lambda t, db: ("ingest", t / "shards", "--db", db, "-q"),
    "undo": lambda t, db: ("undo", "c", "--db", db),
    "check": lambda t, db: ("check", "--db", db),
}


@pytest.mark.parametrize("free_kib", FREE_KIB)
@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_a_command_on_a_full_disk_says_so_in_one_line(setup, command, free_kib):
    template, disk, db, before = setup
    filler = fill(disk, free_kib)
    args = COMMANDS[command](template, db)
    worked = assert_worked_or_no_space(run_cli(*args), db)
    filler.unlink()
    if not worked:
        whole(db, before)  # nothing was lost
        assert run_cli(*args).returncode == 0, f"{command} failed again with space freed"
    proc = run_cli("check", "--db", db)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def same_content(path: Path, reference: Path) -> bool:
    if path.suffix != ".safetensors":
        return path.read_bytes() == reference.read_bytes()
    from safetensors import safe_open

    # The metadata's order in the header is not fixed: compare what the files hold.
    with safe_open(str(path), "numpy") as a, safe_open(str(reference), "numpy") as b:
        return (
            a.metadata() == b.metadata()
            and set(a.keys()) == set(b.keys())
            and all((a.get_tensor(k) == b.get_tensor(k)).all() for k in a.keys())
        )


@pytest.mark.parametrize("free_kib", FREE_KIB)
def test_export_on_a_full_disk_leaves_no_truncated_file(setup, free_kib):
    template, disk, db, before = setup
    out = disk / "out"
    filler = fill(disk, free_kib)
    # Which runs out first, the collection's SQLite files or the output, names its folder.
    worked = assert_worked_or_no_space(run_cli("export", "c", "--out", out, "--db", db), disk)
    reference = template / "reference"
    names = sorted(p.name for p in reference.iterdir())
    present = sorted(p.name for p in out.iterdir()) if out.exists() else []
    assert set(present) <= set(names), present  # no temporary file left behind
    for name in present:  # a file under its final name is whole
        assert same_content(out / name, reference / name), name
    assert present == names or not worked
    filler.unlink()
    whole(db, before)


@pytest.mark.parametrize("free_kib", FREE_KIB)
def test_embed_on_a_full_disk_leaves_no_truncated_shard(setup, free_kib):
    template, disk, _, _ = setup
    out = disk / "shards"
    filler = fill(disk, free_kib)
    args = ("embed", template / "more", "--out", out, "--shard-size", "20", "-q")
    assert_worked_or_no_space(run_cli(*args), out)
    leftovers = [p for p in out.rglob("*.tmp")] if out.exists() else []
    assert not leftovers, leftovers
    filler.unlink()
    # Every shard under its final name is whole: the resumed run and an ingest read them all.
    assert run_cli(*args).returncode == 0
    proc = run_cli("ingest", out, "--db", disk / "new", "-q")
    assert proc.returncode == 0, proc.stderr
    assert json.loads((out / "manifest.json").read_text())["shards"].keys() == {"00000", "00001", "00002"}


API_TRIAL = """
import sys
sys.path.insert(0, {tests!r})
from conftest import ColorEncoder
from localq.collection.collection import Collection
from localq.errors import LocalqError
from localq.loop.trainer import Trainer
try:
    with Collection.open({db!r}) as coll:
        coll.bind_encoder(ColorEncoder())
        t = Trainer.open(coll, "c")
        t.submit({{h.id: 1.0 for h in t.next_batch(4)}})
        t.undo()
        coll.set_setting("note", "x" * 200_000)
except LocalqError as exc:
    print(type(exc).__name__, exc)
    sys.exit(3)
print("worked")
"""


@pytest.mark.parametrize("free_kib", FREE_KIB)
def test_the_python_api_raises_localq_errors_on_a_full_disk(setup, free_kib):
    template, disk, db, before = setup
    filler = fill(disk, free_kib)
    code = API_TRIAL.format(tests=str(Path(__file__).resolve().parents[1]), db=str(db))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env(), cwd="/", timeout=300)
    assert "Traceback" not in proc.stderr, proc.stderr  # a raw sqlite3 or OS error escaped
    if proc.returncode == 3:
        assert proc.stdout.startswith("DiskFull ") and NO_SPACE in proc.stdout, proc.stdout
    else:
        assert proc.returncode == 0 and "worked" in proc.stdout, proc.stdout + proc.stderr
    filler.unlink()
    proc = run_cli("check", "--db", db)
    assert proc.returncode == 0, proc.stdout + proc.stderr
