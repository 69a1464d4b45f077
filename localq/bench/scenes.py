"""Which benchmark images show one scene: a photo and its near-copies.

``scripts/burst_dataset.py`` writes the near-copies of ``NAME.EXT`` as
``NAME.burstI.jpg`` beside it; this is the one place that reads that naming back. In a
data set without such copies every image is its own scene, and no label is ever counted
as spent on a scene already labeled.
"""

from __future__ import annotations

import re
from pathlib import PurePath

_COPY = re.compile(r"\.burst\d+$")


def scene_of(path: str) -> str:
    """The scene an image path shows: its folder and its name without the copy mark."""
    p = PurePath(path)
    return str(p.parent / _COPY.sub("", p.stem))
