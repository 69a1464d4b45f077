"""`localq embed --ray` on a real local Ray cluster (127.0.0.1, 2 CPUs): the same
vectors and metadata as the in-process path, and `index --ray` end to end.

Ray is a test dependency (`pip install -e '.[test,ray]'`, what .ci/run installs): these
tests fail, never skip, where it is missing."""

import os
import signal
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import conftest
from conftest import ColorEncoder, write_image
from localq.collection.collection import Collection
from localq.errors import EmbedFailed
from localq.ingest import shards
from localq.ingest.embed import embed_to_shards

pytestmark = pytest.mark.slow  # starts a Ray cluster


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


def test_ray_gives_the_in_process_vectors(ray_cluster, many_photos, tmp_path, capfd):
    local = embed_to_shards(
        many_photos, tmp_path / "local", encoder_factory=ColorEncoder, shard_size=16, dtype="float32", batch_size=8
    )
    on_ray = embed_to_shards(
        many_photos,
        tmp_path / "ray",
        encoder_factory=ColorEncoder,
        shard_size=16,
        dtype="float32",
        batch_size=8,
        ray_address="auto",
    )
    assert on_ray.engine.startswith("ray") and (on_ray.shards_written, on_ray.embedded) == (3, 40)
    a, meta_a = shard_contents(tmp_path / "local")
    b, meta_b = shard_contents(tmp_path / "ray")
    assert a.shape == b.shape == (41, 15)
    assert np.abs(a - b).max() <= 1e-4
    assert meta_a == meta_b  # paths, hashes, sizes, skip reasons, row by row
    assert local.skipped == on_ray.skipped and len(on_ray.skipped) == 1
    # Ray's core worker logs an ERROR line per actor about constructor arguments and
    # restarts (ray-project/ray#53727): nothing the user can act on, so it is filtered out.
    assert "core_worker.cc" not in capfd.readouterr().err


def test_the_stderr_filter_drops_only_the_matching_native_lines(capfd):
    from localq.ingest import ray_job

    notice = (
        b"[2026-12-04 22:26:49,332 E 3167 3167] core_worker.cc:2465: Actor with class name: 'MapWorker(X)' "
        b"and ID: 'ab' has constructor arguments in the object store and max_restarts > 0. See issue.\n"
    )
    with ray_job._without_native_lines(ray_job._ACTOR_ARGS_NOTICE):
        os.write(2, b"\rprogress 1/2")
        os.write(2, notice)
        os.write(2, b"[2026-12-04 22:26:50,000 E 3167 3167] core_worker.cc:99: a real failure\n")
        os.write(2, b"done\n")
    err = capfd.readouterr().err
    assert err == "\rprogress 1/2[2026-12-04 22:26:50,000 E 3167 3167] core_worker.cc:99: a real failure\ndone\n"
    os.write(2, b"after\n")  # the real stderr is back
    assert capfd.readouterr().err == "after\n"


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


