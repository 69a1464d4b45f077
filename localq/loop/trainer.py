"""Trainer: one named classifier on a collection, and the retrieve / label / fit loop.

This is the API the TUI, the CLI and the benchmark drive. Every round is persisted in
one SQLite transaction before ``submit`` returns, so a killed process loses nothing that
was submitted, and undo restores the exact earlier state.

What needs no classifier state lives beside it as functions: start_query.py (the start
vector, bias and pool, from a collection alone), label_checks.py (labels checked before a
fit), scoring.py (evaluation and predictions for any weights), sampling.py (the batch
strategies) and fit.py (the fit). None of them imports this module.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, replace
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from localq.arrays import unit
from localq.collection.collection import Collection, Hit
from localq.display import printable
from localq.errors import (
    BadImage,
    ClassifierNotFound,
    EncoderMismatch,
    ImageNotFound,
    InvalidName,
    InvalidPrompt,
    InvalidScores,
    LocalqError,
    NothingToUndo,
    StaleClassifier,
)
from localq.loop import classifier_file, sampling, scoring
from localq.loop.fit import fit_article_baseline, fit_linear
from localq.loop.label_checks import checked_id, validated_scores
from localq.loop.sampling import STRATEGIES, select
from localq.loop.start_query import example_vectors, pool_mask, start_bias
from localq.loop.trainer_types import FIT_MODES, ClassifierState, Evaluation, LoopSummary, Prediction, Settings, Undone
from localq.names import check_name, is_valid_name, suggestion
from localq.storage.rows import ClassifierRow, RoundRow


class Trainer:
    """One named classifier on a collection: its rounds, the loop, and what its weights say."""

    def __init__(self, collection: Collection, row: ClassifierRow):
        self.collection = collection
        self.store = collection.store
        self.row = row
        self.settings = Settings.from_dict(row.settings)
        self.prior = self.store.classifier_prior(row.id)
        self.pending: list[Hit] = []  # the batch handed out and not yet submitted
        self._pending_strategy: str | None = None
        # In-memory mirrors of SQLite state, refreshed on every write by this object, so a
        # round at 1M images costs one search and not several full-table reads.
        self._latest_row: RoundRow | None = None
        self._seen: np.ndarray | None = None
        # The current labels as read at a classifier version (checked on every read: one
        # small query); the labeled images' vectors and the background sample's: a round
        # reads only the rows of images labeled (or sampled) since, not all of them again.
        self._labels: dict[int, float] | None = None
        self._labels_at: tuple[str, int] | None = None
        self._labeled_rows = HeldRows()
        self._background_rows = HeldRows()
        # The classifier's change counter when the mirrors above were read: another
        # process that writes to it bumps the counter, and every write here checks it.
        self._version = self.store.classifier_version(row.id)

    # -- creating and opening ---------------------------------------------------------
    @classmethod
    def open(cls, collection: Collection, name: str) -> "Trainer":
        row = collection.store.classifier(name) if is_valid_name(name) else None
        if row is None:
            known = [c.name for c in collection.store.classifiers()]
            meant = suggestion(name, known)
            if meant is not None:  # the prompt typed instead of the name made of it
                error = ClassifierNotFound if is_valid_name(name) else InvalidName
                raise error(f"no classifier named {printable(name)!r}: did you mean {meant}?")
            check_name(name)
            raise ClassifierNotFound(f"no classifier named {name!r} (known: {', '.join(known) or 'none yet'})")
        return cls(collection, row)

    @classmethod
    def create(
        cls,
        collection: Collection,
        name: str,
        *,
        prompt: str | None = None,
        images: Sequence[int | str | Path] = (),
        weights_file: str | Path | None = None,
        settings: Settings | None = None,
        replace: bool = False,
    ) -> "Trainer":
        """Start a classifier from a text prompt, example images (ids or files) or a classifier file."""
        check_name(name)
        if sum(bool(x) for x in (prompt, images, weights_file)) != 1:
            raise LocalqError("start a classifier from exactly one of: a prompt, example images, a classifier file")
        settings = settings or Settings()
        _check_strategy(settings.strategy)
        if collection.store.classifier(name) is not None and not replace:
            raise LocalqError(f"classifier {name!r} exists: open it, or choose another name")
        bias = None
        if prompt:
            source, query = "prompt", collection.text_vector(prompt)
        elif images:
            source, query = "images", unit(example_vectors(collection, images).mean(axis=0))
            prompt = ", ".join(str(i) for i in images)
        else:
            loaded = classifier_file.load(weights_file)
            classifier_file.check_compatible(loaded, collection.model_id, collection.dim, str(weights_file))
            source, prompt = "file", loaded.meta.get("prompt") or str(weights_file)
            query, bias = loaded.weight, loaded.bias
        query = np.asarray(query, np.float32)
        if bias is None:
            bias = start_bias(collection, query, settings)
        with collection.writing():  # the existence check and the creation, with no process in between
            existing = collection.store.classifier(name)
            if existing is not None and replace:
                collection.store.delete_classifier(existing.id)
            row = collection.store.create_classifier(
                name,
                source=source,
                prompt=prompt,
                prior=unit(query),
                weights=query,
                bias=bias,
                settings=asdict(settings),
            )
        return cls(collection, row)

    # -- state ----------------------------------------------------------------------------
    @property
    def name(self) -> str:
        return self.row.name

    @property
    def round(self) -> int:
        return self._latest().round

    @property
    def weights(self) -> np.ndarray:
        return self._latest().weights

    @property
    def bias(self) -> float:
        return self._latest().bias

    @property
    def query(self) -> np.ndarray:
        return unit(self.weights)

    def _latest(self) -> RoundRow:
        if self._latest_row is None:
            self._latest_row = self.store.latest_round(self.row.id)
        return self._latest_row

    def _seen_mask(self) -> np.ndarray:
        n = self.collection.rows()
        if self._seen is None or len(self._seen) != n:
            self._seen = np.zeros(n, dtype=bool)
            seen = self.store.seen_ids(self.row.id)
            self._seen[seen[seen < n]] = True
        return self._seen

    def _name_seed(self) -> int:
        """A seed from the classifier's name: stable whatever other classifiers exist."""
        key = self.settings.seed_name or self.name
        return int.from_bytes(hashlib.sha256(key.encode()).digest()[:4], "little")

    def _reload(self) -> None:
        self._latest_row = None
        self._seen = None
        self._labels = None

    def _catch_up(self) -> bool:
        """Under the write lock: reload if another process changed this classifier; True if it had."""
        version = self.store.classifier_version(self.row.id)
        if version is None or self._version is None or version[0] != self._version[0]:
            raise StaleClassifier(f"classifier {self.name!r} was deleted (or replaced) by another process; reopen it")
        if version == self._version:
            return False
        self.row = self.store.classifier(self.name) or self.row
        self.settings = Settings.from_dict(self.row.settings)
        self._reload()
        self._version = version
        return True

    def _wrote(self) -> None:
        self._version = self.store.classifier_version(self.row.id)

    def history(self) -> list[RoundRow]:
        return self.store.rounds(self.row.id)

    def labels(self) -> dict[int, float]:
        """Each labeled image's current score, in the order given (a copy: callers may change it)."""
        return dict(self._current_labels())

    def _current_labels(self) -> dict[int, float]:
        """The labels kept here, re-read when the classifier's version moved; read-only."""
        version = self.store.classifier_version(self.row.id)
        if self._labels is None or version != self._labels_at:
            self._labels = self.store.current_labels(self.row.id)
            self._labels_at = version
        return self._labels

    def label_counts(self) -> tuple[int, int]:
        scores = list(self._current_labels().values())
        return sum(s > 0 for s in scores), sum(s < 0 for s in scores)

    def label_history(self) -> list[tuple[int, int, float]]:
        """(round, image id, score) of every label given, oldest round first."""
        return self.store.label_history(self.row.id)

    def label_rounds(self) -> dict[int, int]:
        """The round in which each labeled image got its current label."""
        return {image_id: r for r, image_id, _ in self.label_history()}

    def state(self) -> ClassifierState:
        """Where this classifier stands: what `localq classifiers` and the TUI status line show."""
        pos, neg = self.label_counts()
        ev = self.evaluate()
        return ClassifierState(
            name=self.name,
            source=self.row.source,
            prompt=self.row.prompt,
            round=self.round,
            labels_positive=pos,
            labels_negative=neg,
            seen=self.store.count_seen(self.row.id),
            strategy=self.settings.strategy,
            created_at=self.row.created_at,
            target=ev.target if ev else None,
            ap=round(ev.ap, 4) if ev else None,
        )

    @classmethod
    def states(cls, collection: Collection) -> list[ClassifierState]:
        return [cls(collection, row).state() for row in collection.classifier_rows()]

    def update_settings(self, **changes) -> None:
        for key, value in changes.items():
            if key not in Settings.__dataclass_fields__:
                raise LocalqError(f"unknown setting {key!r}")
            if key == "fit" and value not in FIT_MODES:
                raise LocalqError(f"unknown fit {value!r}: choose one of {', '.join(FIT_MODES)}")
            if key == "strategy":
                _check_strategy(value)
        with self.collection.writing():
            self._catch_up()
            for key, value in changes.items():
                setattr(self.settings, key, value)
            self.store.update_settings(self.row.id, asdict(self.settings))
            self._wrote()

    # -- the loop ------------------------------------------------------------------------------
    def unseen_mask(self) -> np.ndarray:
        return self._pool_mask() & ~self._seen_mask()

    def _pool_mask(self) -> np.ndarray:
        return pool_mask(self.collection, self.settings)

    def next_batch(self, k: int | None = None, strategy: str | None = None) -> list[Hit]:
        """The next k unseen images to label, chosen by the strategy; never a seen one."""
        k = self.settings.k if k is None else k
        strategy = strategy or self.settings.strategy
        if self.collection.refresh():  # retrieve from rows a background indexer added meanwhile
            # Rows past a count SQLite was put back to (a restored backup) are written anew:
            # the rows held are read again where the collection's rows changed at all.
            self._labeled_rows, self._background_rows = HeldRows(), HeldRows()
        _check_strategy(strategy)
        rng = np.random.default_rng([self.settings.seed, self._name_seed(), self.round])
        w, b = self.weights, self.bias
        if self.round == 0 and self.row.source != "file":
            # No fit has calibrated the start query yet: sampling.select recognises an
            # unfitted query as a unit vector with zero bias (our start bias only sets the
            # prediction threshold); auto and top take its best images, boundary and
            # diverse draw a warm-up batch among them.
            w, b = unit(w), 0.0
        pool = self._pool_mask()  # read once: the unseen mask and auto's clusters both start from it
        context = None
        if strategy == "auto":
            context = self._auto_context()
            if context.phase() == "exploring":
                context = replace(context, clusters=self._explore_clusters(pool))
        if context is not None:
            labeled = context.labeled_ids
        else:
            labels = self._current_labels()
            labeled = np.fromiter(labels, dtype=np.int64, count=len(labels))
        rows = None
        if self.settings.near_copy < 1.0:  # the near-copy check reads the labeled rows: the ones kept here
            rows = self._labeled_rows.of(self.collection.index, labeled)
        ids = select(
            strategy,
            self.collection.searcher,
            w,
            b,
            k,
            pool & ~self._seen_mask(),
            rng,
            context=context,
            labeled=labeled,
            labeled_rows=rows,
            near_copy=self.settings.near_copy,
        )
        return self._set_pending(ids, strategy)

    def _auto_context(self) -> sampling.Context:
        """What ``auto`` reads: labels so far and positives per labeled round. Its clusters
        (a k-means on first use) are added by ``next_batch`` only where it explores."""
        labels = self._current_labels()
        s = self.settings
        return sampling.Context(
            labeled_ids=np.fromiter(labels, dtype=np.int64, count=len(labels)),
            labeled_scores=np.fromiter(labels.values(), dtype=np.float32, count=len(labels)),
            batch_positives=self._batch_positives(),
            explore_first=s.explore_first,
            explore_cold=s.explore_cold,
            top_share=s.top_share,
            temperature=s.explore_temperature,
        )

    def _explore_clusters(self, pool: np.ndarray | None = None):
        """The clusters ``auto`` explores: a pool restricted to a split (a benchmark) is also
        what they are fitted on."""
        from localq.loop.explore import collection_clusters

        if self.settings.pool_split is None:
            return collection_clusters(self.collection)
        return collection_clusters(self.collection, self._pool_mask() if pool is None else pool)

    def _batch_positives(self) -> tuple[int, ...]:
        """Positive labels given in each labeled round, oldest first."""
        return tuple(self.store.positives_per_round(self.row.id))

    def phase(self) -> str:
        """What the next batch does, as the UI's status line names it: with ``auto``,
        ``start`` (nothing labeled yet: the query's best), ``exploring`` (the last batch held
        no positive, or none came back yet) or ``refining`` (sampling.Context.phase). A fixed
        strategy: ``random`` explores, the others refine. Clusters are left out: the rule
        needs only the labels."""
        if self.settings.strategy != "auto":
            return "exploring" if self.settings.strategy == "random" else "refining"
        return self._auto_context().phase()

    def restore_batch(self, ids: Sequence[int]) -> list[Hit]:
        """Make ``ids`` the pending batch again (after undo, or a UI draft), dropping seen ones."""
        unseen = self.unseen_mask()
        ids = np.array([int(i) for i in ids if 0 <= int(i) < len(unseen) and unseen[int(i)]], dtype=np.int64)
        return self._set_pending(ids, None)

    def _set_pending(self, ids: np.ndarray, strategy: str | None) -> list[Hit]:
        self.pending = self.collection.hits(ids, self.scores(ids))
        self._pending_strategy = strategy
        return self.pending

    def submit(self, scores: dict[int, float], *, seen: Iterable[int] | None = None) -> RoundRow:
        """Record one round: validate, fit on every label so far, persist, mark seen.

        ``seen`` defaults to the pending batch (so images left unscored are not offered
        again); without a pending batch, to the scored ids.

        Another process may have written rounds meanwhile: the classifier is reloaded and
        these labels become the round after its latest one (nothing typed is dropped).
        """
        with self.collection.writing():
            self._catch_up()
            return self._submit(scores, seen)

    def _submit(self, scores: dict, seen: Iterable[int] | None) -> RoundRow:
        live = self.collection.live_mask()
        scores = validated_scores(scores, {h.id for h in self.pending}, live)
        if seen is None:
            seen = [h.id for h in self.pending] or list(scores)
        # A pending image deleted since by another `localq index` is simply not marked.
        seen = {i for i in (checked_id(i, None) for i in seen) if 0 <= i < len(live) and live[i]} | set(scores)
        # The labels after this round, in the order current_labels reads them then: the
        # earlier ones, then this round's by id (a changed label moves to its new round).
        labels = self.labels()
        for i in scores:
            labels.pop(i, None)
        labels.update((i, scores[i]) for i in sorted(scores))
        if self.settings.fit == "article":
            w, b = fit_article_baseline(
                self.collection.index.rows(np.fromiter(scores, dtype=np.int64)),
                np.fromiter(scores.values(), dtype=np.float32),
                self.weights,
                self.bias,
            )
            w, b = np.asarray(w, np.float32), float(b)
        else:
            w, b = self._fit(labels)
        round_no = self.round + 1
        strategy = self._pending_strategy if self.pending else None
        self.store.commit_round(self.row.id, round_no, scores, seen, w, b, strategy)
        self.pending = []
        self._latest_row = None  # re-read: n_labels and created_at come from the transaction
        self._seen_mask()[list(seen)] = True
        self._wrote()
        self._labels, self._labels_at = labels, self._version
        return self._latest()

    def relabel(self, image_id: int, score: float) -> RoundRow:
        """Change one image's label; it counts as a round of its own (and can be undone)."""
        pending, self.pending = self.pending, []
        try:
            return self.submit({image_id: score})
        finally:
            self.pending = [h for h in pending if h.id != image_id]

    def undo(self) -> Undone:
        """Drop the last round: its labels, seen flags and weights."""
        with self.collection.writing():
            if self._catch_up():
                # Undoing now would drop a round this object never showed: refuse once.
                raise StaleClassifier(
                    f"classifier {self.name!r} was changed by another process and is now at round "
                    f"{self.round}; nothing was undone (undo again to drop round {self.round})"
                )
            if self.round == 0:
                raise NothingToUndo(f"classifier {self.name!r} has no labeled round to undo")
            undone = self.round
            # Read under the write lock, so no other writer's round can be mistaken for this one.
            scores = {int(i): float(v) for r, i, v in self.store.label_history(self.row.id) if r == undone}
            seen_before = set(self.store.seen_ids(self.row.id).tolist())
            self.store.undo_round(self.row.id, undone)
            released = seen_before - set(self.store.seen_ids(self.row.id).tolist())
            self.pending = []
            self._reload()
            self._wrote()
        return Undone(undone, scores, sorted(released, key=lambda i: (i not in scores, i)))

    def reset_seen(self) -> int:
        """Make every image retrievable again for this classifier; labels stay."""
        with self.collection.writing():
            self._catch_up()
            self.pending = []
            self._seen = None
            n = self.store.reset_seen(self.row.id)
            self._wrote()
        return n

    def _fit(self, labels: dict[int, float]) -> tuple[np.ndarray, float]:
        ids = np.fromiter(labels, dtype=np.int64)
        x = self._labeled_rows.of(self.collection.index, ids)
        y = np.fromiter(labels.values(), dtype=np.float32)
        s = self.settings
        w, b = fit_linear(
            x,
            y,
            self.weights,
            self.bias,
            prior=self.prior,
            prior_strength=s.prior_strength,
            lr=s.lr,
            iters=s.iters,
            background=self._background(ids),
            background_weight=s.background_weight,
            ridge=s.ridge,
        )
        return np.asarray(w, np.float32), float(b)

    def _background(self, labeled: np.ndarray) -> np.ndarray | None:
        """A fixed random sample of unlabeled images: for a rare concept, mostly negatives."""
        if self.settings.background <= 0:
            return None
        live = self._pool_mask()  # held-out images (eval, and dev when tuning) must not shape the fit
        live[labeled] = False
        n_live = int(live.sum())
        if n_live == 0:
            return None
        rng = np.random.default_rng([self.settings.seed, self._name_seed()])
        want = min(self.settings.background, n_live)
        if n_live <= 4 * want:
            picked = rng.choice(np.flatnonzero(live), size=want, replace=False)
        else:  # rejection sampling: O(want), not O(collection) like choice(replace=False)
            picked = np.zeros(0, dtype=np.int64)
            while len(picked) < want:
                draw = rng.integers(0, len(live), size=2 * want)
                picked = np.unique(np.concatenate([picked, draw[live[draw]]]))
            picked = rng.permutation(picked)[:want]
        return self._background_rows.of(self.collection.index, np.sort(picked))

    # -- what the weights say ------------------------------------------------------------------
    def scores(self, ids=None) -> np.ndarray:
        """``w.x + b`` of the latest weights for ``ids``, or for every row (tombstones
        included, by position) when ``ids`` is None."""
        return self.collection.index.scores(self.weights, self.bias, ids)

    def target_label(self) -> str | None:
        """The class label this classifier is evaluated against, where the collection has labels."""
        return scoring.target_label(self.collection, self._current_labels(), self.settings.target)

    def evaluate(self, split: str | None = None) -> Evaluation | None:
        """AP and precision/recall at the threshold (score > 0) against folder labels."""
        return self.evaluate_weights(self.weights, self.bias, split)

    def evaluate_weights(self, w: np.ndarray, b: float, split: str | None = None) -> Evaluation | None:
        """The same measures for any weights of this classifier (e.g. an earlier round's)."""
        return scoring.evaluate(self.collection, self.target_label(), w, b, split)

    def predict(
        self,
        threshold: float = 0.0,
        paths: Sequence[str | Path] = (),
        *,
        split: str | None = None,
        limit: int | None = None,
    ) -> list[Prediction]:
        """Positives (score > threshold) sorted by score: over new files, or the collection (one split of it).
        Undecodable files are left out (``predict_files`` also returns which, and why)."""
        if paths:
            preds, _ = self.predict_files(paths, threshold)
            return preds[:limit] if limit else preds
        return self.positives(threshold, split=split, limit=limit)[0]

    def positives(
        self, threshold: float = 0.0, *, split: str | None = None, limit: int | None = None
    ) -> tuple[list[Prediction], int]:
        """The collection's positives as ``predict`` returns them, and how many there are
        without the limit (one pass over the vectors for both)."""
        return scoring.predict_collection(self.collection, self.weights, self.bias, threshold, split=split, limit=limit)

    def predict_files(
        self, paths: Sequence[str | Path], threshold: float = 0.0
    ) -> tuple[list[Prediction], list[tuple[str, str]]]:
        """Positives among files outside the collection, best first, and the (path, reason)
        of each file that could not be decoded."""
        return scoring.predict_files(self.collection, self.weights, self.bias, paths, threshold)

    # -- breaking a cold start: another prompt, an example image, "more like this" ----------
    # When rounds bring no positives (``summary().cold``) the UI offers these. Each sets the
    # pending batch (or labels one image) under a strategy name the next submit records in
    # the round history: "prompt:a red fox", "like:123", "example:fox.jpg".
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
        query = self.collection.vector_of_row(image_id)
        return self._set_pending(self._nearest_unseen(query, k, exclude=image_id), f"like:{image_id}")

    def add_example(self, item: int | str | Path, score: float = 1.0, *, encoder=None) -> RoundRow:
        """Label one image directly, as a round of its own (``example:<name>``), fit on all labels.

        ``item`` is a collection id, or a file: a file not yet in the collection is indexed
        into it first with the collection's encoder (``encoder`` must be that same model).
        The pending batch stays pending (minus the example), so a batch on screen survives."""
        if isinstance(item, (int, np.integer)) or (
            isinstance(item, str) and item.strip().isdigit() and not Path(item.strip()).exists()
        ):
            image_id = self._check_image_id(int(item))
            name = str(image_id)
        else:
            image_id = self._index_example_file(Path(str(item).strip()).expanduser(), encoder)
            name = Path(str(item)).name
        rows = self.collection.image_rows([image_id])
        split = rows[0].split if rows else None
        if self.settings.pool_split is not None and split not in (None, self.settings.pool_split):
            raise InvalidScores(
                f"image {image_id} is in the {split!r} split, held out from this classifier's "
                f"pool ({self.settings.pool_split!r}): labeling it would leak into evaluation"
            )
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
        return LoopSummary(
            rounds=self.round,
            positives=pos,
            negatives=neg,
            last_round_labels=len(last),
            last_round_positives=sum(s > 0 for s in last),
            rounds_without_positive=streak,
        )

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
            raise EncoderMismatch(
                f"collection {self.collection.root} was built with {self.collection.model_id}, "
                f"not {encoder.model_id}: the example must be embedded by the same model"
            )
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

    # -- files ---------------------------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        return classifier_file.save(
            path, self.weights, self.bias, model_id=self.collection.model_id, meta=self._file_meta()
        )

    def encoded(self, fmt: str) -> dict[str, bytes]:
        """The classifier's files as bytes, by suffix (classifier_file.encode)."""
        return classifier_file.encode(
            self.weights, self.bias, model_id=self.collection.model_id, meta=self._file_meta(), fmt=fmt
        )

    def _file_meta(self) -> dict:
        pos, neg = self.label_counts()
        return {
            "name": self.name,
            "prompt": self.row.prompt or "",
            "rounds": self.round,
            "labels_positive": pos,
            "labels_negative": neg,
            "threshold": 0.0,
        }


