"""The Encoder contract, and what its implementations share.

``model_id`` names the exact vectors an encoder produces (architecture, weights, text
bridge), so a collection can refuse vectors from a different one. The implementations
(lite.py, clip.py) import this module; the factory that picks one is factory.py, so no
import runs back up.
"""

from __future__ import annotations

import hashlib
import os
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import numpy as np

from localq.arrays import unit_rows

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
