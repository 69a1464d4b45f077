"""The benchmark loop: every class as the target, every method, every seed, every round.

Each labeling run is an ordinary classifier driven through the core API (``Trainer``:
``create`` from the prompt, ``next_batch``, ``submit``, ``evaluate``), so the numbers
measure exactly what a person gets from the UI or the CLI. Bench classifiers are named
``bench.<method>.<class>.<seed>`` and deleted when their run ends.

Methods (at equal label budgets, k labels a round):

- ``zero-shot``: the prompt alone, no labels (round 0 of every run);
- ``article``: the original article's loop: top-k, +-1 scores, a fit on the latest
  batch only (MSE on tanh, SGD), the weights as the next query;
- ``localq-<strategy>``: localq's loop (a fit on every label so far, with the trainer's
  default settings) with each sampling strategy; the default strategy is flagged;
- ``random``: uniform random batches with localq's fit (the active-learning control);
- ``full``: a logistic regression on every label of the pool (the ceiling).

Protocol: a report run retrieves from the pool split and measures AP on the held-out
split. A tuning run (``tune=True``, ``localq bench --tune``) retrieves from the pool
minus its dev part (``localq.loop.devsplit``) and measures AP on dev: settings are chosen
there, and the held-out split is never read for a choice. ``prompt_from="other-class"``
starts every class from another class's prompt (a fixed derangement): the cold start of
a concept the prompt misses, measurable on any labeled set.
"""

from __future__ import annotations

import os
import time
import zlib
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Callable

import numpy as np

from localq.bench.datasets import BenchDataError, class_names
from localq.bench.labeler import labeler_for
from localq.bench.scenes import scene_of
from localq.errors import LocalqError

BENCH_PREFIX = "bench."
EVAL_SPLITS = ("val", "validation", "valid", "test")  # tried in this order when none is given
DEFAULT_PROMPT = "a photo of a {class}"
PROMPT_SOURCES = ("own", "other-class")


@dataclass(frozen=True)
class Method:
    name: str
    kind: str  # "zero-shot", "loop" or "full"
    strategy: str | None = None
    fit: str | None = None
    default: bool = False  # localq's default strategy


def available_methods() -> dict[str, Method]:
    from localq.loop.sampling import DEFAULT_STRATEGY, STRATEGIES

    methods = [Method("zero-shot", "zero-shot"), Method("article", "loop", "top", "article")]
    methods += [
        Method(f"localq-{s}", "loop", s, "all-labels", default=s == DEFAULT_STRATEGY)
        for s in STRATEGIES
        if s != "random"
    ]
    methods += [Method("random", "loop", "random", "all-labels"), Method("full", "full")]
    return {m.name: m for m in methods}


@dataclass
class BenchConfig:
    rounds: int = 10
    k: int = 10
    seeds: tuple[int, ...] = (0, 1)
    methods: tuple[str, ...] = ()  # empty: all
    classes: tuple[str, ...] = ()  # empty: every label of the pool split
    pool_split: str = "train"
    eval_split: str | None = None  # None: the first of EVAL_SPLITS the collection has
    prompt: str = DEFAULT_PROMPT
    names: dict[str, str] = field(default_factory=dict)  # label -> readable class name
    graded: dict[str, dict[str, float]] | None = None  # the graded labeler's mapping
    tune: bool = False  # retrieve from pool minus dev, measure on dev (never on the eval split)
    prompt_from: str = "own"  # or "other-class": each class starts from another class's prompt
    settings: dict = field(default_factory=dict)  # Settings overrides for every loop (e.g. top_share)


@dataclass
class Row:
    """One point of one learning curve (``round`` 0 = before any label)."""

    dataset: str
    target: str
    class_name: str
    method: str
    seed: int | None
    round: int
    labels: int  # labels given so far (the budget)
    ap: float  # on the held-out split
    precision: float | None  # at the classifier's threshold, held-out split
    recall: float | None
    batch_precision: float | None  # fraction of this round's batch in the target class
    positives: int  # target-class images labeled so far
    positives_per_label: float | None
    prompt: str | None = None  # the start prompt of this run (round 0 rows)
    repeats: int = 0  # labels so far on a scene already labeled (a near-copy; localq.bench.scenes)