def test_index_with_ray_embeds_on_the_cluster_and_indexes_as_on_one_machine(ray_cluster, colour_folder, tmp_path):
    from localq.ingest.indexer import EMBED_DIR, index_on_ray
    from localq.loop.trainer import Trainer

    def index(**kw):
        return index_on_ray(
            coll,
            [colour_folder],
            ColorEncoder(),
            with_labels=True,
            address="auto",
            batch_size=4,
            encoder_factory=ColorEncoder,
            **kw,
        )

    coll = Collection.open(tmp_path / "c", create=True)
    report = index()
    assert report.added == 12 and report.embedded == 0 and coll.count_live() == 12  # every vector came from Ray
    assert coll.index.ntotal == 12 and not any((coll.root / EMBED_DIR).iterdir())
    assert [h.label for h in coll.search_text("green", k=3)] == ["green"] * 3
    again = index()  # same folder: nothing to embed, nothing new
    assert (again.added, again.unchanged) == (0, 12) and coll.count_live() == 12

    # A labeled photo renamed keeps its id and label, as without --ray.
    trainer = Trainer.create(coll, "greens", prompt="green")
    batch = trainer.next_batch(2)
    trainer.submit({batch[0].id: 1.0, batch[1].id: -1.0})
    moved_from = Path(batch[0].path)
    moved_to = moved_from.with_name("renamed-" + moved_from.name)
    moved_from.rename(moved_to)
    report = index()
    assert (report.moved, report.added, report.removed) == (1, 0, 0)
    assert coll.id_of_path(moved_to) == batch[0].id and Trainer.open(coll, "greens").labels()[batch[0].id] == 1.0

    # Content rewritten at the same size with its mtime put back: found only with verify.
    victim = Path(batch[1].path)
    stat = victim.stat()
    write_image(victim, (250, 250, 250))
    os.utime(victim, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    if victim.stat().st_size == stat.st_size:
        assert index().replaced == 0
    assert index(verify=True).replaced == 1 and coll.id_of_path(victim) != batch[1].id


def test_ray_with_the_real_default_encoder(ray_cluster, many_photos, tmp_path):
    # One check with lite0 itself (torch in the actors, 1 thread each) on a few images.
    import shutil

    few = tmp_path / "few"
    for p in sorted(many_photos.rglob("img00*"))[:6]:
        (few / p.parent.name).mkdir(parents=True, exist_ok=True)
        shutil.copy(p, few / p.parent.name / p.name)
    embed_to_shards(few, tmp_path / "local", encoder_spec="lite0", dtype="float32", shard_size=3)
    embed_to_shards(
        few, tmp_path / "ray", encoder_spec="lite0", dtype="float32", shard_size=3, ray_address="auto", workers=2
    )
    a, _ = shard_contents(tmp_path / "local")
    b, _ = shard_contents(tmp_path / "ray")
    assert a.shape == (6, 1280) and np.abs(a - b).max() <= 1e-4


class SlowColorEncoder(ColorEncoder):
    """ColorEncoder (same vectors) that notes its process id in ``pid_dir`` when built and
    takes a while per batch, so a test can find and kill the actor mid-job."""

    def __init__(self, pid_dir):
        (pid_dir / f"{os.getpid()}.pid").touch()

    def encode_batch(self, batch):
        time.sleep(0.4)
        return super().encode_batch(batch)


def test_a_killed_ray_worker_leaves_a_finished_or_resumable_job(ray_cluster, many_photos, tmp_path):
    """Issue 12: SIGKILL an encoder actor mid-job. Either Ray restarts it and retries
    its batch (every shard right), or the job stops with a one-line error and the same
    call again completes the shard set."""
    import functools

    ray_cluster.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # SlowColorEncoder
    pid_dir = tmp_path / "pids"
    pid_dir.mkdir()
    embed_to_shards(
        many_photos, tmp_path / "local", encoder_factory=ColorEncoder, shard_size=4, dtype="float32", batch_size=2
    )
    out = tmp_path / "ray"
    job = dict(
        encoder_factory=functools.partial(SlowColorEncoder, pid_dir),
        shard_size=4,
        dtype="float32",
        batch_size=2,
        ray_address="auto",
        workers=2,
    )
    outcome = {}

    def run():
        try:
            outcome["report"] = embed_to_shards(many_photos, out, **job)
        except EmbedFailed as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    # Kill only once a shard is on disk: the actors are up and the job is half-way.
    deadline = time.monotonic() + 120
    while not (shards.read_manifest(out) or {}).get("shards") and thread.is_alive():
        assert time.monotonic() < deadline, "no shard written within 120 s"
        time.sleep(0.05)
    actors = [int(p.stem) for p in pid_dir.glob("*.pid") if int(p.stem) != os.getpid()]
    assert actors and thread.is_alive(), "the job ended before a worker could be killed"
    os.kill(actors[0], signal.SIGKILL)
    thread.join(300)
    assert not thread.is_alive(), "the job hung after its worker was killed"
    if "error" in outcome:
        message = str(outcome["error"])
        assert "\n" not in message and "run the same command again" in message
        assert len(shards.read_manifest(out)["shards"]) < 11
        again = embed_to_shards(many_photos, out, **job)
        assert again.shards_existing + again.shards_written == 11
    else:
        assert outcome["report"].shards_written == 11
    a, meta_a = shard_contents(tmp_path / "local")
    b, meta_b = shard_contents(out)
    assert a.shape == b.shape == (41, 15) and np.abs(a - b).max() <= 1e-4
    assert meta_a == meta_b


class CrashingColorEncoder(ColorEncoder):
    """Kills its own process on every batch, as a decoder crash or the OOM killer would."""

    def encode_batch(self, batch):
        os.kill(os.getpid(), signal.SIGKILL)


def test_a_worker_that_dies_on_every_try_ends_the_job_with_one_line(ray_cluster, many_photos, tmp_path):
    # Ray restarts the actor and retries the batch a few times, then gives up: one line
    # that says what to do, not a job that reloads the encoder forever.
    ray_cluster.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # CrashingColorEncoder
    started = time.monotonic()
    with pytest.raises(EmbedFailed) as failed:
        embed_to_shards(
            many_photos,
            tmp_path / "ray",
            encoder_factory=CrashingColorEncoder,
            shard_size=16,
            batch_size=8,
            ray_address="auto",
            workers=2,
        )
    message = str(failed.value)
    assert "\n" not in message and "ActorDiedError" in message and "run the same command again" in message
    assert time.monotonic() - started < 240


def test_only_the_token_enabled_notice_is_dropped(caplog):
    import logging

    from localq.ingest import ray_job

    ray_job._quiet_token_notice()
    ray_job._quiet_token_notice()  # once per process is enough; twice adds nothing
    setup = logging.getLogger("ray._private.authentication.authentication_token_setup")
    assert len(setup.filters) == 1
    with caplog.at_level(logging.WARNING, logger=setup.name):
        setup.warning("Token authentication is enabled for this Ray cluster. Set RAY_AUTH_MODE=disabled to opt out.")
        setup.warning("Token authentication is disabled for this Ray cluster. Anyone with network access ...")
    assert [r.getMessage()[:36] for r in caplog.records] == ["Token authentication is disabled for"]
