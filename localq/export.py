"""Export a classifier: its file plus every current label with path and score."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from localq.errors import LocalqError
from localq.names import check_name
from localq.trainer import Trainer


def export_classifier(trainer: Trainer, out_dir: Path, *, fmt: str = "safetensors") -> list[Path]:
    """Write NAME.FMT, NAME-labels.csv and NAME-labels.jsonl into ``out_dir`` and nowhere
    else: the name is a checked slug and each target is resolved (symlinks included) and
    refused unless it lies directly in ``out_dir``."""
    name = check_name(trainer.name)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    files = {"model": f"{name}.{fmt}", "csv": f"{name}-labels.csv", "jsonl": f"{name}-labels.jsonl"}
    if fmt == "npy":
        files["sidecar"] = f"{name}.json"  # classifier_file.save writes it beside the .npy
    targets = {key: _inside(out_dir, file_name) for key, file_name in files.items()}
    model = trainer.save(targets["model"])
    labels = trainer.labels()
    rows = {r.id: r for r in trainer.collection.image_rows(labels)}
    predicted = trainer.collection.index.matrix()[list(labels)] @ trainer.weights + trainer.bias if labels else []
    records = [
        {"id": i, "path": rows[i].path, "label": score, "classifier_score": round(float(p), 6),
         "class": rows[i].label, "round": None}
        for (i, score), p in zip(labels.items(), predicted) if i in rows
    ]
    rounds = trainer.label_rounds()
    for rec in records:
        rec["round"] = rounds.get(rec["id"])
    csv_path, jsonl_path = targets["csv"], targets["jsonl"]
    # surrogateescape: a file name that is not UTF-8 is written back as its original bytes.
    with csv_path.open("w", newline="", errors="surrogateescape") as fh:
        writer = csv.DictWriter(fh, fieldnames=["id", "path", "label", "classifier_score", "class", "round"])
        writer.writeheader()
        writer.writerows(records)
    with jsonl_path.open("w") as fh:
        for rec in records:
            fh.write(json.dumps(rec) + "\n")
    # Every file written is listed: the .npy format's bias and model id live in its .json sidecar.
    return [model, *([targets["sidecar"]] if "sidecar" in targets else []), csv_path, jsonl_path]


def _inside(out_dir: Path, file_name: str) -> Path:
    """``out_dir / file_name``, refused if it resolves anywhere but directly inside ``out_dir``
    (a '..' name, or a symlink planted in the folder pointing elsewhere)."""
    root = out_dir.resolve()
    target = out_dir / file_name
    if target.resolve().parent != root or target.name != file_name:
        raise LocalqError(f"refusing to write {file_name!r}: it would land outside {root}")
    return target
