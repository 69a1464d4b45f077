"""Drafts: the batch on screen with what the user entered, written as the user scores, so a
dropped SSH session loses nothing (``<collection>/tui-drafts/<classifier>.json``).

Plain file I/O, no Textual: the batch screen writes a draft, the next start reads it
back (bridge.first_batch restores it when its round still matches).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path


@dataclass
class Draft:
    round: int
    ids: list[int]
    scores: dict[int, float]
    skipped: set[int]

    def to_json(self) -> str:
        return json.dumps(
            {
                "round": self.round,
                "ids": self.ids,
                "scores": {str(k): v for k, v in self.scores.items()},
                "skipped": sorted(self.skipped),
            }
        )

    @classmethod
    def from_json(cls, text: str) -> "Draft":
        data = json.loads(text)
        return cls(
            int(data["round"]),
            [int(i) for i in data["ids"]],
            {int(k): float(v) for k, v in data.get("scores", {}).items()},
            {int(i) for i in data.get("skipped", [])},
        )


def draft_path(root: Path, classifier: str) -> Path:
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in classifier)
    return Path(root) / "tui-drafts" / f"{safe}.json"


def read_draft(path: Path) -> Draft | None:
    try:
        return Draft.from_json(path.read_text())
    except (OSError, ValueError, KeyError, TypeError):
        return None  # no draft, or a half-written one from a crash: start a fresh batch


def write_draft(path: Path, draft: Draft) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(draft.to_json())
    os.replace(tmp, path)  # atomic: a kill mid-write leaves the old draft


def drop_draft(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass
    try:
        path.parent.rmdir()  # only when no other classifier has a draft
    except OSError:
        pass
