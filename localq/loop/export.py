"""Export a classifier: its file plus every current label with path and score."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from localq.loop.trainer import Trainer
from localq.names import check_name
from localq.outputs import OutputFolder


def export_classifier(trainer: Trainer, out_dir: Path, *, fmt: str = "safetensors") -> list[Path]:
    """Write NAME.FMT, NAME-labels.csv and NAME-labels.jsonl into ``out_dir`` and nowhere
    else: the name is a checked slug, and each file is written through the folder
    without following anything planted in it (outputs.py), to a temporary name renamed
    into place, so a full disk never leaves a truncated file under the final name."""
    name = check_name(trainer.name)
    model = {f"{name}{suffix}": data for suffix, data in trainer.encoded(fmt).items()}
    csv_name, jsonl_name = f"{name}-labels.csv", f"{name}-labels.jsonl"
    records = _label_records(trainer)
    with OutputFolder.open(out_dir) as folder:
        for file_name in [*model, csv_name, jsonl_name]:  # all refused before any is written
            folder.check_target(file_name)
        for file_name, data in model.items():
            folder.write_bytes(file_name, data)
        # surrogateescape: a file name that is not UTF-8 is written back as its original bytes.
        with folder.replacing(csv_name, "w", newline="", errors="surrogateescape") as fh:
            writer = csv.DictWriter(fh, fieldnames=["id", "path", "label", "classifier_score", "class", "round"])
            writer.writeheader()
            writer.writerows(records)
        with folder.replacing(jsonl_name, "w") as fh:
            for rec in records:
                fh.write(json.dumps(rec) + "\n")
        # Every file written is listed: the .npy format's bias and model id live in its .json sidecar.
        return [*(folder.path / file_name for file_name in model), folder.path / csv_name, folder.path / jsonl_name]


def _label_records(trainer: Trainer) -> list[dict]:
    labels = trainer.labels()
    rows = {r.id: r for r in trainer.collection.image_rows(labels)}
    predicted = trainer.scores(list(labels)) if labels else []
    records = [
        {
            "id": i,
            "path": rows[i].path,
            "label": score,
            "classifier_score": round(float(p), 6),
            "class": rows[i].label,
            "round": None,
        }
        for (i, score), p in zip(labels.items(), predicted)
        if i in rows
    ]
    rounds = trainer.label_rounds()
    for rec in records:
        rec["round"] = rounds.get(rec["id"])
    return records
