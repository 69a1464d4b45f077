"""Trainer: one named classifier on a collection, and the retrieve / label / fit loop.

This is the API the TUI, the CLI and the benchmark drive. Every round is persisted in
one SQLite transaction before ``submit`` returns, so a killed process loses nothing that
was submitted, and undo restores the exact earlier state.
"""

from __future__ import annotations

import hashlib
import math
import numbers
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from localq import classifier_file, fit, sampling
from localq.collection import Collection, Hit
from localq.errors import (BadImage, ClassifierNotFound, EncoderMismatch, ImageNotFound, InvalidPrompt, InvalidScores,
                           LocalqError, NothingToUndo, StaleClassifier)
from localq.fit import fit_article_baseline, fit_linear
from localq.metrics import average_precision, precision_recall_at
from localq.names import check_name
from localq.sampling import DEFAULT_STRATEGY, STRATEGIES, select
from localq.store import ClassifierRow, RoundRow

# The starting bias puts the prediction threshold at this quantile of the start query's
# scores over the collection, so an unlabeled classifier predicts its top ~1% positive.
START_POSITIVE_FRACTION = 0.01
FIT_MODES = ("all-labels", "article")


@dataclass
class Settings:
    k: int = 10
    strategy: str = DEFAULT_STRATEGY
    # Fit defaults come from the label-efficiency study (localq/fit.py explains each).
    lr: float = fit.DEFAULT_LR
    iters: int = fit.DEFAULT_ITERS
    prior_strength: float = fit.DEFAULT_PRIOR_STRENGTH  # pull toward the start query; 0 lets it drift
    ridge: float = fit.DEFAULT_RIDGE
    background: int = 1000  # unlabeled images sampled as weak negatives (bounded: fit cost stays flat)
    background_weight: float = fit.DEFAULT_BACKGROUND_SHARE
    seed: int = 0
    target: str | None = None  # class label evaluated against; inferred from positives when None
    pool_split: str | None = None  # retrieve only images of this split (e.g. train), keeping val held out
    fit: str = "all-labels"  # or "article": the original's fit on the latest batch only (a baseline)
    seed_name: str | None = None  # text the per-classifier random seed is drawn from (default: the name)
    # The ``auto`` strategy's explore / exploit shares (localq/sampling.py; chosen on dev splits).
    explore_first: float = sampling.AUTO_EXPLORE_FIRST
    explore_cold: float = sampling.AUTO_EXPLORE_COLD
    top_share: float = sampling.AUTO_TOP_SHARE
    explore_temperature: float = sampling.AUTO_TEMPERATURE
    exclude_dev: bool = False  # leave the pool split's dev part (localq.devsplit) out: bench --tune

    @classmethod
    def from_dict(cls, data: dict) -> "Settings":
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**known)


@dataclass(frozen=True)
class Evaluation:
    target: str
    ap: float
    precision: float
    recall: float
    threshold: float
    positives: int  # images of the target class in the evaluated set
    images: int


@dataclass(frozen=True)
class Prediction:
    id: int | None
    path: str
    score: float  # w·x + b: positive means predicted relevant
    label: str | None = None


@dataclass(frozen=True)
class ClassifierState:
    name: str
    source: str  # prompt, images or file
    prompt: str | None
    round: int
    labels_positive: int
    labels_negative: int
    seen: int
    strategy: str
    created_at: str
    target: str | None  # the folder label it is evaluated against, when the collection has one
    ap: float | None


@dataclass(frozen=True)
class Undone:
    """What ``Trainer.undo`` dropped, so a driver can put the round back on screen."""

    round: int
    scores: dict[int, float]  # the round's labels, by image id
    released: list[int]  # images the round had marked seen, now retrievable: labeled ones first


