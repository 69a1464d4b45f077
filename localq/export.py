"""Export a classifier: its file plus every current label with path and score."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from localq.trainer import Trainer


def export_classifier(trainer: Trainer, out_dir: Path, *, fmt: str = "safetensors") -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    model = trainer.save(out_dir / f"{trainer.name}.{fmt}")
    labels = trainer.labels()
    rows = {r.id: r for r in trainer.store.images(labels)}
    predicted = trainer.collection.index.matrix()[list(labels)] @ trainer.weights + trainer.bias if labels else []
    records = [
        {"id": i, "path": rows[i].path, "label": score, "classifier_score": round(float(p), 6),
         "class": rows[i].label, "round": None}
        for (i, score), p in zip(labels.items(), predicted) if i in rows
    ]
    rounds = {image_id: r for r, image_id, _ in trainer.store.label_history(trainer.row.id)}
    for rec in records:
        rec["round"] = rounds.get(rec["id"])
    csv_path, jsonl_path = out_dir / f"{trainer.name}-labels.csv", out_dir / f"{trainer.name}-labels.jsonl"
    with csv_path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["id", "path", "label", "classifier_score", "class", "round"])
        writer.writeheader()
        writer.writerows(records)
    with jsonl_path.open("w") as fh:
        for rec in records:
            fh.write(json.dumps(rec) + "\n")
    return [model, csv_path, jsonl_path]
