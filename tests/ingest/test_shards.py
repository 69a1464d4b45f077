"""Embedding shards: `localq embed` in-process, `localq ingest` of localq's and of
clip-retrieval-layout shards, resuming, and refusing bad shards (the Ray path is in
test_ray_embed.py)."""

import json

import numpy as np
import pytest
from click.testing import CliRunner

import localq.encoders
from conftest import ColorEncoder, OtherEncoder, write_image
from localq.collection.collection import Collection
from localq.errors import BadShard, EncoderMismatch, EncoderUnavailable
from localq.ingest import shards
from localq.ingest.embed import embed_to_shards
from localq.ingest.shard_ingest import ingest_shards


@pytest.fixture
def photos(colour_folder):
    """12 colour images in split/class folders plus one file that is not an image."""
    (colour_folder / "train" / "red" / "broken.png").write_bytes(b"not a png")
    return colour_folder


def embed(src, out, **kw):
    return embed_to_shards(src, out, encoder_factory=ColorEncoder, shard_size=kw.pop("shard_size", 5), **kw)


def test_embed_writes_clip_retrieval_layout(photos, tmp_path):
    out = tmp_path / "shards"
    report = embed(photos, out, dtype="float16")
    assert (report.images, report.shards_total, report.shards_written, report.embedded) == (13, 3, 3, 12)
    assert report.skipped == [(str(photos / "train" / "red" / "broken.png"), "not an image")]
    manifest = json.loads((out / "manifest.json").read_text())
    assert (manifest["model_id"], manifest["dim"], manifest["dtype"]) == ("test-colour/v1", 15, "float16")
    assert sorted(manifest["shards"]) == ["00000", "00001", "00002"]
    import pyarrow.parquet as pq
    from PIL import Image

    rows = 0
    for shard in shards.list_shards(out):
        raw = np.load(shard.vectors)
        table = pq.read_table(shard.metadata).to_pydict()
        assert raw.dtype == np.float16 and raw.shape[1] == 15 and len(raw) == len(table["image_path"])
        for vector, path, reason, label, split, width in zip(
            raw, table["image_path"], table["skip_reason"], table["label"], table["split"], table["width"]
        ):
            rows += 1
            if reason:
                assert not vector.any() and path.endswith("broken.png")
                continue
            want = ColorEncoder().encode_images([Image.open(path)])[0]
            np.testing.assert_allclose(vector.astype(np.float32), want, atol=2e-3)
            assert path.split("/")[-2] == label and path.split("/")[-3] == split and width == 16
        assert set(table) >= {"image_path", "size", "mtime", "hash", "width", "height", "label", "split", "skip_reason"}
    assert rows == 13


def test_embed_resumes_only_missing_shards(photos, tmp_path):
    out = tmp_path / "shards"
    embed(photos, out, dtype="float32")
    before = {s.key: np.load(s.vectors) for s in shards.list_shards(out)}
    # As if killed after writing shard 1's files but before listing it, and before shard 2.
    manifest = json.loads((out / "manifest.json").read_text())
    del manifest["shards"]["00001"], manifest["shards"]["00002"]
    (out / "manifest.json").write_text(json.dumps(manifest))
    shards.emb_path(out, "00002").unlink()
    np.save(shards.emb_path(out, "00001"), np.zeros((2, 15), np.float32))  # a stale half-written file
    report = embed(photos, out, dtype="float32")
    assert (report.shards_existing, report.shards_written) == (1, 2)
    for s in shards.list_shards(out):
        np.testing.assert_array_equal(np.load(s.vectors), before[s.key])
    assert embed(photos, out, dtype="float32").shards_written == 0


def test_embed_refuses_a_changed_source_or_other_options(photos, tmp_path):
    out = tmp_path / "shards"
    embed(photos, out)
    write_image(photos / "train" / "blue" / "aaa-new.png", (0, 0, 200))  # shifts every later row
    with pytest.raises(BadShard, match="listing changed"):
        embed(photos, out)
    with pytest.raises(BadShard, match="--shard-size"):
        embed(photos, out, shard_size=4)


def test_embed_from_a_csv_list(photos, tmp_path):
    listed = sorted(str(p.relative_to(photos)) for p in photos.rglob("*.png"))[:4] + ["gone/missing.png"]
    (photos / "list.csv").write_text("image_path,label\n" + "".join(f"{p},x\n" for p in listed))
    report = embed(photos / "list.csv", tmp_path / "shards")
    assert report.images == 5 and ("unreadable" in dict(report.skipped)[str(photos / "gone" / "missing.png")])


