"""Fast commands and indexing behind the UI (issue 11 part B): the prompt-vector cache, the
built-in encoder's lazy CNN, the decode pipeline, spread order, background indexing."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import threading
from pathlib import Path

import numpy as np
import pytest

from conftest import ColorEncoder, write_image
from localq.collection.collection import Collection
from localq.encoders import prompt_cache
from localq.ingest.indexer import index_paths, spread_order
from localq.ingest.scan import FileEntry

pytestmark = pytest.mark.slow  # times whole localq processes

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("LOCALQ_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


class CountingEncoder(ColorEncoder):
    def __init__(self):
        self.texts: list[str] = []

    def encode_texts(self, texts):
        self.texts += list(texts)
        return super().encode_texts(texts)


# -- the prompt-vector cache --------------------------------------------------------------------


def test_prompt_cache_hits_misses_and_keys_by_model(cache):
    calls = []

    def encode(text):
        calls.append(text)
        return np.full(4, len(calls), np.float32)

    first = prompt_cache.text_vector("model-a", "a dog", encode)
    again = prompt_cache.text_vector("model-a", "a dog", encode)
    other_prompt = prompt_cache.text_vector("model-a", "a cat", encode)
    other_model = prompt_cache.text_vector("model-b", "a dog", encode)
    assert calls == ["a dog", "a cat", "a dog"]  # a hit calls nothing; model and prompt both key
    np.testing.assert_array_equal(first, again)
    assert other_prompt[0] == 2 and other_model[0] == 3
    assert prompt_cache.lookup("model-a", "a dog")[0] == 1 and prompt_cache.lookup("model-c", "a dog") is None
    assert (cache / prompt_cache.CACHE_FILE).is_file()


def test_an_unwritable_or_damaged_cache_only_costs_a_recomputation(cache):
    cache.mkdir(parents=True)
    (cache / prompt_cache.CACHE_FILE).write_bytes(b"not a database at all" * 100)
    vector = prompt_cache.text_vector("m", "p", lambda t: np.ones(3, np.float32))
    np.testing.assert_array_equal(vector, np.ones(3))


def test_collection_serves_a_repeated_prompt_without_the_encoder(tmp_path, cache, colour_folder):
    encoder = CountingEncoder()
    with Collection.open(tmp_path / "coll", create=True) as coll:
        index_paths(coll, [colour_folder], encoder)
    with Collection.open(tmp_path / "coll") as coll:
        coll.bind_encoder(encoder)
        hits = coll.search_text("red", k=3)
        again = coll.search_text("red", k=3)
        assert encoder.texts == ["red"] and hits == again
    with Collection.open(tmp_path / "coll") as coll:  # a new process would not load an encoder at all
        assert coll._encoder is None
        assert coll.search_text("red", k=3) == hits and coll._encoder is None


# -- the built-in encoder: text without the CNN ---------------------------------------------------


def _run(code: str, cache: Path) -> dict:
    env = {"LOCALQ_CACHE": str(cache), "PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_lite_text_query_loads_neither_the_cnn_nor_torch(cache, tmp_path):
    # First process: no head matrix cached yet, so it loads the CNN once and caches the head.
    first = _run(
        """
        import json, sys
        from localq.encoders import load_encoder
        enc = load_encoder("lite0")
        print(json.dumps({"loaded": enc.model_loaded, "v": enc.encode_texts(["a golf ball"])[0].tolist()}))
    """,
        cache,
    )
    assert first["loaded"] and list(cache.glob("head-lite0-*.npy"))
    second = _run(
        """
        import json, sys
        from localq.encoders import load_encoder
        enc = load_encoder("lite0")
        v = enc.encode_texts(["a golf ball"])[0].tolist()
        heavy = [m for m in ("torch", "timm", "transformers", "sentence_transformers") if m in sys.modules]
        print(json.dumps({"loaded": enc.model_loaded, "heavy": heavy, "v": v, "dim": enc.dim}))
    """,
        cache,
    )
    assert second["loaded"] is False and second["heavy"] == [] and second["dim"] == 1280
    np.testing.assert_allclose(second["v"], first["v"], atol=1e-6)


def test_search_with_a_cached_prompt_imports_no_torch(cache, tmp_path):
    """`localq search` end to end on a lite0 collection (synthetic vectors, real model_id)."""
    _run(
        """
        import json, numpy as np
        from localq.collection.collection import Collection
        from localq.encoders import load_encoder
        from localq.storage.rows import NewImage
        coll = Collection.open(%r, create=True)
        coll.bind_encoder(load_encoder("lite0"))
        rng = np.random.default_rng(0)
        x = rng.standard_normal((20, 1280)).astype(np.float32)
        coll.add_images([NewImage(f"/x/{i}.jpg", f"h{i}", 1, 0.0, 1, 1) for i in range(20)], x)
        coll.close()
        print(json.dumps({}))
    """
        % str(tmp_path / "coll"),
        cache,
    )
    search = """
        import json, sys
        from localq.cli import cli
        try:
            cli(["search", "a photo of a dog", "--db", %r, "-k", "3", "--json"])
        except SystemExit:
            pass
        print(json.dumps({"torch": "torch" in sys.modules, "minilm": "localq.encoders.minilm" in sys.modules}))
    """ % str(tmp_path / "coll")
    assert _run(search, cache) == {"torch": False, "minilm": True}  # a new prompt: MiniLM, still no torch
    assert _run(search, cache) == {"torch": False, "minilm": False}  # repeated: no model at all


# -- the decode pipeline and the indexing order ---------------------------------------------------


def _snapshot(root: Path) -> tuple[list, np.ndarray]:
    with Collection.open(root) as coll:
        rows = sorted((r.id, r.path, r.hash, r.width, r.height, r.label) for r in coll.store.live_files().values())
        return rows, coll.index.matrix().copy()


@pytest.mark.parametrize("order", ["scan", "spread"])
def test_pipeline_gives_the_ids_and_vectors_of_the_sequential_loop(tmp_path, colour_folder, order):
    (colour_folder / "train" / "red" / "bad.png").write_text("not an image")
    snapshots = []
    for workers in (0, 1, 2):
        root = tmp_path / f"coll{workers}"
        with Collection.open(root, create=True) as coll:
            report = index_paths(
                coll,
                [colour_folder],
                ColorEncoder(),
                with_labels=True,
                batch_size=5,
                decode_workers=workers,
                order=order,
            )
            assert (report.added, len(report.skipped)) == (12, 1)
        snapshots.append(_snapshot(root))
    for rows, matrix in snapshots[1:]:
        assert rows == snapshots[0][0]
        np.testing.assert_array_equal(matrix, snapshots[0][1])


def test_pipeline_error_reaches_the_caller_and_stops_the_thread(tmp_path, colour_folder):
    class Broken(ColorEncoder):
        def preprocess(self, img):
            raise RuntimeError("preprocess broke")

    before = threading.active_count()
    with Collection.open(tmp_path / "coll", create=True) as coll:
        with pytest.raises(RuntimeError, match="preprocess broke"):
            index_paths(coll, [colour_folder], Broken(), batch_size=4)
    assert threading.active_count() == before


def test_spread_order_interleaves_folders_deterministically():
    entries = [
        FileEntry(f"/p/{folder}/{i}.jpg", 1, 0.0) for folder, n in (("a", 3), ("b", 1), ("c", 2)) for i in range(n)
    ]
    order = [e.path for e in spread_order(entries)]
    assert order == ["/p/a/0.jpg", "/p/b/0.jpg", "/p/c/0.jpg", "/p/a/1.jpg", "/p/c/1.jpg", "/p/a/2.jpg"]
    assert spread_order(entries) == spread_order(entries)


# -- indexing behind the labeling UI -------------------------------------------------------------


class GatedEncoder(ColorEncoder):
    """Embeds ``free`` batches, then waits until ``gate`` is set: the test decides how far indexing got."""

    def __init__(self, free: int):
        self.free = threading.Semaphore(free)
        self.gate = threading.Event()

    def encode_batch(self, batch):
        if not self.gate.is_set() and not self.free.acquire(blocking=False):
            self.gate.wait()
        return super().encode_batch(batch)


def _photos(root: Path, per_class: int = 20) -> Path:
    for name, rgb in (("red", (220, 20, 20)), ("green", (20, 200, 30)), ("blue", (30, 40, 210))):
        for i in range(per_class):
            write_image(root / name / f"{name}{i:02d}.png", tuple(max(0, c - i) for c in rgb))
    return root


def _ui(tmp_path, encoder, warmup: int = 8):
    from localq.ingest.background import BackgroundIndexer
    from localq.loop.trainer import Trainer
    from localq.loop.trainer_types import Settings
    from localq.tui.app import TrainApp, trainer_opener

    photos, root = _photos(tmp_path / "photos"), tmp_path / "coll"
    with Collection.open(root, create=True) as coll:
        coll.bind_encoder(encoder)
    background = BackgroundIndexer(root, [photos], encoder, with_labels=True, batch_size=4, warmup=warmup).start()
    coll = Collection.open(root)
    coll.bind_encoder(encoder)
    Trainer.create(coll, "reds", prompt="red", settings=Settings(k=6))
    app = TrainApp(
        trainer_opener(coll, "reds", background),
        root,
        thumbnails="halfblock",
        colors="truecolor",
        background=background,
    )
    return app, background, root


async def _until(pilot, condition, what: str):
    for _ in range(1500):  # a hang guard, not a timing test
        if condition():
            return
        await pilot.pause(0.02)
    raise AssertionError(f"never happened: {what}")


@pytest.mark.asyncio
async def test_the_ui_opens_while_indexing_and_later_batches_see_new_rows(tmp_path, cache):
    pytest.importorskip("textual")
    import asyncio

    from test_tui import cards, settle

    encoder = GatedEncoder(free=2)  # 2 batches of 4 = the 8-image warm-up, then indexing waits
    app, background, root = _ui(tmp_path, encoder)
    try:
        async with app.run_test(size=(100, 40)) as pilot:
            await settle(pilot)
            first = [c.hit.id for c in cards(app)]
            assert len(first) == 6 and max(first) < 8
            assert await app.core.call(lambda t: t.collection.rows()) == 8
            status = app.batch_screen.status_line
            await _until(pilot, lambda: status.extra.startswith("indexing 8/60"), "progress on the status line")
            encoder.gate.set()
            await asyncio.to_thread(background.wait_for, 60)
            # One label, five skips: all six cards are seen (unset cards would not be, and could
            # fill the next batch from the first 8 rows whatever the strategy).
            await pilot.press(*"3 j x j x j x j x j x".split(), "f")
            await settle(pilot)
            second = [c.hit.id for c in cards(app)]
            # Only 2 of the first 8 images are still unseen: the new batch comes from the new rows.
            assert len(second) == 6 and sum(i >= 8 for i in second) >= 4
            assert await app.core.call(lambda t: t.collection.rows()) == 60
            await _until(pilot, lambda: status.extra == "indexed 60/60", "the finished count")
            await pilot.press("q")
            await _until(pilot, lambda: not app.is_running, "quit")
    finally:
        encoder.gate.set()
        background.stop()


@pytest.mark.asyncio
async def test_quitting_mid_way_loses_nothing_and_the_next_run_resumes(tmp_path, cache):
    pytest.importorskip("textual")
    from test_tui import settle

    from localq.ingest.background import BackgroundIndexer, pending

    encoder = GatedEncoder(free=2)
    app, background, root = _ui(tmp_path, encoder)
    try:
        async with app.run_test(size=(100, 40)) as pilot:
            await settle(pilot)
            await pilot.press("q")
            await _until(pilot, background._stop.is_set, "the indexer asked to stop")
            encoder.gate.set()  # the batch in flight lands; no further one starts
            await _until(pilot, lambda: not app.is_running, "quit")
    finally:
        encoder.gate.set()
        background.stop()
    assert background.report.interrupted
    with Collection.open(root) as coll:
        indexed = coll.store.count_live()
        assert 8 <= indexed < 60
        unfinished = pending(coll)
        assert unfinished == {"roots": [str((tmp_path / "photos").resolve())], "with_labels": True}
    # What `localq train` does when it finds an unfinished run: resume it.
    again = BackgroundIndexer(root, unfinished["roots"], ColorEncoder(), with_labels=True, batch_size=4).start()
    again.wait_for(10**9)
    again.stop()
    assert again.report.added == 60 - indexed and not again.report.interrupted
    with Collection.open(root) as coll:
        paths = [r.path for r in coll.store.live_files().values()]
        assert len(paths) == len(set(paths)) == 60 == coll.index.ntotal
        assert pending(coll) is None


def test_a_cache_behind_an_unsearchable_directory_only_costs_a_recomputation(tmp_path):
    # The CI failure this guards: a user whose $LOCALQ_CACHE (or home) sits in a directory
    # they may not enter got a PermissionError traceback from a text search.
    public = Path(tempfile.mkdtemp(prefix="localq-cache-", dir="/tmp"))
    try:
        public.chmod(0o755)
        locked = public / "locked"
        (locked / "cache").mkdir(parents=True)
        prompt_cache.remember("m", "p", np.zeros(3, np.float32))  # a real cache elsewhere, untouched
        locked.chmod(0)
        code = (
            "import numpy as np; from localq.encoders import prompt_cache\n"
            "v = prompt_cache.text_vector('m', 'p', lambda t: np.ones(3, np.float32))\n"
            "print(v.tolist(), prompt_cache.lookup('m', 'p'))"
        )
        cmd = [sys.executable, "-c", code]
        if os.geteuid() == 0:  # root enters any directory: run as the unprivileged user instead
            cmd = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"] + cmd
        out = subprocess.run(
            cmd,
            capture_output=True,
            text=True,
            cwd="/",
            env={**os.environ, "PYTHONPATH": str(ROOT), "LOCALQ_CACHE": str(locked / "cache")},
        )
        assert out.returncode == 0, out.stderr
        assert out.stdout.strip() == "[1.0, 1.0, 1.0] None"
    finally:
        locked.chmod(0o755)
        shutil.rmtree(public, ignore_errors=True)
