"""Checks on what a caller labels: image ids and scores, before anything reaches the fit.

A label is the one input drivers type in, so it is checked strictly (2.7, True or
10**400 would otherwise label another image or poison the weights). The checks need
only the scores, the pending batch and the live mask, so they sit apart from trainer.py.
"""

from __future__ import annotations

import math
import numbers

import numpy as np

from localq.errors import InvalidScores


def validated_scores(scores: dict, batch: set[int], live: np.ndarray) -> dict[int, float]:
    """``scores`` as {image id: score}, every id live (and in ``batch`` when a batch is pending)."""
    if not isinstance(scores, dict) or not scores:
        raise InvalidScores("no scores given: pass a dict of image id -> score in [-1, 1]")
    clean = {}
    for key, value in scores.items():
        image_id = checked_id(key, live)
        score = checked_score(value, image_id)
        if batch and image_id not in batch:
            raise InvalidScores(f"image id {image_id} is not in the current batch")
        clean[image_id] = score
    return clean


def checked_id(key: object, live: np.ndarray | None) -> int:
    """An image id as an int: ints and integral floats only (2.7 or True would label
    another image than the caller meant); with ``live``, of a live image."""
    if isinstance(key, (bool, np.bool_)) or not isinstance(key, numbers.Real):
        raise InvalidScores(f"image id {key!r} is not an integer")
    if not isinstance(key, numbers.Integral):
        try:
            as_float = float(key)  # a Fraction or Decimal beyond float's range overflows here
        except (OverflowError, ValueError, TypeError):
            raise InvalidScores("image id is far outside the collection (not a usable number)") from None
        if not (math.isfinite(as_float) and as_float.is_integer()):
            raise InvalidScores(f"image id {key!r} is not an integer")
    image_id = int(key)
    if live is not None and (not 0 <= image_id < len(live) or not live[image_id]):
        raise InvalidScores(f"image id {image_id} is not in the collection")
    return image_id


def checked_score(value: object, image_id: int) -> float:
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