@dataclass
class BenchResult:
    dataset: str
    collection: str
    model_id: str
    pool_split: str
    eval_split: str
    pool_size: int
    eval_size: int
    classes: list[str]
    names: dict[str, str]
    methods: list[dict]
    config: dict
    rows: list[Row]
    timing: dict[str, float]  # seconds per phase, summed over the run
    ceiling: dict = field(default_factory=dict)  # the full-supervision fit's chosen L2
    protocol: str = "report"  # "report": AP on the held-out split; "tune": AP on the pool's dev part

    def to_dict(self) -> dict:
        out = asdict(self)
        out["rows"] = [asdict(r) for r in self.rows]
        return out


class Timer:
    def __init__(self):
        self.seconds: dict[str, float] = {}
        self.calls: dict[str, int] = {}

    def __call__(self, phase: str, fn, *args, **kwargs):
        start = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            self.seconds[phase] = self.seconds.get(phase, 0.0) + time.perf_counter() - start
            self.calls[phase] = self.calls.get(phase, 0) + 1


def resolve_methods(names: tuple[str, ...] | list[str]) -> list[Method]:
    known = available_methods()
    if not names:
        return list(known.values())
    unknown = [n for n in names if n not in known]
    if unknown:
        raise LocalqError(f"unknown method {', '.join(unknown)}: choose from {', '.join(known)}")
    return [known[n] for n in known if n in names]  # canonical order


def bench_name(method: str, target: str, seed: int | None = None) -> str:
    """A valid classifier name for one benchmark run (runs are sequential and deleted after,
    so two targets that slug alike cannot collide)."""
    from localq.names import slug

    tail = "" if seed is None else f".{seed}"
    return f"{BENCH_PREFIX}{slug(method, 'method')[:24]}.{slug(target, 'target')[:24]}{tail}"


def bench_seed_name(method: str, target: str, seed: int) -> str:
    """What a run's background sample is seeded from: the benchmark's classifier name
    before names were restricted to slugs, so earlier reports reproduce exactly."""
    return f"bench/{method}/{target}/{seed}"


def trainer_seed(seed: int, target: str) -> int:
    """A per-(seed, class) seed: classes draw independent random batches, and running a
    subset of the classes gives each the same numbers as the full run."""
    return int(np.random.SeedSequence([seed, zlib.crc32(target.encode())]).generate_state(1)[0])


def prompt_class(classes: list[str], target: str, prompt_from: str) -> str:
    """The class whose name fills the prompt for ``target``: itself, or with "other-class"
    the next class in sorted order (a cyclic shift: no class keeps its own, deterministic)."""
    if prompt_from == "own" or len(classes) < 2:
        return target
    if prompt_from != "other-class":
        raise LocalqError(f"unknown prompt source {prompt_from!r}: choose one of {', '.join(PROMPT_SOURCES)}")
    ordered = sorted(classes)
    return ordered[(ordered.index(target) + 1) % len(ordered)]


def _evaluate(w: np.ndarray, b: float, vectors: np.ndarray, relevant: np.ndarray) -> tuple[float, float, float]:
    """(AP, precision, recall at score > 0) of ``w.x + b`` over the evaluation rows."""
    from localq.loop.metrics import average_precision, precision_recall_at

    scores = vectors @ np.asarray(w, np.float32) + np.float32(b)
    precision, recall = precision_recall_at(scores, relevant, 0.0)
    return average_precision(scores, relevant), precision, recall


def run_benchmark(
    collection, config: BenchConfig, *, dataset: str, progress: Callable[[int, int], None] | None = None
) -> BenchResult:
    """Run the benchmark; one at a time per collection (``BENCH_LOCK``): a second run would
    delete the first one's classifiers as stale and write classifiers of the same names."""
    with _bench_lock(collection):
        return _run_benchmark(collection, config, dataset=dataset, progress=progress)


BENCH_LOCK = "bench.lock"


@contextmanager
def _bench_lock(collection):
    from localq.storage.locking import try_lock

    fd = try_lock(collection.root / BENCH_LOCK)
    if fd is None:
        raise LocalqError(
            f"another `localq bench` is running on {collection.root}: wait for it to end, "
            "or benchmark a copy of the collection"
        )
    try:
        yield
    finally:
        os.close(fd)