class Trainer:
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
        # The classifier's change counter when the mirrors above were read: another
        # process that writes to it bumps the counter, and every write here checks it.
        self._version = self.store.classifier_version(row.id)

    # -- creating and opening ---------------------------------------------------------
    @classmethod
    def open(cls, collection: Collection, name: str) -> "Trainer":
        row = collection.store.classifier(check_name(name))
        if row is None:
            known = ", ".join(c.name for c in collection.store.classifiers()) or "none yet"
            raise ClassifierNotFound(f"no classifier named {name!r} (known: {known})")
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
        if settings.strategy not in STRATEGIES:
            raise LocalqError(f"unknown strategy {settings.strategy!r}: choose one of {', '.join(STRATEGIES)}")
        if collection.store.classifier(name) is not None and not replace:
            raise LocalqError(f"classifier {name!r} exists: open it, or choose another name")
        bias = None
        if prompt:
            source, query = "prompt", collection.text_vector(prompt)
        elif images:
            source, query = "images", _unit(_example_vectors(collection, images).mean(axis=0))
            prompt = ", ".join(str(i) for i in images)
        else:
            loaded = classifier_file.load(weights_file)
            classifier_file.check_compatible(loaded, collection.model_id, collection.dim, str(weights_file))
            source, prompt = "file", loaded.meta.get("prompt") or str(weights_file)
            query, bias = loaded.weight, loaded.bias
        query = np.asarray(query, np.float32)
        if bias is None:
            bias = _start_bias(collection, query, settings)
        with collection.writing():  # the existence check and the creation, with no process in between
            existing = collection.store.classifier(name)
            if existing is not None and replace:
                collection.store.delete_classifier(existing.id)
            row = collection.store.create_classifier(
                name, source=source, prompt=prompt, prior=_unit(query), weights=query, bias=bias, settings=asdict(settings),
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
        return _unit(self.weights)

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
        return self.store.current_labels(self.row.id)

    def label_counts(self) -> tuple[int, int]:
        scores = list(self.labels().values())
        return sum(s > 0 for s in scores), sum(s < 0 for s in scores)

    def label_rounds(self) -> dict[int, int]:
        """The round in which each labeled image got its current label."""
        return {image_id: r for r, image_id, _ in self.store.label_history(self.row.id)}

    def state(self, *, with_ap: bool = True) -> "ClassifierState":
        """Where this classifier stands: what `localq classifiers` lists for it."""
        pos, neg = self.label_counts()
        ev = self.evaluate() if with_ap else None
        return ClassifierState(
            name=self.name, source=self.row.source, prompt=self.row.prompt, round=self.round,
            labels_positive=pos, labels_negative=neg, seen=len(self.store.seen_ids(self.row.id)),
            strategy=self.settings.strategy, created_at=self.row.created_at,
            target=ev.target if ev else None, ap=round(ev.ap, 4) if ev else None)

    @classmethod
    def states(cls, collection: Collection) -> list["ClassifierState"]:
        return [cls(collection, row).state() for row in collection.classifier_rows()]

    def update_settings(self, **changes) -> None:
        for key, value in changes.items():
            if key not in Settings.__dataclass_fields__:
                raise LocalqError(f"unknown setting {key!r}")
            if key == "fit" and value not in FIT_MODES:
                raise LocalqError(f"unknown fit {value!r}: choose one of {', '.join(FIT_MODES)}")
            if key == "strategy" and value not in STRATEGIES:
                raise LocalqError(f"unknown strategy {value!r}: choose one of {', '.join(STRATEGIES)}")
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
        self.collection.refresh()  # retrieve from rows a background indexer added meanwhile
        if strategy not in STRATEGIES:
            raise LocalqError(f"unknown strategy {strategy!r}: choose one of {', '.join(STRATEGIES)}")
        rng = np.random.default_rng([self.settings.seed, self._name_seed(), self.round])
        w, b = self.weights, self.bias
        if self.round == 0 and self.row.source != "file":
            # No fit has calibrated the start query yet: sampling.select recognises an
            # unfitted query as a unit vector with zero bias (our start bias only sets the
            # prediction threshold) and draws a warm-up batch among its best images.
            w, b = _unit(w), 0.0
        context = self._auto_context() if strategy == "auto" else None
        ids = select(strategy, self.collection.index, w, b, k, self.unseen_mask(), rng, context=context)
        return self._set_pending(ids, strategy)

    def _auto_context(self) -> sampling.Context:
        """What ``auto`` reads: every label so far, positives per labeled round, the clusters."""
        from localq.explore import collection_clusters

        labels = self.labels()
        per_round: dict[int, int] = {}
        for round_no, _image, score in self.store.label_history(self.row.id):
            per_round[round_no] = per_round.get(round_no, 0) + (score > 0)
        s = self.settings
        return sampling.Context(
            labeled_ids=np.fromiter(labels, dtype=np.int64, count=len(labels)),
            labeled_scores=np.fromiter(labels.values(), dtype=np.float32, count=len(labels)),
            batch_positives=tuple(per_round[r] for r in sorted(per_round)),
            clusters=collection_clusters(self.collection),
            explore_first=s.explore_first, explore_cold=s.explore_cold, top_share=s.top_share,
            temperature=s.explore_temperature,
        )

    def restore_batch(self, ids: Sequence[int]) -> list[Hit]:
        """Make ``ids`` the pending batch again (after undo, or a UI draft), dropping seen ones."""
        unseen = self.unseen_mask()
        ids = np.array([int(i) for i in ids if 0 <= int(i) < len(unseen) and unseen[int(i)]], dtype=np.int64)
        return self._set_pending(ids, None)

    def _set_pending(self, ids: np.ndarray, strategy: str | None) -> list[Hit]:
        scores = self.collection.index.matrix()[ids] @ self.weights + self.bias if len(ids) else np.zeros(0)
        self.pending = self.collection.hits(ids, scores)
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
        scores = self._validate(scores)
        if seen is None:
            seen = [h.id for h in self.pending] or list(scores)
        live = self.collection.live_mask()
        # A pending image deleted since by another `localq index` is simply not marked.
        seen = {i for i in (_checked_id(i, None) for i in seen) if 0 <= i < len(live) and live[i]} | set(scores)
        if self.settings.fit == "article":
            w, b = fit_article_baseline(
                self.collection.index.matrix()[np.fromiter(scores, dtype=np.int64)],
                np.fromiter(scores.values(), dtype=np.float32), self.weights, self.bias,
            )
            w, b = np.asarray(w, np.float32), float(b)
        else:
            labels = self.labels()
            labels.update(scores)
            w, b = self._fit(labels)
        round_no = self.round + 1
        strategy = self._pending_strategy if self.pending else None
        self.store.commit_round(self.row.id, round_no, scores, seen, w, b, strategy)
        self.pending = []
        self._latest_row = None  # re-read: n_labels and created_at come from the transaction
        self._seen_mask()[list(seen)] = True
        self._wrote()
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
                    f"{self.round}; nothing was undone (undo again to drop round {self.round})")
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

    def _validate(self, scores: dict) -> dict[int, float]:
        if not isinstance(scores, dict) or not scores:
            raise InvalidScores("no scores given: pass a dict of image id -> score in [-1, 1]")
        batch = {h.id for h in self.pending}
        live = self.collection.live_mask()
        clean = {}
        for key, value in scores.items():
            image_id = _checked_id(key, live)
            score = _checked_score(value, image_id)
            if batch and image_id not in batch:
                raise InvalidScores(f"image id {image_id} is not in the current batch")
            clean[image_id] = score
        return clean

    def _fit(self, labels: dict[int, float]) -> tuple[np.ndarray, float]:
        ids = np.fromiter(labels, dtype=np.int64)
        x = self.collection.index.matrix()[ids]
        y = np.fromiter(labels.values(), dtype=np.float32)
        s = self.settings
        w, b = fit_linear(
            x, y, self.weights, self.bias, prior=self.prior, prior_strength=s.prior_strength,
            lr=s.lr, iters=s.iters, background=self._background(ids), background_weight=s.background_weight,
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
        return self.collection.index.matrix()[np.sort(picked)]

    # -- scoring, evaluation, prediction ----------------------------------------------------
    def score_all(self) -> np.ndarray:
        """w·x + b for every row of the collection (tombstones included, by position)."""
        return self.collection.index.matrix() @ self.weights + self.bias

    def target_label(self) -> str | None:
        """The class label this classifier is evaluated against, where the collection has labels."""
        if self.settings.target:
            return self.settings.target
        positives = [i for i, s in self.labels().items() if s > 0]
        counts = Counter(label for label in self.collection.labels_of(positives) if label is not None)
        return counts.most_common(1)[0][0] if counts else None

    def evaluate(self, split: str | None = None) -> Evaluation | None:
        """AP and precision/recall at the threshold (score > 0) against folder labels."""
        return self._evaluate(self.weights, self.bias, split)

    def evaluate_weights(self, w: np.ndarray, b: float, split: str | None = None) -> Evaluation | None:
        """The same measures for any weights of this classifier (e.g. an earlier round's)."""
        return self._evaluate(w, b, split)

    def _evaluate(self, w: np.ndarray, b: float, split: str | None) -> Evaluation | None:
        target = self.target_label()
        if target is None:
            return None
        ids, labels = self.collection.labeled_rows(split)
        if len(ids) == 0:
            return None
        relevant = labels == target
        scores = self.collection.index.matrix()[ids] @ w + b
        precision, recall = precision_recall_at(scores, relevant, 0.0)
        return Evaluation(target, average_precision(scores, relevant), precision, recall, 0.0, int(relevant.sum()), len(ids))

    def predict(self, threshold: float = 0.0, paths: Sequence[str | Path] = (), *, split: str | None = None,
                limit: int | None = None) -> list[Prediction]:
        """Positives (score > threshold) sorted by score: over new files, or the collection (one split of it).
        Undecodable files are left out (``predict_files`` also returns which, and why)."""
        if paths:
            preds, _ = self.predict_files(paths, threshold)
        else:
            scores = self.score_all()
            mask = self.collection.live_mask() & (scores > threshold)
            if split is not None:
                mask &= self.collection.split_mask(split)
            ids = np.flatnonzero(mask)
            ids = ids[np.argsort(-scores[ids], kind="stable")][:limit]
            rows = {r.id: r for r in self.store.images(ids)}
            preds = [Prediction(int(i), rows[int(i)].path, float(scores[i]), rows[int(i)].label) for i in ids]
        preds.sort(key=lambda p: -p.score)
        return preds[:limit] if limit else preds

    def predict_files(self, paths: Sequence[str | Path], threshold: float = 0.0
                      ) -> tuple[list[Prediction], list[tuple[str, str]]]:
        """Positives among files outside the collection, best first, and the (path, reason)
        of each file that could not be decoded: one bad file never costs the others."""
        from localq.errors import BadImage
        from localq.imageio import open_image

        encoder = self.collection.encoder()
        out, skipped = [], []
        for batch in _chunks(list(paths), 32):
            images, kept = [], []
            for p in batch:
                try:
                    images.append(open_image(p, getattr(encoder, "image_size", None)))
                    kept.append(str(p))
                except BadImage as exc:
                    skipped.append((str(p), exc.reason))
            if images:
                vectors = encoder.encode_images(images)
                out += [Prediction(None, p, float(v @ self.weights + self.bias)) for p, v in zip(kept, vectors)]
        preds = sorted((p for p in out if p.score > threshold), key=lambda p: -p.score)
        return preds, skipped

    # -- files ---------------------------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        pos, neg = self.label_counts()
        meta = {"name": self.name, "prompt": self.row.prompt or "", "rounds": self.round,
                "labels_positive": pos, "labels_negative": neg, "threshold": 0.0}
        return classifier_file.save(path, self.weights, self.bias, model_id=self.collection.model_id, meta=meta)

    # -- a person breaking a cold start: another prompt, an example image, more like this ---------
    # Each sets the pending batch (or labels one image) under a strategy name that the next
    # submit records in the round history, e.g. "prompt:a red fox", "like:123", "example:fox.jpg".
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
        split = self.collection.split_of(image_id)
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

    def summary(self) -> "LoopSummary":
        """Labels so far and whether the loop looks stuck without positives (what the UI warns about)."""
        per_round: dict[int, list[float]] = {}
        for round_no, _, score in self.store.label_history(self.row.id):
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
        ids, _ = self.collection.index.search(query, k, allowed)
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
        from localq.indexer import index_paths

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


# A loop counts as cold when no positive was labeled yet, or this many labeled rounds in a
# row brought none: then the UI offers a new prompt, an example image or "more like this".
COLD_ROUNDS = 2


@dataclass(frozen=True)
class LoopSummary:
    rounds: int
    positives: int  # current labels > 0
    negatives: int
    last_round_labels: int
    last_round_positives: int
    rounds_without_positive: int  # trailing labeled rounds that held no positive label

    @property
    def cold(self) -> bool:
        """Labeled at least once and no positives yet, or the last COLD_ROUNDS rounds brought none."""
        return self.rounds > 0 and (self.positives == 0 or self.rounds_without_positive >= COLD_ROUNDS)


def _checked_id(key: object, live: np.ndarray | None) -> int:
    """An image id as an int: ints and integral floats only (2.7 or True would label
    another image than the caller meant); with ``live``, of a live image."""
    if isinstance(key, (bool, np.bool_)) or not isinstance(key, numbers.Real):
        raise InvalidScores(f"image id {key!r} is not an integer")
    if not isinstance(key, numbers.Integral) and not (math.isfinite(key) and float(key).is_integer()):
        raise InvalidScores(f"image id {key!r} is not an integer")
    image_id = int(key)
    if live is not None and (not 0 <= image_id < len(live) or not live[image_id]):
        raise InvalidScores(f"image id {image_id} is not in the collection")
    return image_id


def _checked_score(value: object, image_id: int) -> float:
    """A label score as a finite float in [-1, 1]; bools, strings and 10**400 are refused."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise InvalidScores(f"score {value!r} for image {image_id} is not a number")
    try:
        score = float(value)
    except (OverflowError, ValueError, TypeError):
        raise InvalidScores(f"score for image {image_id} is outside [-1, 1]") from None
    if not (math.isfinite(score) and -1.0 <= score <= 1.0):
        raise InvalidScores(f"score {score!r} for image {image_id} is outside [-1, 1]")
    return score


def _unit(v: np.ndarray) -> np.ndarray:
    v = np.asarray(v, np.float32)
    n = float(np.linalg.norm(v))
    return v / n if n > 0 else v


def pool_mask(collection: Collection, settings: Settings) -> np.ndarray:
    """Live images a classifier may retrieve or sample as background: its pool split, minus dev."""
    mask = collection.live_mask()
    if settings.pool_split is not None:
        mask &= collection.split_mask(settings.pool_split)
        if settings.exclude_dev:
            from localq.devsplit import dev_mask

            mask &= ~dev_mask(collection, settings.pool_split)
    return mask


def _start_bias(collection: Collection, query: np.ndarray, settings: Settings) -> float:
    # Over the pool only: a held-out split must not shape even the starting threshold,
    # or a benchmark's round-0 precision and recall would depend on the images it scores.
    pool = pool_mask(collection, settings)
    if not pool.any():
        return 0.0
    scores = collection.index.matrix() @ query  # one pass, no copy of the pool's rows
    return -float(np.quantile(scores[pool], 1.0 - START_POSITIVE_FRACTION))


def _example_vectors(collection: Collection, images: Sequence[int | str | Path]) -> np.ndarray:
    from localq.imageio import open_image

    vectors = []
    n_rows = collection.rows()
    for item in images:
        if isinstance(item, (int, np.integer)) or (isinstance(item, str) and item.isdigit() and not Path(item).exists()):
            image_id = int(item)
            if not 0 <= image_id < n_rows:
                raise LocalqError(f"image id {image_id} is not in the collection")
            vectors.append(collection.index.matrix()[image_id])
        else:
            vectors.append(collection.encoder().encode_images([open_image(item)])[0])
    return np.stack(vectors)


def _chunks(items: list, size: int):
    for i in range(0, len(items), size):
        yield items[i:i + size]
