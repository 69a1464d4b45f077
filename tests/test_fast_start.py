"""Fast commands and indexing behind the UI (issue 11 part B): the prompt-vector cache, the
built-in encoder's lazy CNN, the decode pipeline, spread order, background indexing."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import numpy as np
import pytest

from conftest import ColorEncoder, write_image
from localq import prompt_cache
from localq.collection import Collection
from localq.indexer import index_paths, spread_order
from localq.scan import FileEntry

ROOT = Path(__file__).resolve().parents[1]


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
    first = _run("""
        import json, sys
        from localq.encoders import load_encoder
        enc = load_encoder("lite0")
        print(json.dumps({"loaded": enc.model_loaded, "v": enc.encode_texts(["a golf ball"])[0].tolist()}))
    """, cache)
    assert first["loaded"] and list(cache.glob("head-lite0-*.npy"))
    second = _run("""
        import json, sys
        from localq.encoders import load_encoder
        enc = load_encoder("lite0")
        v = enc.encode_texts(["a golf ball"])[0].tolist()
        heavy = [m for m in ("torch", "timm", "transformers", "sentence_transformers") if m in sys.modules]
        print(json.dumps({"loaded": enc.model_loaded, "heavy": heavy, "v": v, "dim": enc.dim}))
    """, cache)
    assert second["loaded"] is False and second["heavy"] == [] and second["dim"] == 1280
    np.testing.assert_allclose(second["v"], first["v"], atol=1e-6)


def test_search_with_a_cached_prompt_imports_no_torch(cache, tmp_path):
    """`localq search` end to end on a lite0 collection (synthetic vectors, real model_id)."""
    _run("""
        import json, numpy as np
        from localq.collection import Collection
        from localq.encoders import load_encoder
        from localq.store import NewImage
        coll = Collection.open(%r, create=True)
        coll.bind_encoder(load_encoder("lite0"))
        rng = np.random.default_rng(0)
        x = rng.standard_normal((20, 1280)).astype(np.float32)
        coll.store.add_images([NewImage(f"/x/{i}.jpg", f"h{i}", 1, 0.0, 1, 1) for i in range(20)], x)
        coll.close()
        print(json.dumps({}))
    """ % str(tmp_path / "coll"), cache)
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
            report = index_paths(coll, [colour_folder], ColorEncoder(), with_labels=True, batch_size=5,
                                 decode_workers=workers, order=order)
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
    entries = [FileEntry(f"/p/{folder}/{i}.jpg", 1, 0.0) for folder, n in (("a", 3), ("b", 1), ("c", 2)) for i in range(n)]
    order = [e.path for e in spread_order(entries)]
    assert order == ["/p/a/0.jpg", "/p/b/0.jpg", "/p/c/0.jpg", "/p/a/1.jpg", "/p/c/1.jpg", "/p/a/2.jpg"]
    assert spread_order(entries) == spread_order(entries)
