"""The plain values a Trainer is configured with and hands back to its drivers.

They live apart from trainer.py because they carry no behaviour of the loop: scoring.py,
start_query.py and the drivers use them without importing the Trainer.
"""

from __future__ import annotations

from dataclasses import dataclass

from localq.loop import fit, sampling
from localq.loop.sampling import DEFAULT_STRATEGY

FIT_MODES = ("all-labels", "article")

# A loop counts as cold when no positive was labeled yet, or this many labeled rounds in a
# row brought none: then the UI offers a new prompt, an example image or "more like this".
COLD_ROUNDS = 2


@dataclass
class Settings:
    k: int = 10
    strategy: str = DEFAULT_STRATEGY
    # Fit defaults come from the label-efficiency study (localq/loop/fit.py explains each).
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
    # The ``auto`` strategy's explore / exploit shares (localq/loop/sampling.py; chosen on dev splits).
    explore_first: float = sampling.AUTO_EXPLORE_FIRST
    explore_cold: float = sampling.AUTO_EXPLORE_COLD
    top_share: float = sampling.AUTO_TOP_SHARE
    explore_temperature: float = sampling.AUTO_TEMPERATURE
    near_copy: float = sampling.NEAR_COPY  # cosine above which an unseen image counts as a copy of a labeled one
    exclude_dev: bool = False  # leave the pool split's dev part (localq.loop.devsplit) out: bench --tune

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
