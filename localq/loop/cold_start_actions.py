"""A person breaking a cold start: another prompt, an example image, "more like this".

When rounds bring no positives (``LoopSummary.cold``), the UI offers these actions. Each
sets the pending batch (or labels one image) under a strategy name that the next submit
records in the round history, e.g. "prompt:a red fox", "like:123", "example:fox.jpg".
They drive the loop only through the Trainer's own pending batch and ``submit``, so they
are split from trainer.py and mixed into Trainer as ``ColdStartActions``; this module
never imports localq.loop.trainer.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np

from localq.collection.collection import Collection, Hit
from localq.errors import BadImage, EncoderMismatch, ImageNotFound, InvalidPrompt, InvalidScores, LocalqError
from localq.loop.trainer_types import LoopSummary, Settings
from localq.storage.store import ClassifierRow, RoundRow


class ColdStartActions:
    """Mixin for Trainer: batches from another query, single examples, and the loop's summary."""

    # What the Trainer provides (attributes, properties and methods there).
    collection: Collection
    settings: Settings
    row: ClassifierRow
    round: int
    pending: list[Hit]
    _pending_strategy: str | None
    unseen_mask: Callable[[], np.ndarray]
    label_counts: Callable[[], tuple[int, int]]
    label_history: Callable[[], list[tuple[int, int, float]]]
    submit: Callable[..., RoundRow]
    _set_pending: Callable[[np.ndarray, str | None], list[Hit]]

    def batch_for_prompt(self, text: str, k: int | None = None) -> list[Hit]:
        """The top-k unseen images (pool split respected) for another text query; the next submit labels them."""
        text = (text or "").strip()
        if not text:
            raise InvalidPrompt("the prompt is empty: type what the images should show")
        query = np.asarray(self.collection.text_vector(text), np.float32)
        return self._set_pending(self._nearest_unseen(query, k), f"prompt:{text}")

    def batch_like(self, image_id: int, k: int | None = None) -> list[Hit]:
        """The image's k nearest unseen neighbours (itself excluded); the next submit labels them."""
        image_id = self._check_image_id(image_id)
        query = np.asarray(self.collection.index.matrix()[image_id], np.float32)
        return self._set_pending(self._nearest_unseen(query, k, exclude=image_id), f"like:{image_id}")

    def add_example(self, item: int | str | Path, score: float = 1.0, *, encoder=None) -> RoundRow:
        """Label one image directly, as a round of its own (``example:<name>``), fit on all labels.

        ``item`` is a collection id, or a file: a file not yet in the collection is indexed
        into it first with the collection's encoder (``encoder`` must be that same model).
        The pending batch stays pending (minus the example), so a batch on screen survives."""
        if isinstance(item, (int, np.integer)) or (isinstance(item, str) and item.strip().isdigit()
                                                   and not Path(item.strip()).exists()):
            image_id = self._check_image_id(int(item))
            name = str(image_id)
        else:
            image_id = self._index_example_file(Path(str(item).strip()).expanduser(), encoder)
            name = Path(str(item)).name
        rows = self.collection.image_rows([image_id])
        split = rows[0].split if rows else None
        if self.settings.pool_split is not None and split not in (None, self.settings.pool_split):
            raise InvalidScores(f"image {image_id} is in the {split!r} split, held out from this classifier's "
                                f"pool ({self.settings.pool_split!r}): labeling it would leak into evaluation")
        pending, strategy = self.pending, self._pending_strategy
        self._set_pending(np.array([image_id], dtype=np.int64), f"example:{name}")
        try:
            return self.submit({image_id: score})
        finally:
            self.pending = [h for h in pending if h.id != image_id]
            self._pending_strategy = strategy

    def summary(self) -> LoopSummary:
        """Labels so far and whether the loop looks stuck without positives (what the UI warns about)."""
        per_round: dict[int, list[float]] = {}
        for round_no, _, score in self.label_history():
            per_round.setdefault(round_no, []).append(score)
        streak = 0
        for round_no in sorted(per_round, reverse=True):  # trailing rounds whose labels held no positive
            if any(s > 0 for s in per_round[round_no]):
                break
            streak += 1
        last = per_round.get(max(per_round)) if per_round else []
        pos, neg = self.label_counts()
        return LoopSummary(rounds=self.round, positives=pos, negatives=neg, last_round_labels=len(last),
                           last_round_positives=sum(s > 0 for s in last), rounds_without_positive=streak)

    def _nearest_unseen(self, query: np.ndarray, k: int | None, exclude: int | None = None) -> np.ndarray:
        k = self.settings.k if k is None else int(k)
        if k < 1:
            raise LocalqError(f"a batch needs at least one image, not k={k}")
        allowed = self.unseen_mask()
        if exclude is not None:
            allowed[exclude] = False
        ids, _ = self.collection.searcher.search(query, k, allowed)
        return np.asarray(ids, dtype=np.int64)

    def _check_image_id(self, image_id) -> int:
        try:
            image_id = int(image_id)
        except (TypeError, ValueError):
            raise ImageNotFound(f"{image_id!r} is not an image id") from None
        live = self.collection.live_mask()
        if not 0 <= image_id < len(live) or not live[image_id]:
            raise ImageNotFound(f"image id {image_id} is not in the collection")
        return image_id

    def _index_example_file(self, path: Path, encoder) -> int:
        """Index ``path`` into the collection (a no-op when it is there already) and return its id."""
        from localq.imageio import read_image
        from localq.ingest.indexer import index_paths

        if not path.is_file():
            raise ImageNotFound(f"no image file at {path}" + (" (it is a folder)" if path.is_dir() else ""))
        encoder = encoder or self.collection.encoder()
        if encoder.model_id != self.collection.model_id:
            raise EncoderMismatch(f"collection {self.collection.root} was built with {self.collection.model_id}, "
                                  f"not {encoder.model_id}: the example must be embedded by the same model")
        try:
            read_image(path, getattr(encoder, "image_size", None))  # refuse before anything is written
        except BadImage as exc:
            raise BadImage(f"cannot use {path} as an example: {exc.reason}") from None
        report = index_paths(self.collection, [path], encoder)
        if report.skipped:
            raise BadImage(f"cannot use {path} as an example: {report.skipped[0][1]}")
        image_id = self.collection.id_of_path(path)
        if image_id is None:  # not expected: index_paths either adds the file or reports a skip
            raise ImageNotFound(f"{path} could not be added to the collection")
        return image_id
