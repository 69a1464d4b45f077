import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import ColorEncoder, OtherEncoder, write_image
from localq.collection.collection import Collection
from localq.errors import EncoderMismatch, VectorsDamaged
from localq.ingest.indexer import index_paths


def open_coll(tmp_path) -> Collection:
    return Collection.open(tmp_path / "coll", create=True)


def test_index_folder_with_labels_and_search(tmp_path, colour_folder, colour_encoder):
    with open_coll(tmp_path) as coll:
        report = index_paths(coll, [colour_folder], colour_encoder, with_labels=True)
        assert (report.added, report.skipped, report.interrupted) == (12, [], False)
        rows = coll.store.live_files()
        red = rows[str(colour_folder / "train" / "red" / "red0.png")]
        assert (red.label, red.split, red.width, red.height) == ("red", "train", 16, 16)
        assert sorted(r.id for r in rows.values()) == list(range(12))
        hits = coll.search(colour_encoder.encode_texts(["red"])[0], k=4)
        assert [h.label for h in hits] == ["red"] * 4
    # vectors.npy holds every vector, in id order, as a file NumPy reads without localq.
    with Collection.open(tmp_path / "coll") as again:
        assert again.index.ntotal == 12
    on_disk = np.load(tmp_path / "coll" / "vectors.npy")
    assert on_disk.shape == (12, colour_encoder.dim)
    np.testing.assert_allclose(on_disk[red.id], colour_encoder.encode_images([Image.open(red.path)])[0], atol=1e-6)


def test_reindex_is_idempotent(tmp_path, colour_folder, colour_encoder):
    with open_coll(tmp_path) as coll:
        index_paths(coll, [colour_folder], colour_encoder)
        before = coll.store.live_files()
        report = index_paths(coll, [colour_folder], colour_encoder)
        assert (report.added, report.removed, report.unchanged, report.embedded) == (0, 0, 12, 0)
        assert coll.store.live_files() == before
        assert coll.index.ntotal == 12


def test_changed_deleted_and_new_files(tmp_path, colour_folder, colour_encoder):
    with open_coll(tmp_path) as coll:
        index_paths(coll, [colour_folder], colour_encoder)
        changed = colour_folder / "train" / "red" / "red0.png"
        old_id = coll.store.live_files()[str(changed)].id
        write_image(changed, (250, 250, 250))
        os.utime(changed, (1, 1))  # a stat that surely differs
        (colour_folder / "val" / "blue" / "blue0.png").unlink()
        write_image(colour_folder / "new" / "yellow.png", (255, 255, 0))
        report = index_paths(coll, [colour_folder], colour_encoder)
        assert (report.added, report.replaced, report.removed) == (1, 1, 1)
        live = coll.store.live_files()
        assert len(live) == 12 and live[str(changed)].id != old_id
        hits = coll.search(colour_encoder.encode_texts(["white"])[0], k=1)
        assert hits[0].path == str(changed)
        # Tombstoned rows are never returned, even when k exceeds the live count.
        assert {h.id for h in coll.search(np.ones(15, np.float32), k=100)} == {r.id for r in live.values()}


def test_touch_without_change_keeps_vector(tmp_path, colour_folder, colour_encoder):
    with open_coll(tmp_path) as coll:
        index_paths(coll, [colour_folder], colour_encoder)
        path = colour_folder / "train" / "green" / "green1.png"
        os.utime(path, (5, 5))
        report = index_paths(coll, [colour_folder], colour_encoder)
        assert (report.added, report.replaced, report.touched, report.embedded) == (0, 0, 1, 0)


def test_identical_content_reuses_the_vector(tmp_path, colour_encoder):
    a = write_image(tmp_path / "pics" / "a.png", (10, 200, 10))
    (tmp_path / "pics" / "copy.png").write_bytes(a.read_bytes())
    with open_coll(tmp_path) as coll:
        report = index_paths(coll, [tmp_path / "pics"], colour_encoder, batch_size=1)
        assert (report.added, report.reused, report.embedded) == (2, 1, 1)


