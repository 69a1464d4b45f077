"""Start a classifier, or continue the one of that name: what `localq train` and
`localq demo` do before the UI opens, as one core call."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from localq.collection.collection import Collection
from localq.errors import LocalqError
from localq.loop.trainer import Trainer
from localq.loop.trainer_types import Settings
from localq.names import check_name, slug


@dataclass
class Started:
    trainer: Trainer
    continued: bool  # the name to create was taken: that classifier was opened instead


def start_or_open(
    collection: Collection,
    *,
    prompt: str | None = None,
    images: Sequence[str] = (),
    classifier: str | None = None,
    weights_file: str | Path | None = None,
    name: str | None = None,
    k: int | None = None,
    strategy: str | None = None,
) -> Started:
    """Open ``classifier``; else open the classifier called ``name`` (derived from the
    prompt or file when not given) if it exists; else create it from exactly one of a
    prompt, example images or a classifier file. ``k`` and ``strategy`` given here become
    the classifier's settings either way."""
    if sum(bool(x) for x in (prompt, images, classifier, weights_file)) != 1:
        raise LocalqError("start from one of: a prompt, example images, a classifier, a classifier file")
    changes = {key: v for key, v in (("k", k), ("strategy", strategy)) if v}
    continued = False
    if classifier:
        trainer = Trainer.open(collection, classifier)
    else:
        # An explicit name must be valid as given ('' too); only a missing one is derived.
        name = (
            check_name(name)
            if name is not None
            else slug(prompt or (Path(weights_file).stem if weights_file else "examples"))
        )
        continued = collection.has_classifier(name)
        if continued:
            trainer = Trainer.open(collection, name)
        else:
            trainer = Trainer.create(
                collection, name, prompt=prompt, images=images, weights_file=weights_file, settings=Settings(**changes)
            )
    if changes and (classifier or continued):  # a new classifier was created with them
        trainer.update_settings(**changes)
    return Started(trainer, continued)
