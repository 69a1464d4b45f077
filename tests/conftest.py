"""Shared fixtures. Core tests use a tiny deterministic encoder so that they isolate
storage, search and fitting from the (slow) real model; encoder tests use the real one."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

SHARED_DATASETS = Path(__file__).resolve().parents[1] / ".." / "shared" / "datasets"
IMAGENETTE = SHARED_DATASETS / "imagenette"

IMAGENETTE_CLASSES = {  # synset folder -> class name (../shared/datasets/README.md)
    "n01440764": "tench",
    "n02102040": "English springer",
    "n02979186": "cassette player",
    "n03000684": "chain saw",
    "n03028079": "church",
    "n03394916": "French horn",
    "n03417042": "garbage truck",
    "n03425413": "gas pump",
    "n03445777": "golf ball",
    "n03888257": "parachute",
}

needs_imagenette = pytest.mark.skipif(
    not IMAGENETTE.is_dir(), reason=f"Imagenette not found at {IMAGENETTE} (../shared is absent on this machine)"
)


class ColorEncoder:
    """Embeds an image by its mean colour and a coarse 2x2 colour layout (dim 15).

    Deterministic and instant; same interface as the real encoders. Texts map to colour
    names, so 'red' retrieves red images."""

    encoder_spec = "test-colour"
    weights = None
    model_id = "test-colour/v1"
    dim = 15
    image_size = 8
    COLOURS = {"red": (1, 0, 0), "green": (0, 1, 0), "blue": (0, 0, 1), "white": (1, 1, 1), "black": (0, 0, 0)}

    def preprocess(self, img):
        import torch

        arr = np.asarray(img.convert("RGB").resize((2, 2)), dtype=np.float32) / 255.0
        return torch.from_numpy(np.concatenate([arr.mean(axis=(0, 1)), arr.reshape(-1)]))

    def encode_batch(self, batch) -> np.ndarray:
        return _normalize(batch.numpy().astype(np.float32) + 0.05)

    def encode_images(self, images) -> np.ndarray:
        import torch

        return self.encode_batch(torch.stack([self.preprocess(i) for i in images]))

    def encode_texts(self, texts) -> np.ndarray:
        out = []
        for t in texts:
            rgb = np.array(next((v for k, v in self.COLOURS.items() if k in t.lower()), (0.5, 0.5, 0.5)), np.float32)
            out.append(np.concatenate([rgb, np.tile(rgb, 4)]) + 0.05)
        return _normalize(np.stack(out))


class OtherEncoder(ColorEncoder):
    model_id = "test-other/v1"


def _normalize(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture
def colour_encoder():
    return ColorEncoder()


def write_image(path: Path, colour, size=(16, 16), mode="RGB") -> Path:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, colour).save(path)
    return path


@pytest.fixture
def colour_folder(tmp_path) -> Path:
    """photos/{split}/{class}/*.png: 4 red, 4 green, 4 blue images in two splits."""
    root = tmp_path / "photos"
    rng = np.random.default_rng(0)
    for split, n in (("train", 3), ("val", 1)):
        for name, rgb in (("red", (220, 20, 20)), ("green", (20, 200, 30)), ("blue", (30, 40, 210))):
            for i in range(n):
                jitter = tuple(int(c + rng.integers(-15, 15)) for c in rgb)
                write_image(root / split / name / f"{name}{i}.png", jitter)
    return root


@pytest.fixture(scope="session")
def session_cache(tmp_path_factory) -> Path:
    # One cache per test session: real-encoder tests share the slow-to-build class-text
    # table, and no run reads vectors a previous run (or the user) left behind.
    return tmp_path_factory.mktemp("localq-cache")


@pytest.fixture(autouse=True)
def isolated_home(tmp_path, monkeypatch, session_cache):
    """Never touch the user's real collection or cache."""
    monkeypatch.setenv("LOCALQ_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("LOCALQ_CACHE", str(session_cache))


class VectorEncoder(ColorEncoder):
    """Stands in for an encoder on collections built from synthetic vectors."""

    model_id = "test-vectors/v1"

    def __init__(self, dim: int):
        self.dim = dim


def synthetic_collection(
    root: Path, *, clusters: int = 5, per_cluster: int = 200, dim: int = 32, seed: int = 0, spread: float = 0.6
):
    """A collection of L2-normalized Gaussian clusters; label = cluster index as text.

    Returns (collection, centres)."""
    from localq.collection.collection import Collection
    from localq.storage.rows import NewImage

    rng = np.random.default_rng(seed)
    centres = _normalize(rng.standard_normal((clusters, dim)).astype(np.float32))
    labels = np.repeat(np.arange(clusters), per_cluster)
    x = centres[labels] + spread * rng.standard_normal((len(labels), dim)).astype(np.float32) / np.sqrt(dim)
    x = _normalize(x)
    order = rng.permutation(len(x))
    x, labels = x[order], labels[order]
    coll = Collection.open(root, create=True)
    coll.bind_encoder(VectorEncoder(dim))
    rows = [NewImage(f"/synthetic/{i}.png", f"h{i}", 1, 0.0, 1, 1, str(labels[i]), "train") for i in range(len(x))]
    ids = coll.add_images(rows, x)
    assert ids == list(range(len(x)))
    return coll, centres


def with_rows_replaced(coll, root: Path, ids: np.ndarray, vectors: np.ndarray):
    """A new collection at ``root``: ``coll``'s images and vectors, but ``vectors`` at rows
    ``ids`` (vectors.npy is append-only: this is how a test changes rows)."""
    from localq.collection.collection import Collection
    from localq.storage.rows import NewImage

    matrix = np.array(coll.index.matrix())
    matrix[ids] = vectors
    other = Collection.open(root, create=True)
    other.bind_encoder(coll.encoder())
    other.add_images(
        [
            NewImage(r.path, r.hash, r.size, r.mtime, r.width, r.height, r.label, r.split)
            for r in coll.image_rows(range(coll.rows()))
        ],
        matrix,
    )
    return other


# Synthetic collections with folder labels, splits and prompts, for the benchmark and the
# loop's tests: each label's prompt is a fixed vector, images are never encoded.
def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


class PromptEncoder:
    """Maps "a photo of a <label>" to a fixed vector per label; images are never encoded."""

    encoder_spec = "test-prompt"
    weights = None
    image_size = 8

    def __init__(self, prompts: dict[str, np.ndarray]):
        import hashlib

        self.prompts = prompts
        self.dim = len(next(iter(prompts.values())))
        # model_id names one vector space (prompt vectors are cached by it), and every
        # synthetic collection draws its own prompts: the id must tell them apart.
        digest = hashlib.sha256(b"".join(np.asarray(prompts[k], np.float32).tobytes() for k in sorted(prompts)))
        self.model_id = f"test-prompt/{digest.hexdigest()[:12]}"

    def encode_texts(self, texts):
        return np.stack([_unit(self.prompts[t.split()[-1]]) for t in texts])


def make_collection(
    root: Path, vectors: np.ndarray, labels: list[str], splits: list[str], prompts: dict, paths: list[str] | None = None
):
    from localq.collection.collection import Collection
    from localq.storage.rows import NewImage

    coll = Collection.open(root, create=True)
    coll.bind_encoder(PromptEncoder(prompts))
    paths = paths or [f"/synthetic/{i}.png" for i in range(len(labels))]
    rows = [NewImage(paths[i], f"h{i}", 1, 0.0, 1, 1, labels[i], splits[i]) for i in range(len(labels))]
    coll.add_images(rows, _unit(np.asarray(vectors, np.float32)))
    coll.save_index()
    return coll


def clusters(root: Path, *, n_classes=4, train=30, val=15, dim=16, spread=0.8, prompt_noise=1.0, seed=0):
    """Gaussian clusters with a train and a val split; each prompt is its centre plus noise,
    so zero-shot is imperfect and labels have something to add."""
    rng = np.random.default_rng(seed)
    centres = _unit(rng.standard_normal((n_classes, dim)))
    labels, splits, vecs = [], [], []
    for split, n in (("train", train), ("val", val)):
        for c in range(n_classes):
            vecs.append(centres[c] + spread * rng.standard_normal((n, dim)) / np.sqrt(dim))
            labels += [str(c)] * n
            splits += [split] * n
    prompts = {str(c): centres[c] + prompt_noise * rng.standard_normal(dim) / np.sqrt(dim) for c in range(n_classes)}
    return make_collection(root, np.concatenate(vecs), labels, splits, prompts)
