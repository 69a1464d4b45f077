"""Commands on classifiers: train (the labeling UI), classifiers, predict, export, history, undo."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from localq.cli.common import (
    FiniteFloat,
    count_option,
    db_option,
    emit_json,
    friendly_errors,
    json_option,
    open_collection,
)
from localq.display import printable


def _open_trainer(coll, name: str):
    from localq.loop.trainer import Trainer

    return Trainer.open(coll, name)


@click.command()
@click.argument("prompt", required=False)
@click.option(
    "--image",
    "images",
    multiple=True,
    metavar="PATH|ID",
    help="Start from example image(s): a file or a collection id.",
)
@click.option("--classifier", "from_classifier", metavar="NAME", help="Continue an existing classifier.")
@click.option(
    "--from-file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Start from a classifier file (.safetensors, .npy, torch .pt).",
)
@click.option("--name", metavar="NAME", help="Name of a new classifier (default: from the prompt).")
@count_option("-k", help="Images per batch (default 10).")
@click.option(
    "--strategy", type=click.Choice(["auto", "top", "boundary", "diverse", "random"]), help="How each batch is chosen."
)
@click.option(
    "--thumbnails",
    type=click.Choice(["auto", "halfblock", "sixel", "kitty"]),
    default="auto",
    show_default=True,
    envvar="LOCALQ_THUMBNAILS",
    help="Image protocol; auto: kitty or sixel where the terminal draws them, else halfblock (always works).",
)
@click.option(
    "--example",
    "examples",
    multiple=True,
    metavar="PATH|ID",
    help="Label this image +1 (a file is indexed into the collection) before the UI opens; a round each.",
)
@db_option
@friendly_errors
def train(prompt, images, from_classifier, from_file, name, k, strategy, thumbnails, examples, db):
    """Open the labeling UI: retrieve, score, fit, repeat.

    \b
    Example:
      localq train "a photo of a dog"
      localq train --classifier a-photo-of-a-dog --example ~/Pictures/my-dog.jpg
    """
    import_ui_meanwhile()
    trainer = start_from_options(db, prompt, images, from_classifier, from_file, name, k, strategy)
    for item in examples:  # a person breaking a cold start, as the UI's "a" key does
        row = trainer.add_example(item)
        click.echo(f"added {item} as a positive example (round {row.round})", err=True)
    from localq.ingest.background import BackgroundIndexer, pending
    from localq.tui.app import run_train

    coll = trainer.collection
    unfinished = pending(coll)  # a demo quit mid-way: resume its indexing behind the UI
    background = None
    if unfinished:
        background = BackgroundIndexer(
            coll.root, unfinished["roots"], coll.encoder(), with_labels=bool(unfinished.get("with_labels"))
        ).start()
    try:
        run_train(coll, trainer, k=k, strategy=strategy, thumbnails=thumbnails, background=background)
    finally:
        if background is not None:
            background.stop()


def import_ui_meanwhile() -> None:
    """Import Textual (~1 s) on a thread while the collection opens and the prompt is encoded."""
    import threading

    def load():
        try:
            import localq.tui.app  # noqa: F401
        except Exception:  # the real import below reports it
            pass

    threading.Thread(target=load, name="localq-import-ui", daemon=True).start()


def start_from_options(db, prompt, images, from_classifier, from_file, name, k, strategy):
    """The classifier `train` and `demo` open: started, or continued when its name is taken."""
    from localq.loop.classifier_start import start_or_open

    if sum(bool(x) for x in (prompt, images, from_classifier, from_file)) != 1:
        raise click.UsageError("give one of PROMPT, --image, --classifier or --from-file")
    started = start_or_open(
        open_collection(db),
        prompt=prompt,
        images=images,
        classifier=from_classifier,
        weights_file=from_file,
        name=name,
        k=k,
        strategy=strategy,
    )
    if started.continued:
        click.echo(
            f"continuing classifier {printable(started.trainer.name)!r} (round {started.trainer.round})", err=True
        )
    return started.trainer


@click.command()
@db_option
@json_option
@friendly_errors
def classifiers(db, as_json):
    """List the collection's classifiers with their rounds, labels and AP.

    \b
    Example:
      localq classifiers --json
    """
    from dataclasses import asdict

    from localq.loop.trainer import Trainer

    with open_collection(db) as coll:
        rows = [asdict(state) for state in Trainer.states(coll)]
    if as_json:
        emit_json({"classifiers": rows})
        return
    from localq.label_names import readable

    for r in rows:
        ap = f"  AP {r['ap']:.3f} ({printable(readable(r['target']))})" if r["ap"] is not None else ""
        click.echo(
            f"{printable(r['name']):<28} round {r['round']:>3}  +{r['labels_positive']}/-{r['labels_negative']}  "
            f"{r['strategy']:<8} {r['source']}: {printable(r['prompt'])}{ap}"
        )
    if not rows:
        click.echo('no classifiers yet: start one with `localq train "a prompt"`', err=True)


@click.command()
@click.argument("classifier")
@click.argument("paths", nargs=-1, type=click.Path(path_type=Path))
@click.option(
    "--threshold",
    type=FiniteFloat(),
    default=0.0,
    show_default=True,
    help="Predict positive above this score (w·x + b).",
)
@click.option("--split", help="Only collection images of this split (e.g. val).")
@count_option("--limit", help="At most this many positives.")
@click.option("--csv", "as_csv", is_flag=True, help="CSV output: path,score,label.")
@db_option
@json_option
@friendly_errors
def predict(classifier, paths, threshold, split, limit, as_csv, db, as_json):
    """Positives of CLASSIFIER, best first: over PATHS (embedded on the fly) or the collection.

    \b
    Example:
      localq predict a-photo-of-a-dog --split val --limit 20
      localq predict a-photo-of-a-dog new_photos/ --csv
    """
    from localq.errors import ImageNotFound
    from localq.imageio import is_image_path

    files = []
    for p in paths:
        # Checked here, not by click: a mistyped path is one `error:` line and exit 1, like every bad input.
        if not p.exists():
            raise ImageNotFound(f"no such file or folder: {printable(p)}")
        files += [str(f) for f in sorted(p.rglob("*")) if is_image_path(f)] if p.is_dir() else [str(p)]
    with open_collection(db) as coll:
        trainer = _open_trainer(coll, classifier)
        unfitted = _unfitted_note(trainer)
        if files:  # one undecodable file is left out with a note, never fatal to the others
            preds, bad = trainer.predict_files(files, threshold)
            total = len(preds)
            preds = preds[:limit] if limit else preds
        else:
            (preds, total), bad = trainer.positives(threshold, split=split, limit=limit), []
    for path, reason in bad:
        click.echo(f"skipped {printable(path)}: {printable(reason)}", err=True)
    if as_json:
        emit_json(
            {
                "classifier": classifier,
                "threshold": threshold,
                "round": trainer.round,
                "positive": total,
                "predictions": [
                    {"id": p.id, "path": p.path, "score": round(p.score, 6), "label": p.label} for p in preds
                ],
            }
        )
    elif as_csv:
        import csv

        writer = csv.writer(sys.stdout)
        writer.writerow(["path", "score", "label"])
        # Escaped like every printed path (a terminal or a pipe); --json carries names losslessly.
        writer.writerows([(printable(p.path), f"{p.score:.6f}", printable(p.label or "")) for p in preds])
    else:
        for p in preds:
            click.echo(f"{p.score:+.4f}  {printable(p.path)}" + (f"  [{printable(p.label)}]" if p.label else ""))
        shown = f"{len(preds)} shown of {total} positive" if len(preds) < total else f"{total} positive"
        click.echo(f"{shown} above {threshold}", err=True)
    if unfitted and not as_json:
        click.echo(unfitted, err=True)


def _unfitted_note(trainer) -> str | None:
    """Round 0 has no fit: its scores are the start query's, which a person should know."""
    if trainer.round > 0:
        return None
    start = {
        "prompt": f"the prompt {printable(trainer.row.prompt)!r}",
        "images": "the example images",
        "file": "the loaded classifier file",
    }.get(trainer.row.source, "its start query")
    return (
        f"note: {printable(trainer.name)} is at round 0, not yet fitted on labels: these scores come from "
        f"{start} alone; label images with `localq train --classifier {printable(trainer.name)}`"
    )


