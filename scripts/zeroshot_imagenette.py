"""Zero-shot text retrieval on Imagenette val: for each class, rank all 3,925 images by
the prompt "a photo of a {class}" and report precision@10 and average precision.

    python scripts/zeroshot_imagenette.py [--encoder lite0] [--weights PATH] [--cache FILE]

Image vectors are cached (default: /tmp/localq-zeroshot/<model_id>.npz) so that a rerun,
e.g. after changing the text bridge, takes seconds. Prints a markdown table.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from pathlib import Path

import localq  # noqa: F401  (runtime tuning before numpy/torch load)

# isort: split
import numpy as np

from localq.bench.datasets import synset_word
from localq.encoders import load_encoder
from localq.imageio import read_image
from localq.loop.metrics import average_precision, precision_at_k

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT / ".." / "shared" / "datasets" / "imagenette" / "val"
# synset folder -> class name (timm's WordNet table; matches ../shared/datasets/README.md)
CLASSES = {
    s: synset_word(s)
    for s in (
        "n01440764",
        "n02102040",
        "n02979186",
        "n03000684",
        "n03028079",
        "n03394916",
        "n03417042",
        "n03425413",
        "n03445777",
        "n03888257",
    )
}
PROMPT = "a photo of a {}"


def list_images(data: Path) -> tuple[list[Path], np.ndarray]:
    files, labels = [], []
    for label, synset in enumerate(CLASSES):
        folder = data / synset
        if not folder.is_dir():
            sys.exit(f"missing {folder}: point --data at imagenette/val")
        for path in sorted(folder.iterdir()):
            files.append(path)
            labels.append(label)
    return files, np.asarray(labels)


def embed(encoder, files: list[Path], batch_size: int) -> np.ndarray:
    import torch

    vectors = np.zeros((len(files), encoder.dim), np.float32)
    start = time.perf_counter()
    for lo in range(0, len(files), batch_size):
        chunk = files[lo : lo + batch_size]
        batch = torch.stack([encoder.preprocess(read_image(f, encoder.image_size).image) for f in chunk])
        vectors[lo : lo + len(chunk)] = encoder.encode_batch(batch)
        done = lo + len(chunk)
        rate = done / (time.perf_counter() - start)
        print(f"\rembedded {done}/{len(files)} ({rate:.0f} img/s)", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    return vectors


def cached_vectors(encoder, files: list[Path], cache: Path, batch_size: int) -> np.ndarray:
    names = np.asarray([f"{f.parent.name}/{f.name}" for f in files])
    if cache.is_file():
        with np.load(cache) as saved:
            if str(saved["model_id"]) == encoder.model_id and np.array_equal(saved["names"], names):
                print(f"image vectors from {cache}", file=sys.stderr)
                return saved["vectors"]
    vectors = embed(encoder, files, batch_size)
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.savez(cache, vectors=vectors, names=names, model_id=np.asarray(encoder.model_id))
    return vectors


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="imagenette/val folder")
    parser.add_argument("--encoder", default="lite0", help="encoder spec (lite0, clip:<arch>, ...)")
    parser.add_argument("--weights", default=None, help="checkpoint file for clip:<arch>")
    parser.add_argument("--cache", type=Path, default=None, help="where to keep the image vectors (.npz)")
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args(argv)

    encoder = load_encoder(args.encoder, args.weights)
    files, labels = list_images(args.data.resolve())
    cache = args.cache or Path("/tmp/localq-zeroshot") / (re.sub(r"[^A-Za-z0-9.+-]+", "_", encoder.model_id) + ".npz")
    vectors = cached_vectors(encoder, files, cache, args.batch_size)

    prompts = [PROMPT.format(name) for name in CLASSES.values()]
    scores = vectors @ encoder.encode_texts(prompts).T  # [images, classes]

    print(f"Zero-shot text retrieval, Imagenette val ({len(files)} images), encoder `{encoder.model_id}`\n")
    print("| class | prompt | P@10 | AP |")
    print("|---|---|---:|---:|")
    p10s, aps = [], []
    for c, (name, prompt) in enumerate(zip(CLASSES.values(), prompts)):
        relevant = labels == c
        p10s.append(precision_at_k(scores[:, c], relevant, 10))
        aps.append(average_precision(scores[:, c], relevant))
        print(f"| {name} | {prompt} | {p10s[-1]:.2f} | {aps[-1]:.3f} |")
    print(f"| **mean** | | **{np.mean(p10s):.2f}** | **{np.mean(aps):.3f}** |")
    chance = np.mean([np.mean(labels == c) for c in range(len(CLASSES))])
    print(
        f"\nChance AP is {chance:.3f}. Per-image top-1 over the 10 prompts: {np.mean(scores.argmax(1) == labels):.3f}."
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
