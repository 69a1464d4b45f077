"""Readable names for folder labels: an ImageNet synset id (n02102040) becomes its WordNet
word ("English springer"), other labels lose their underscores.

Imagenette-style folders are named by synset, and a person reads "AP 0.915 (English
springer)" where "(n02102040)" means nothing. The words come from the lemma table that
timm (a dependency) ships; it is read as a file, without importing timm and with it
torch, so the labeling UI's status line costs milliseconds.
"""

from __future__ import annotations

import csv
import importlib.util
import re
from functools import lru_cache
from pathlib import Path

SYNSET = re.compile(r"^n\d{8}$")
LEMMA_FILE = Path("data") / "_info" / "imagenet_synset_to_lemma.txt"  # inside the timm package


def synset_word(synset: str) -> str | None:
    """The first lemma of an ImageNet synset (n03394916 -> 'French horn'); None when unknown."""
    lemma = _lemmas().get(synset)
    return lemma.split(",")[0].strip() if lemma else None


def readable(label: str) -> str:
    """What to show for a folder label: the synset's word, else the label with spaces for '_'."""
    if SYNSET.match(label):
        return synset_word(label) or label
    return label.replace("_", " ")


@lru_cache(maxsize=1)
def _lemmas() -> dict[str, str]:
    try:
        spec = importlib.util.find_spec("timm")
        locations = list(spec.submodule_search_locations or []) if spec else []
        for location in locations:
            path = Path(location) / LEMMA_FILE
            if path.is_file():
                return dict(
                    row for row in csv.reader(path.read_text("utf-8").splitlines(), delimiter="\t") if len(row) == 2
                )
    except (OSError, ValueError, ImportError):  # the names are a nicety: the label is shown instead
        pass
    return {}