@click.command()
@click.argument("classifier")
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Directory (default: ./CLASSIFIER-export).",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["safetensors", "npy", "imagefolder"]),
    default="safetensors",
    show_default=True,
    help="imagefolder: OUT/positive/ and OUT/negative/ with a manifest.csv, as torchvision's ImageFolder reads.",
)
@click.option("--predicted", is_flag=True, help="imagefolder: classes from predictions (score > 0), not labels.")
@click.option(
    "--copy",
    "copy_files",
    is_flag=True,
    help="imagefolder: copy files (default: hard links, else symlinks, else copies).",
)
@db_option
@friendly_errors
def export(classifier, out_dir, fmt, predicted, copy_files, db):
    """Write the classifier file and its labels (CSV and JSONL, with paths and scores).

    \b
    Example:
      localq export a-photo-of-a-dog --out exports/
      localq export a-photo-of-a-dog --format imagefolder --predicted --out dogs/
    """
    from localq.loop.export import export_classifier

    if (predicted or copy_files) and fmt != "imagefolder":
        raise click.UsageError("--predicted and --copy go with --format imagefolder")
    with open_collection(db) as coll:
        trainer = _open_trainer(coll, classifier)  # checks the name before it becomes the default folder name
        if fmt == "imagefolder":
            from localq.cli.tag_commands import export_imagefolder

            return export_imagefolder(trainer, out_dir or Path(f"{classifier}-imagefolder"), predicted, copy_files)
        written = export_classifier(trainer, out_dir or Path(f"{classifier}-export"), fmt=fmt)
    for path in written:
        click.echo(printable(path))


