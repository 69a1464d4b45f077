"""The dev split: a fixed part of a pool split kept aside for choosing settings.

A benchmark whose defaults were chosen on the split it reports measures its own tuning,
not the method. So ``localq bench --tune`` (and ``scripts/research_fit.py``) retrieve from
the pool minus dev and measure AP on dev; the held-out evaluation split (val / test) is
never read for a choice. Ordinary report runs retrieve from the whole pool and measure
on the held-out split.

Membership is decided by the image's content hash (the ``hash`` the indexer stored), so
the same file is on the same side on every machine and in every re-index, whatever its
path or row id, and dev is always a subset of the pool split: it can never meet the
evaluation split.
"""

from __future__ import annotations

import hashlib

import numpy as np

DEV_FRACTION = 0.2
DEV_SALT = b"localq-dev-v1:"

_cache: dict[tuple, np.ndarray] = {}


def is_dev(content_hash: str, fraction: float = DEV_FRACTION) -> bool:
    digest = hashlib.sha256(DEV_SALT + content_hash.encode()).digest()
    return int.from_bytes(digest[:8], "little") / 2.0**64 < fraction


def dev_mask(collection, split: str, fraction: float = DEV_FRACTION) -> np.ndarray:
    """Bool mask over the collection's rows: the images of ``split`` that belong to dev."""
    n = collection.rows()
    key = (str(collection.root), n, split, fraction)
    if key not in _cache:
        mask = np.zeros(n, dtype=bool)
        ids = np.flatnonzero(collection.split_mask(split))
        for row in collection.image_rows(ids):
            mask[row.id] = is_dev(row.hash, fraction)
        if len(_cache) > 8:
            _cache.clear()
        _cache[key] = mask
    return _cache[key].copy()
