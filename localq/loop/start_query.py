"""A classifier's starting point: the query vector of its examples, its start bias, its pool.

These are the steps ``Trainer.create`` takes before any classifier exists, and the pool
rule every later round keeps (retrieval and background sampling read ``pool_mask``).
They need only a collection and the settings, never a Trainer, so they sit apart from
trainer.py and do not import it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from localq.collection.collection import Collection
from localq.errors import LocalqError
from localq.loop.trainer_types import Settings

# The starting bias puts the prediction threshold at this quantile of the start query's
# scores over its pool (never a held-out split), so an unlabeled classifier predicts its
# top ~1% positive.
START_POSITIVE_FRACTION = 0.01


def pool_mask(collection: Collection, settings: Settings) -> np.ndarray:
    """Live images a classifier may retrieve or sample as background: its pool split, minus dev."""
    mask = collection.live_mask()
    if settings.pool_split is not None:
        mask &= collection.split_mask(settings.pool_split)
        if settings.exclude_dev:
            from localq.loop.devsplit import dev_mask

            mask &= ~dev_mask(collection, settings.pool_split)
    return mask


def start_bias(collection: Collection, query: np.ndarray, settings: Settings) -> float:
    # Over the pool only: a held-out split must not shape even the starting threshold,
    # or a benchmark's round-0 precision and recall would depend on the images it scores.
    pool = pool_mask(collection, settings)
    if not pool.any():
        return 0.0
    scores = collection.index.scores(query)  # one pass, no copy of the pool's rows
    return -float(np.quantile(scores[pool], 1.0 - START_POSITIVE_FRACTION))


def example_vectors(collection: Collection, images: Sequence[int | str | Path]) -> np.ndarray:
    """One vector per example: a collection id's stored row, or a file embedded by the collection's encoder."""
    from localq.imageio import open_image

    vectors = []
    n_rows = collection.rows()
    for item in images:
        if isinstance(item, (int, np.integer)) or (
            isinstance(item, str) and item.isdigit() and not Path(item).exists()
        ):
            image_id = int(item)
            if not 0 <= image_id < n_rows:
                raise LocalqError(f"image id {image_id} is not in the collection")
            vectors.append(collection.vector_of_row(image_id))
        else:
            vectors.append(collection.encoder().encode_images([open_image(item)])[0])
    return np.stack(vectors)
