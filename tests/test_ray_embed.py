"""`localq embed --ray` on a real local Ray cluster (127.0.0.1, 2 CPUs): the same
vectors and metadata as the in-process path, and `index --ray` end to end.

Ray is a test dependency (`pip install -e '.[test,ray]'`, what .ci/run installs): these
tests fail, never skip, where it is missing."""

import numpy as np
import pytest

import conftest
from conftest import ColorEncoder, write_image
from localq import shards
from localq.collection import Collection
from localq.embed import embed_to_shards


@pytest.fixture(scope="module")
def ray_cluster():
    import ray
    import ray.cloudpickle

    # The test encoder lives in conftest, which Ray workers cannot import: ship it by value.
    ray.cloudpickle.register_pickle_by_value(conftest)
    ray.init(num_cpus=2, include_dashboard=False, address="local", _node_ip_address="127.0.0.1")
    try:
        yield ray
    finally:
        ray.shutdown()


@pytest.fixture
def many_photos(tmp_path):
    """40 images of random colours and sizes (JPEG and PNG) plus one broken file."""
    rng = np.random.default_rng(1)
    root = tmp_path / "photos"
    for i in range(40):
        colour = tuple(int(c) for c in rng.integers(0, 255, 3))
        size = (int(rng.integers(8, 64)), int(rng.integers(8, 64)))
        write_image(root / f"c{i % 3}" / f"img{i:03d}.{'jpg' if i % 2 else 'png'}", colour, size)
    (root / "c0" / "zz-broken.jpg").write_bytes(b"\xff\xd8\xff not really")
    return root


def shard_contents(out):
    found = [shards.read_shard(s) for s in shards.list_shards(out)]
    return np.concatenate([d.vectors for d in found]), [d.metadata for d in found]


def test_ray_gives_the_in_process_vectors(ray_cluster, many_photos, tmp_path):
    local = embed_to_shards(many_photos, tmp_path / "local", encoder_factory=ColorEncoder, shard_size=16,
                            dtype="float32", batch_size=8)
    on_ray = embed_to_shards(many_photos, tmp_path / "ray", encoder_factory=ColorEncoder, shard_size=16,
                             dtype="float32", batch_size=8, ray_address="auto")
    assert on_ray.engine.startswith("ray") and (on_ray.shards_written, on_ray.embedded) == (3, 40)
    a, meta_a = shard_contents(tmp_path / "local")
    b, meta_b = shard_contents(tmp_path / "ray")
    assert a.shape == b.shape == (41, 15)
    assert np.abs(a - b).max() <= 1e-4
    assert meta_a == meta_b  # paths, hashes, sizes, skip reasons, row by row
    assert local.skipped == on_ray.skipped and len(on_ray.skipped) == 1


def test_ray_run_resumes_a_partial_shard_set(ray_cluster, many_photos, tmp_path):
    import json

    out = tmp_path / "ray"
    embed_to_shards(many_photos, out, encoder_factory=ColorEncoder, shard_size=10, ray_address="auto")
    before, _ = shard_contents(out)
    manifest = json.loads((out / "manifest.json").read_text())
    del manifest["shards"]["00002"]  # as if the job had died before listing it
    (out / "manifest.json").write_text(json.dumps(manifest))
    again = embed_to_shards(many_photos, out, encoder_factory=ColorEncoder, shard_size=10, ray_address="auto")
    assert (again.shards_existing, again.shards_written) == (4, 1)
    after, _ = shard_contents(out)
    np.testing.assert_array_equal(before, after)


def test_index_with_ray_embeds_then_ingests(ray_cluster, colour_folder, tmp_path):
    from localq.ingest import EMBED_DIR, index_on_ray

    coll = Collection.open(tmp_path / "c", create=True)
    reports = index_on_ray(coll, [colour_folder], ColorEncoder(), with_labels=True, address="auto",
                           batch_size=4, encoder_factory=ColorEncoder)
    assert sum(r.added for r in reports) == 12 and coll.store.count_live() == 12
    assert coll.index.ntotal == 12 and not any((coll.root / EMBED_DIR).iterdir())
    assert [h.label for h in coll.search_text("green", k=3)] == ["green"] * 3
    # Same folder again: nothing new.
    again = index_on_ray(coll, [colour_folder], ColorEncoder(), with_labels=True, address="auto",
                         batch_size=4, encoder_factory=ColorEncoder)
    assert sum(r.added for r in again) == 0 and coll.store.count_live() == 12


def test_ray_with_the_real_default_encoder(ray_cluster, many_photos, tmp_path):
    # One check with lite0 itself (torch in the actors, 1 thread each) on a few images.
    import shutil

    few = tmp_path / "few"
    for p in sorted(many_photos.rglob("img00*"))[:6]:
        (few / p.parent.name).mkdir(parents=True, exist_ok=True)
        shutil.copy(p, few / p.parent.name / p.name)
    embed_to_shards(few, tmp_path / "local", encoder_spec="lite0", dtype="float32", shard_size=3)
    embed_to_shards(few, tmp_path / "ray", encoder_spec="lite0", dtype="float32", shard_size=3,
                    ray_address="auto", workers=2)
    a, _ = shard_contents(tmp_path / "local")
    b, _ = shard_contents(tmp_path / "ray")
    assert a.shape == (6, 1280) and np.abs(a - b).max() <= 1e-4

