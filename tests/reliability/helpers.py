"""Shared pieces of the reliability suite: real subprocesses, collections, before/after snapshots."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
TEST_CLI = Path(__file__).resolve().parent / "localq_test_cli.py"
NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]


def env() -> dict:
    e = dict(os.environ)
    e["PYTHONPATH"] = str(REPO) + os.pathsep + e.get("PYTHONPATH", "")
    return e


def cli_args(*args, as_nobody: bool = False) -> list[str]:
    cmd = [sys.executable, str(TEST_CLI), *map(str, args)]
    # CI runs as root, whose permission override would make every permission test pass
    # vacuously: drop to an unprivileged user (already one when not root).
    return NOBODY + cmd if as_nobody and os.geteuid() == 0 else cmd


def run_cli(*args, as_nobody: bool = False, timeout: float = 300, extra_env: dict | None = None):
    return subprocess.run(
        cli_args(*args, as_nobody=as_nobody),
        capture_output=True,
        text=True,
        env={**env(), **(extra_env or {})},
        timeout=timeout,
        cwd="/",
    )


def popen_cli(*args, extra_env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen(
        cli_args(*args),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**env(), **(extra_env or {})},
        cwd="/",
    )


def popen_python(code: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env(), cwd="/"
    )


def assert_one_line_error(proc, *needles: str) -> None:
    """Exit 1 and exactly one line on stderr, starting with "error:", no traceback."""
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 1, (proc.returncode, proc.stderr)
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert "Traceback" not in proc.stderr
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


def write_folder(root: Path, n: int, seed: int, prefix: str = "img") -> Path:
    """``n`` PNGs of distinct random colours (each its own nearest neighbour)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        colour = tuple(int(c) for c in rng.integers(0, 256, size=3))
        Image.new("RGB", (8, 8), colour).save(root / f"{prefix}{i:03d}.png")
    return root


def indexed_with_a_round(base: Path, n: int, seed: int) -> Path:
    """``n`` images indexed by the CLI into ``base/coll``, with classifier "c" (prompt "red")
    holding one round of three positive labels; returns the collection's directory."""
    from conftest import ColorEncoder
    from localq.collection.collection import Collection
    from localq.loop.trainer import Trainer

    pics = write_folder(base / "pics", n, seed=seed)
    db = base / "coll"
    assert run_cli("index", pics, "--db", db, "-q").returncode == 0
    with Collection.open(db) as coll:
        coll.bind_encoder(ColorEncoder())
        t = Trainer.create(coll, "c", prompt="red")
        t.submit({h.id: 1.0 for h in t.next_batch(3)})
    return db


@dataclass
class Snapshot:
    """What must never be lost: labels, rounds (with weights) from SQLite, vectors from vectors.npy."""

    labels: list
    rounds: list
    vectors: dict | None

    def assert_kept_in(self, other: "Snapshot") -> None:
        assert other.labels == self.labels, "labels changed"
        assert other.rounds == self.rounds, "rounds changed"
        if other.vectors is None:  # a snapshot of SQLite alone
            return
        assert other.vectors.keys() == self.vectors.keys(), "vectors lost or added"
        for i, v in self.vectors.items():
            assert other.vectors[i] == v, f"vector {i} changed"


def snapshot(db_dir: Path, vectors: bool = True) -> Snapshot:
    conn = sqlite3.connect(f"file:{db_dir / 'localq.db'}?mode=ro", uri=True)
    try:
        labels = conn.execute("SELECT classifier_id, round, image_id, score FROM labels ORDER BY 1, 2, 3").fetchall()
        rounds = conn.execute("SELECT classifier_id, round, weights, bias FROM rounds ORDER BY 1, 2").fetchall()
        n = conn.execute("SELECT coalesce(max(id) + 1, 0) FROM images").fetchone()[0]
    finally:
        conn.close()
    if not vectors:
        return Snapshot(labels, rounds, None)
    matrix = np.load(db_dir / "vectors.npy", mmap_mode="r")[:n] if n else np.zeros((0, 1), np.float32)
    return Snapshot(labels, rounds, {i: matrix[i].tobytes() for i in range(n)})


def vectors_match_images(db_dir: Path) -> None:
    """vectors.npy, read by NumPy alone, holds for each of SQLite's images the tests' colour
    encoder's vector of that image's file (row i is image i), and SQLite's digest chain
    matches the file's rows segment by segment."""
    import hashlib

    from PIL import Image

    from conftest import ColorEncoder

    conn = sqlite3.connect(f"file:{db_dir / 'localq.db'}?mode=ro", uri=True)
    try:
        paths = conn.execute("SELECT id, path FROM images ORDER BY id").fetchall()
        chain = conn.execute("SELECT end_row, digest FROM vector_digests ORDER BY end_row").fetchall()
    finally:
        conn.close()
    matrix = np.load(db_dir / "vectors.npy", mmap_mode="r")
    assert [i for i, _ in paths] == list(range(len(paths))) and len(matrix) >= len(paths)
    expected = ColorEncoder().encode_images([Image.open(p) for _, p in paths])
    np.testing.assert_allclose(matrix[: len(paths)], expected, atol=1e-6)
    previous, start = "", 0
    for end, digest in chain:
        h = hashlib.sha256(previous.encode())
        h.update(np.ascontiguousarray(matrix[start:end], dtype="<f4").tobytes())
        assert h.hexdigest()[:32] == digest, f"rows {start}..{end - 1} do not match their digest"
        previous, start = digest, end
    assert start == len(paths), "the digest chain does not end at SQLite's row count"