def _run_benchmark(
    collection, config: BenchConfig, *, dataset: str, progress: Callable[[int, int], None] | None = None
) -> BenchResult:
    from localq.loop.trainer import Trainer
    from localq.loop.trainer_types import Settings

    methods = resolve_methods(config.methods)
    rows_all = collection.folder_label_rows()
    pool = [(i, label) for i, label, split in rows_all if split == config.pool_split]
    if not pool:
        raise BenchDataError(
            f"no labeled images in split {config.pool_split!r}: index split/class/file folders with --labels"
        )
    splits = {split for _, _, split in rows_all}
    eval_split = config.eval_split or next((s for s in EVAL_SPLITS if s in splits), None)
    if eval_split is None or eval_split not in splits:
        raise BenchDataError(
            f"no held-out split (tried {', '.join(EVAL_SPLITS)}; found {', '.join(sorted(map(str, splits)))})"
        )
    if eval_split == config.pool_split:
        raise BenchDataError("the held-out split must differ from the pool split")
    if config.tune:
        from localq.loop.devsplit import dev_mask

        dev = dev_mask(collection, config.pool_split)
        evaluation = [(i, label) for i, label in pool if dev[i]]
        pool = [(i, label) for i, label in pool if not dev[i]]
        if not evaluation or not pool:
            raise BenchDataError(f"split {config.pool_split!r} is too small to carve a dev part out of it")
        eval_name = f"{config.pool_split}:dev"
    else:
        evaluation = [(i, label) for i, label, s in rows_all if s == eval_split]
        eval_name = eval_split
    eval_size = len(evaluation)
    eval_vectors = collection.index.rows([i for i, _ in evaluation])
    eval_labels = np.array([label for _, label in evaluation], dtype=object)
    pool_labels = sorted({label for _, label in pool})
    classes = list(config.classes) or pool_labels
    missing = [c for c in classes if c not in pool_labels]
    if missing:
        raise BenchDataError(f"class {', '.join(missing)} has no image in split {config.pool_split!r}")
    names = class_names(sorted(set(classes) | set(pool_labels)), config.names)
    overrides = _check_settings(config.settings)
    cleanup(collection)

    loops = [m for m in methods if m.kind == "loop"]
    with_full = any(m.kind == "full" for m in methods)
    total = len(classes) * (1 + len(loops) * len(config.seeds) * config.rounds) + (1 if with_full else 0)
    done = 0
    timer = Timer()
    out: list[Row] = []

    def tick(n: int = 1) -> None:
        nonlocal done
        done += n
        if progress:
            progress(done, total)

    if progress:
        progress(0, total)
    full_weights = {}
    ceiling = {}
    if with_full:
        from localq.bench.supervised import full_supervision

        ids = np.array([i for i, _ in pool], dtype=np.int64)
        full_weights, ceiling["l2"] = timer(
            "full_fit", full_supervision, collection.index.matrix(), ids, [label for _, label in pool], classes
        )
        tick()

    for target in classes:
        prompt = config.prompt.replace("{class}", names[prompt_class(pool_labels, target, config.prompt_from)])
        relevant = eval_labels == target

        def evaluate(w, b, relevant=relevant):  # this target's mask, bound here
            return timer("evaluate", _evaluate, w, b, eval_vectors, relevant)

        # Zero-shot, and the ceiling measured by the same evaluation code.
        base = timer(
            "create",
            Trainer.create,
            collection,
            bench_name("zero-shot", target),
            prompt=prompt,
            settings=Settings(
                pool_split=config.pool_split,
                target=target,
                exclude_dev=config.tune,
                seed_name=f"bench/zero-shot/{target}",
            ),
            replace=True,
        )
        ap, precision, recall = evaluate(base.weights, base.bias)
        if any(m.kind == "zero-shot" for m in methods):
            out.append(
                Row(
                    dataset,
                    target,
                    names[target],
                    "zero-shot",
                    None,
                    0,
                    0,
                    ap,
                    precision,
                    recall,
                    None,
                    0,
                    None,
                    prompt,
                )
            )
        if target in full_weights:
            w, b = full_weights[target]
            ap, precision, recall = evaluate(w, b)
            out.append(
                Row(
                    dataset,
                    target,
                    names[target],
                    "full",
                    None,
                    0,
                    len(pool),
                    ap,
                    precision,
                    recall,
                    None,
                    sum(1 for _, label in pool if label == target),
                    None,
                )
            )
        collection.delete_classifier(base.row.id)
        tick()

        labeler = labeler_for(target, config.graded, names)
        for method in loops:
            for seed in config.seeds:
                # The article's loop as it was written: its top-k has no near-copy check.
                original = {"near_copy": 1.0} if method.fit == "article" else {}
                settings = Settings(
                    **{
                        **overrides,
                        **original,
                        "k": config.k,
                        "strategy": method.strategy,
                        "fit": method.fit,
                        "pool_split": config.pool_split,
                        "target": target,
                        "seed": trainer_seed(seed, target),
                        "exclude_dev": config.tune,
                        "seed_name": bench_seed_name(method.name, target, seed),
                    }
                )
                trainer = timer(
                    "create",
                    Trainer.create,
                    collection,
                    bench_name(method.name, target, seed),
                    prompt=prompt,
                    settings=settings,
                    replace=True,
                )
                try:
                    out += _one_run(
                        trainer,
                        labeler,
                        method,
                        seed,
                        config.rounds,
                        evaluate,
                        dataset,
                        names[target],
                        timer,
                        tick,
                        prompt,
                    )
                finally:
                    collection.delete_classifier(trainer.row.id)

    return BenchResult(
        dataset=dataset,
        collection=str(collection.root),
        model_id=collection.model_id or "",
        pool_split=config.pool_split,
        eval_split=eval_name,
        pool_size=len(pool),
        eval_size=eval_size,
        classes=classes,
        names={c: names[c] for c in classes},
        methods=[asdict(m) for m in methods],
        config={k: v for k, v in asdict(config).items() if k != "names"},
        rows=out,
        timing={
            **{k: round(v, 3) for k, v in timer.seconds.items()},
            **{f"{k}_calls": v for k, v in timer.calls.items()},
        },
        ceiling=ceiling,
        protocol="tune" if config.tune else "report",
    )


