"""The simulated person who scores each retrieved batch from the folder labels.

By default an image of the target class scores +1 and every other image -1. The graded
mode reads a mapping file that gives related classes a partial score, the way a person
would half-accept a wolf when asked for dogs:

    {"dog": {"wolf": 0.5, "cat": -0.5},
     "*":   {"unlabeled": 0.0}}

Keys are class labels or their readable names; ``"*"`` applies to every target.
Classes absent from the mapping score -1; the target itself always scores +1.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from localq.errors import LocalqError


class MappingError(LocalqError):
    """The graded-labeler mapping file is unreadable or holds a score outside [-1, 1]."""


@dataclass(frozen=True)
class Labeler:
    target: str
    related: dict[str, float] = field(default_factory=dict)  # label -> score for non-target classes

    def score(self, label: str | None) -> float:
        if label == self.target:
            return 1.0
        return self.related.get(label, -1.0) if label is not None else -1.0

    def scores(self, hits: Iterable) -> dict[int, float]:
        """{image id: score} for a batch of hits (anything with ``id`` and ``label``)."""
        return {int(h.id): self.score(h.label) for h in hits}


def load_mapping(path: str | Path) -> dict[str, dict[str, float]]:
    """Read and check a graded mapping file: {target: {related class: score}}."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise MappingError(f"cannot read the graded mapping {path}: {exc}") from None
    if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
        raise MappingError(f"{path} must hold a JSON object {{target: {{related class: score}}}}")
    out = {}
    for target, related in data.items():
        out[str(target)] = {}
        for label, score in related.items():
            if not isinstance(score, (int, float)) or math.isnan(score) or not -1.0 <= score <= 1.0:
                raise MappingError(f"{path}: score {score!r} for {target!r} -> {label!r} must be a number in [-1, 1]")
            out[str(target)][str(label)] = float(score)
    return out


def labeler_for(target: str, mapping: dict[str, dict[str, float]] | None, names: dict[str, str]) -> Labeler:
    """The labeler for one target class; mapping keys may be labels or readable names."""
    if not mapping:
        return Labeler(target)
    by_name = {name: label for label, name in names.items()}

    def resolve(key: str) -> str:
        return key if key in names else by_name.get(key, key)

    related: dict[str, float] = {}
    for key in ("*", names.get(target, target), target):  # the most specific key wins
        for label, score in mapping.get(key, {}).items():
            related[resolve(label)] = score
    related.pop(target, None)
    return Labeler(target, related)
