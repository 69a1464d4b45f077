"""The whole path on real photos with the real built-in encoder: index, search, train, predict."""

import json

import pytest
from click.testing import CliRunner

from conftest import IMAGENETTE, needs_imagenette
from localq.cli import cli

pytestmark = pytest.mark.slow  # the real encoder on Imagenette images

CLASSES = {"n02102040": "English springer", "n03028079": "church", "n03888257": "parachute"}


def small_imagenette(root, per_class=8):
    """A few dozen real val images, linked into split/class/file folders."""
    for synset in CLASSES:
        files = sorted((IMAGENETTE / "val" / synset).iterdir())[:per_class]
        target = root / "val" / synset
        target.mkdir(parents=True)
        for f in files:
            (target / f.name).symlink_to(f)
    return root


@needs_imagenette
def test_index_search_train_predict_on_imagenette(tmp_path):
    src = small_imagenette(tmp_path / "src")
    (src / "val" / "n03028079" / "broken.JPEG").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    db = str(tmp_path / "db")
    runner = CliRunner()

    def run(*args):
        result = runner.invoke(cli, [*args, "--db", db], catch_exceptions=False)
        assert result.exit_code == 0, result.output
        return result.output

    out = json.loads(run("index", str(src), "--labels", "--json"))
    assert out["added"] == 24 and len(out["skipped"]) == 1
    assert out["skipped"][0]["path"].endswith("broken.JPEG") and out["skipped"][0]["reason"]
    hits = json.loads(run("search", "a photo of a church", "-k", "5", "--json"))["results"]
    assert [h["label"] for h in hits] == ["n03028079"] * 5

    from localq.collection.collection import Collection
    from localq.loop.trainer import Trainer

    with Collection.open(db) as coll:
        dog = Trainer.create(coll, "dog", prompt="a photo of a dog")
        labels = coll.store.labels_by_id()
        for _ in range(2):
            dog.submit({h.id: 1.0 if labels[h.id] == "n02102040" else -1.0 for h in dog.next_batch(6)})
        ev = dog.evaluate()
        assert ev.target == "n02102040" and ev.ap > 0.9
        path = dog.save(tmp_path / "dog.safetensors")
    preds = json.loads(run("predict", "dog", "--json"))["predictions"]
    assert [p["label"] for p in preds[:5]] == ["n02102040"] * 5
    with Collection.open(db) as coll:
        again = Trainer.create(coll, "dog-reloaded", weights_file=path)
        assert [p.label for p in again.predict(limit=5)] == ["n02102040"] * 5