def _check_strategy(name: str) -> None:
    if name not in STRATEGIES:
        raise LocalqError(f"unknown strategy {name!r}: choose one of {', '.join(STRATEGIES)}")


class HeldRows:
    """Rows of vectors.npy kept from round to round in the order last asked for: the
    labeled images' (in the order of the labels) or the background sample's. A round
    reads only the rows of ids not held yet (VectorIndex.rows), so a round at 10,000 labels
    reads the ten new ones, not 20 MB again, and hands the fit and the near-copy check the
    rows held, without a copy.

    A row of vectors.npy never changes once written (`localq repair` alone rewrites
    damaged ones: a Trainer open across a repair keeps the rows it read before it). The
    rows are held in one array grown by a quarter when full, so most rounds add their rows
    without copying the others, and the slack stays under a quarter of what is held."""

    def __init__(self):
        self.ids = np.empty(0, np.int64)  # the ids held, in the order of the rows
        self._buffer: np.ndarray | None = None

    def of(self, index, ids: np.ndarray) -> np.ndarray:
        """The rows of ``ids`` in their order, as a read-only view of the rows held (valid
        until the next call); from now on exactly those are held. New labels come after
        the earlier ones, so a round reads its new rows alone; any other order (an undo, a
        changed label) is put right in the same array, so memory stays as it was."""
        ids = np.asarray(ids, np.int64)
        n = len(self.ids)
        if n <= len(ids) and np.array_equal(ids[:n], self.ids):
            new = ids[n:]
            if len(new):
                self._grow(len(ids), index.dim)
                self._buffer[n : len(ids)] = index.rows(new)
        else:
            rows = np.empty((len(ids), index.dim), np.float32)
            sorter = np.argsort(self.ids, kind="stable")
            at = np.minimum(np.searchsorted(self.ids, ids, sorter=sorter), max(n - 1, 0))
            held = (self.ids[sorter[at]] == ids) if n else np.zeros(len(ids), bool)
            if held.any():
                rows[held] = self._buffer[sorter[at[held]]]
            if not held.all():
                rows[~held] = index.rows(ids[~held])
            self._grow(len(ids), index.dim)
            self._buffer[: len(ids)] = rows
        self.ids = ids.copy()
        if self._buffer is None:
            return np.empty((0, index.dim), np.float32)
        view = self._buffer[: len(ids)]
        view.flags.writeable = False
        return view

    def _grow(self, rows: int, dim: int) -> None:
        """Room for ``rows`` rows, the first ``len(self.ids)`` kept."""
        if self._buffer is None or len(self._buffer) < rows:
            grown = np.empty((max(len(self.ids) + len(self.ids) // 4, rows, 64), dim), np.float32)
            if self._buffer is not None:
                kept = min(len(self.ids), len(self._buffer))
                grown[:kept] = self._buffer[:kept]
            self._buffer = grown