@click.command()
@click.argument("classifier")
@click.option("--split", help="Evaluate on this split only (e.g. val).")
@db_option
@json_option
@friendly_errors
def history(classifier, split, db, as_json):
    """Rounds of CLASSIFIER: labels so far, strategy and, with folder labels, AP per round.

    \b
    Example:
      localq history a-photo-of-a-dog --split val
    """
    with open_collection(db) as coll:
        trainer = _open_trainer(coll, classifier)
        rows = [
            {
                "round": r.round,
                "labels": r.n_labels,
                "strategy": r.strategy,
                "at": r.created_at,
                "ap": _ap(trainer.evaluate_weights(r.weights, r.bias, split=split)),
            }
            for r in trainer.history()
        ]
    if as_json:
        emit_json({"classifier": classifier, "rounds": rows})
        return
    for r in rows:
        ap = f"  AP {r['ap']:.3f}" if r["ap"] is not None else ""
        click.echo(f"round {r['round']:>3}  {r['labels']:>4} labels  {r['strategy'] or '-':<8} {r['at']}{ap}")


def _ap(evaluation) -> float | None:
    return round(evaluation.ap, 4) if evaluation else None


@click.command()
@click.argument("classifier")
@db_option
@friendly_errors
def undo(classifier, db):
    """Drop CLASSIFIER's last round: its labels, seen flags and fitted weights.

    \b
    Example:
      localq undo a-photo-of-a-dog
    """
    with open_collection(db) as coll:
        trainer = _open_trainer(coll, classifier)
        trainer.undo()
        click.echo(f"{printable(classifier)} is back at round {trainer.round}")