def _check_settings(overrides: dict) -> dict:
    """Settings overrides for the loops: known fields only, and never the ones the bench sets."""
    from localq.loop.trainer_types import Settings

    fixed = {"k", "strategy", "fit", "pool_split", "target", "seed", "exclude_dev"}
    out = {}
    for key, value in (overrides or {}).items():
        if key not in Settings.__dataclass_fields__ or key in fixed:
            raise LocalqError(
                f"cannot set {key!r} for the bench loops; settable: "
                + ", ".join(k for k in Settings.__dataclass_fields__ if k not in fixed)
            )
        out[key] = value
    return out


def _one_run(
    trainer,
    labeler,
    method: Method,
    seed: int,
    rounds: int,
    evaluate,
    dataset: str,
    class_name: str,
    timer: Timer,
    tick,
    prompt: str,
) -> list[Row]:
    target = labeler.target
    ap, precision, recall = evaluate(trainer.weights, trainer.bias)
    rows = [Row(dataset, target, class_name, method.name, seed, 0, 0, ap, precision, recall, None, 0, None, prompt)]
    n_labels = positives = repeats = 0
    scenes: set[str] = set()
    for round_no in range(1, rounds + 1):
        hits = timer("next_batch", trainer.next_batch)
        if not hits:
            break  # the pool is exhausted
        scores = labeler.scores(hits)
        timer("submit", trainer.submit, scores)
        ap, precision, recall = evaluate(trainer.weights, trainer.bias)
        in_class = sum(1 for h in hits if h.label == target)
        n_labels += len(hits)
        positives += in_class
        for h in hits:
            scene = scene_of(h.path)
            repeats += scene in scenes
            scenes.add(scene)
        rows.append(
            Row(
                dataset,
                target,
                class_name,
                method.name,
                seed,
                round_no,
                n_labels,
                ap,
                precision,
                recall,
                in_class / len(hits),
                positives,
                positives / n_labels,
                repeats=repeats,
            )
        )
        tick()
    tick(rounds - (len(rows) - 1))  # rounds skipped on an exhausted pool still count as done
    return rows


def cleanup(collection) -> int:
    """Delete bench classifiers left behind by a run that was killed mid-way."""
    stale = [c for c in collection.classifier_rows() if c.name.startswith((BENCH_PREFIX, "bench/"))]  # + pre-slug runs
    for c in stale:
        collection.delete_classifier(c.id)
    return len(stale)