def test_bad_files_are_skipped_recorded_and_not_retried(tmp_path, colour_encoder):
    pics = tmp_path / "pics"
    write_image(pics / "good.png", (200, 0, 0))
    (pics / "empty.jpg").write_bytes(b"")
    (pics / "notes.png").write_text("this is not an image")
    good_jpeg = write_image(tmp_path / "full.jpg", (0, 0, 200), size=(64, 64))
    (pics / "truncated.jpg").write_bytes(good_jpeg.read_bytes()[:200])
    (pics / "dangling.png").symlink_to(tmp_path / "missing.png")
    with open_coll(tmp_path) as coll:
        report = index_paths(coll, [pics], colour_encoder)
        reasons = {Path(p).name: r for p, r in report.skipped}
        assert report.added == 1
        assert reasons["empty.jpg"] == "empty file"
        assert reasons["notes.png"] == "not an image"
        assert reasons["truncated.jpg"] in ("truncated image",) or reasons["truncated.jpg"].startswith("corrupt")
        assert reasons["dangling.png"] == "broken symlink"
        assert {Path(s.path).name for s in coll.store.skipped()} == set(reasons)
        again = index_paths(coll, [pics], colour_encoder)
        assert again.skipped_known == 3 and again.added == 0  # unchanged bad files are not re-decoded


def test_collection_refuses_another_encoder(tmp_path, colour_folder, colour_encoder):
    with open_coll(tmp_path) as coll:
        index_paths(coll, [colour_folder], colour_encoder)
        with pytest.raises(EncoderMismatch, match="test-colour/v1"):
            index_paths(coll, [colour_folder], OtherEncoder())


def test_ctrl_c_keeps_finished_batches_and_resumes(tmp_path, colour_folder, colour_encoder):
    calls = []

    def interrupt_after_first_batch(done, total):
        calls.append(done)
        if done >= 4:
            raise KeyboardInterrupt

    with open_coll(tmp_path) as coll:
        report = index_paths(coll, [colour_folder], colour_encoder, batch_size=4, progress=interrupt_after_first_batch)
        assert report.interrupted and report.added == 4
    with open_coll(tmp_path) as coll:
        report = index_paths(coll, [colour_folder], colour_encoder, batch_size=4)
        assert report.added == 8 and report.unchanged == 4
        assert coll.store.count_live() == 12 == coll.index.ntotal


@pytest.mark.slow
def test_kill_9_mid_run_resumes_without_duplicates(tmp_path, colour_folder):
    """A real SIGKILL after the second batch commits: the FAISS file was never saved."""
    script = textwrap.dedent(f"""
        import os, signal, sys
        sys.path.insert(0, {str(Path(__file__).resolve().parents[1])!r})
        from conftest import ColorEncoder
        from localq.collection.collection import Collection
        from localq.ingest.indexer import index_paths
        def progress(done, total):
            if done >= 8:
                os.kill(os.getpid(), signal.SIGKILL)
        coll = Collection.open({str(tmp_path / "coll")!r}, create=True)
        index_paths(coll, [{str(colour_folder)!r}], ColorEncoder(), batch_size=4, progress=progress)
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()
    with open_coll(tmp_path) as coll:
        assert coll.store.count_live() == 8
        report = index_paths(coll, [colour_folder], ColorEncoder(), batch_size=4)
        assert (report.added, report.unchanged) == (4, 8)
        paths = [r.path for r in coll.store.live_files().values()]
        assert len(paths) == len(set(paths)) == 12 == coll.index.ntotal


def test_a_vectors_file_from_another_collection_is_refused_on_open(tmp_path, colour_folder, colour_encoder):
    # vectors.npy is the vectors' only copy: a wrong one is named, never searched.
    for name, order in (("coll", "scan"), ("other", "spread")):
        with Collection.open(tmp_path / name, create=True) as coll:
            index_paths(coll, [colour_folder], colour_encoder, order=order, batch_size=5)
    (tmp_path / "coll" / "vectors.npy").write_bytes((tmp_path / "other" / "vectors.npy").read_bytes())
    with open_coll(tmp_path) as coll, pytest.raises(VectorsDamaged, match="do not match the digests"):
        coll.index