def test_ingest_localq_shards_is_idempotent(photos, tmp_path):
    out = tmp_path / "shards"
    embed(photos, out)
    coll = Collection.open(tmp_path / "c", create=True)
    report = ingest_shards(coll, out, ColorEncoder(), with_labels=True)
    assert (report.shards_ingested, report.added, len(report.skipped)) == (3, 12, 1)
    assert coll.store.count_live() == 12 and coll.index.ntotal == coll.store.n_rows() == 12
    assert [s.path for s in coll.store.skipped()] == [str(photos / "train" / "red" / "broken.png")]
    hits = coll.search_text("red", k=3)
    assert [h.label for h in hits] == ["red"] * 3
    np.testing.assert_allclose(
        coll.index.matrix()[hits[0].id],
        ColorEncoder().encode_images([__import__("PIL.Image").Image.open(hits[0].path)])[0],
        atol=2e-3,
    )
    again = ingest_shards(coll, out, ColorEncoder())
    assert (again.shards_already, again.shards_ingested, again.added) == (3, 0, 0)
    # Shards written again elsewhere hold the same paths and content: nothing is doubled.
    embed(photos, tmp_path / "copy")
    copy = ingest_shards(coll, tmp_path / "copy", ColorEncoder())
    assert (copy.shards_ingested, copy.added, copy.present) == (3, 0, 12)
    assert coll.store.count_live() == 12
    coll.close()
    # A new collection takes the manifest's model (load_encoder is the real one: ask for ours).
    fresh = Collection.open(tmp_path / "c2", create=True)
    ingest_shards(fresh, out, ColorEncoder())
    assert fresh.model_id == "test-colour/v1" and fresh.store.count_live() == 12


def test_ingest_refuses_a_model_or_dim_mismatch(photos, tmp_path):
    out = tmp_path / "shards"
    embed(photos, out)
    coll = Collection.open(tmp_path / "c", create=True)
    coll.bind_encoder(OtherEncoder())
    with pytest.raises(EncoderMismatch, match="ingest them into another --db"):
        ingest_shards(coll, out)
    with pytest.raises(EncoderMismatch, match="were made with test-colour/v1, not test-other/v1"):
        ingest_shards(Collection.open(tmp_path / "d", create=True), out, OtherEncoder())
    assert coll.store.n_rows() == 0


def clip_retrieval_dir(root, paths, vectors_per_shard, *, keys=("0", "1")):
    """What clip-retrieval writes: img_emb/img_emb_N.npy (float16) and
    metadata/metadata_N.parquet with image_path and caption, no manifest."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    (root / "img_emb").mkdir(parents=True)
    (root / "metadata").mkdir()
    start = 0
    for key, vectors in zip(keys, vectors_per_shard):
        n = len(vectors)
        np.save(root / "img_emb" / f"img_emb_{key}.npy", vectors.astype(np.float16))
        chunk = paths[start : start + n]
        pq.write_table(
            pa.table({"image_path": chunk, "caption": [f"a photo {i}" for i in range(n)]}),
            root / "metadata" / f"metadata_{key}.parquet",
        )
        start += n
    return root


def test_ingest_a_hand_made_clip_retrieval_directory(photos, tmp_path):
    from PIL import Image

    files = sorted(p for p in photos.rglob("*.png") if p.name != "broken.png")
    vectors = ColorEncoder().encode_images([Image.open(p) for p in files])
    paths = [str(p) for p in files[:-1]] + ["/nowhere/unreachable.jpg"]  # last row: file not here
    root = clip_retrieval_dir(tmp_path / "clip", paths, [vectors[:7], vectors[7:]])
    coll = Collection.open(tmp_path / "c", create=True)
    with pytest.raises(EncoderUnavailable, match="no manifest.json.*--encoder"):
        ingest_shards(coll, root)
    report = ingest_shards(coll, root, ColorEncoder())
    assert (report.shards_ingested, report.added) == (2, 12)
    assert coll.index.ntotal == coll.store.n_rows() == 12
    rows = {r.path: r for r in coll.store.live_files().values()}
    first = rows[str(files[0])]
    assert (first.size, first.mtime) == (files[0].stat().st_size, files[0].stat().st_mtime)  # filled from the file
    assert (rows["/nowhere/unreachable.jpg"].size, rows["/nowhere/unreachable.jpg"].mtime) == (0, 0.0)
    hits = coll.search_text("blue", k=2)
    assert all("/blue/" in h.path for h in hits)
    assert ingest_shards(coll, root, ColorEncoder()).shards_already == 2


def _damage(kind, root):
    emb, meta = root / "img_emb" / "img_emb_1.npy", root / "metadata" / "metadata_1.parquet"
    if kind == "row count mismatch":
        v = np.load(emb)
        np.save(emb, v[:-1])
        return "4 vectors but 5 metadata rows"
    if kind == "NaN row":
        v = np.load(emb)
        v[2, 3] = np.nan
        np.save(emb, v)
        return "row 2 is NaN"
    if kind == "unnormalized row":
        v = np.load(emb)
        v[1] *= 3
        np.save(emb, v)
        return r"row 1 has norm 3\.00|row 1 has norm 2\.99"
    if kind == "missing metadata":
        meta.unlink()
        return "metadata file .* is missing"
    if kind == "truncated npy":
        emb.write_bytes(emb.read_bytes()[:-40])
        return "unreadable or truncated"
    raise AssertionError(kind)


@pytest.mark.parametrize(
    "kind", ["row count mismatch", "NaN row", "unnormalized row", "missing metadata", "truncated npy"]
)
def test_a_bad_shard_is_one_line_and_nothing_of_it_is_ingested(tmp_path, kind):
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((10, 15)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    root = clip_retrieval_dir(tmp_path / "clip", [f"/x/{i}.jpg" for i in range(10)], [vectors[:5], vectors[5:]])
    pattern = _damage(kind, root)
    coll = Collection.open(tmp_path / "c", create=True)
    with pytest.raises(BadShard, match=pattern) as err:
        ingest_shards(coll, root, ColorEncoder())
    assert "\n" not in str(err.value)
    # Shard 0 went in whole; nothing of shard 1; ids and vectors still line up.
    assert coll.store.n_rows() == coll.index.ntotal == 5
    coll.close()
    with Collection.open(tmp_path / "c") as again:
        assert again.index.ntotal == again.store.n_rows() == 5
        np.testing.assert_allclose(again.index.matrix(), vectors[:5], atol=2e-3)
        ids, _ = again.index.search(vectors[3], 1)
        assert again.store.images(ids)[0].path == "/x/3.jpg"


def test_cli_embed_then_ingest(photos, tmp_path, monkeypatch):
    monkeypatch.setattr(
        localq.encoders, "load_encoder", lambda spec="lite0", weights=None: ColorEncoder(), raising=False
    )
    from localq.cli import cli

    runner = CliRunner()
    out, db = str(tmp_path / "shards"), str(tmp_path / "c")
    result = runner.invoke(
        cli, ["embed", str(photos), "--out", out, "--shard-size", "4", "--json"], catch_exceptions=False
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["shards_written"] == 4
    result = runner.invoke(cli, ["ingest", out, "--db", db, "--labels", "--json"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["images"] == 12
    result = runner.invoke(cli, ["ingest", out, "--db", db, "--index", "ivf"], catch_exceptions=False)
    assert "0 shards ingested, 4 already in" in result.output
    assert (tmp_path / "c" / "vectors.ivf").exists()  # the setting applies even with nothing new
    shards.emb_path(tmp_path / "shards", "00003").write_bytes(b"\x93NUMPY")  # truncated
    result = runner.invoke(cli, ["ingest", out, "--db", str(tmp_path / "other"), "-q"])
    assert result.exit_code == 1 and result.output.startswith("error: ") and result.output.count("\n") == 1


def test_help_imports_neither_ray_nor_pyarrow_nor_torch():
    import subprocess
    import sys

    code = (
        "import sys; from localq.cli import cli; "
        "print(sorted(m for m in ('ray', 'pyarrow', 'torch', 'faiss') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


@pytest.mark.slow
def test_embed_on_an_unreachable_ray_address_is_one_line_at_once(photos, tmp_path):
    # ray.init retries a dead HOST:PORT for minutes; nothing listens on port 1 here.
    import subprocess
    import sys

    out = tmp_path / "shards"
    proc = subprocess.run(
        [sys.executable, "-m", "localq", "embed", str(photos), "--out", str(out), "--ray", "127.0.0.1:1"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.startswith("error: cannot reach a Ray cluster at '127.0.0.1:1'") and proc.stderr.count("\n") == 1
    assert not list(out.glob("img_emb/*.npy"))  # nothing embedded


@pytest.mark.slow
def test_embed_on_a_local_ray_cluster_prints_only_its_own_lines(photos, tmp_path):
    """What a person sees from `localq embed --ray local`: the progress line and the summary,
    none of Ray's own notices (token authentication, the core worker's per-actor ERROR line
    about restarts, workers' forwarded logs). The real default encoder runs in the actors."""
    import subprocess
    import sys

    out = tmp_path / "shards"
    proc = subprocess.run(
        [sys.executable, "-m", "localq", "embed", str(photos), "--out", str(out), "--ray", "local", "--workers", "1"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert "12 embedded" in proc.stdout + proc.stderr and "1 skipped" in proc.stdout + proc.stderr
    noise = [
        line for line in proc.stderr.splitlines() if line.strip() and not line.startswith("embedding ")
    ]  # stderr is a pipe: plain progress lines
    assert noise == [], noise
    assert len(list(out.glob("img_emb/*.npy"))) == 1
