"""Putting a classifier to work where the photos live: `localq tag` (keywords in XMP sidecars
photo managers read) and the image-folder output of `localq export` (folders training code reads)."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from localq.cli.common import FiniteFloat, db_option, emit_json, friendly_errors, json_option, open_collection
from localq.display import printable

_VERBS = {"added": "add", "updated": "update", "removed": "remove"}


@click.command()
@click.argument("classifier")
@click.argument("paths", nargs=-1, type=click.Path(exists=True, path_type=Path))
@click.option(
    "--threshold",
    "--min-score",
    "threshold",
    type=FiniteFloat(),
    default=0.0,
    show_default=True,
    help="Tag photos scoring above this (w·x + b), as `predict` counts positives.",
)
@click.option("--keyword", metavar="TEXT", help="Keyword to write (default: the classifier's name).")
@click.option(
    "--sidecar-style",
    "style",
    type=click.Choice(["photo.jpg.xmp", "photo.xmp"]),
    default="photo.jpg.xmp",
    show_default=True,
    help="Sidecar name: photo.jpg.xmp (digiKam, darktable) or photo.xmp (Lightroom-style).",
)
@click.option("--remove", is_flag=True, help="Take this classifier's keyword out of the sidecars; leave all else.")
@click.option("--dry-run", is_flag=True, help="List what would change; write nothing.")
@db_option
@json_option
@friendly_errors
def tag(classifier, paths, threshold, keyword, style, remove, dry_run, db, as_json):
    """Write CLASSIFIER's positives as keywords into XMP sidecars beside the photos.

    Covers the collection, or the photos under PATHS. Photos no longer predicted lose the
    keyword an earlier run gave them. The photos themselves are never changed.

    \b
    Example:
      localq tag a-photo-of-a-dog --keyword dog --dry-run
      localq tag a-photo-of-a-dog ~/Pictures/2024
    """
    from localq.loop.trainer import Trainer
    from localq.photos.tagging import tag_photos

    def show(change):
        if not as_json:
            verb = _VERBS[change.action] if dry_run else change.action
            click.echo(f"{verb:<8} {change.score:+.4f}  {printable(change.sidecar)}")

    def problem(message):
        click.echo(f"problem: {printable(message)}", err=True)

    with open_collection(db) as coll:
        trainer = Trainer.open(coll, classifier)
        if trainer.round == 0 and not remove:
            click.echo(
                f"note: {printable(classifier)} has no labeled round yet: its scores come from the start query alone",
                err=True,
            )
        report = tag_photos(
            trainer,
            paths,
            threshold=threshold,
            keyword=keyword,
            style=style,
            remove=remove,
            dry_run=dry_run,
            on_wait=lambda m: click.echo(m + " ...", err=True),
            on_change=show,
            on_problem=problem,
        )
    for path, reason in report.skipped_files:
        click.echo(f"skipped {printable(path)}: {printable(reason)}", err=True)
    counts = {a: report.count(a) for a in ("added", "updated", "removed")}
    if as_json:
        emit_json(
            {
                "classifier": classifier,
                "keyword": report.keyword,
                "dry_run": dry_run,
                "threshold": threshold,
                "photos": report.photos,
                "positives": report.positives,
                **counts,
                "problems": report.problems,
                "changes": [
                    {"photo": c.photo, "sidecar": str(c.sidecar), "action": c.action, "score": round(c.score, 6)}
                    for c in report.changes
                ],
            }
        )
    else:
        gain, upd, lose = ("would gain", "would be updated", "would lose") if dry_run else ("gained", "updated", "lost")
        click.echo(
            f"{printable(report.keyword)!r}: {report.positives} of {report.photos} photos positive above "
            f"{threshold}; {counts['added']} sidecars {gain} the keyword, {counts['updated']} {upd}, "
            f"{counts['removed']} {lose} it"
            + (f"; {len(report.problems)} could not be used (listed above)" if report.problems else ""),
            err=True,
        )
    if report.problems:
        sys.exit(1)


def export_imagefolder(trainer, out_dir: Path, predicted: bool, copy_files: bool) -> None:
    """`localq export --format imagefolder`: the folders, then one summary line."""
    from localq.photos.imagefolder import export_imagefolder as write

    result = write(trainer, out_dir, predicted=predicted, copy=copy_files)
    for path in result.missing:
        click.echo(f"skipped {printable(path)}: no longer on disk", err=True)
    words = {"hardlink": "hard links", "symlink": "symbolic links", "copy": "copies"}
    how = ", ".join(f"{n} {words[kind]}" for kind, n in result.how.items() if n)
    click.echo(printable(result.manifest))
    click.echo(
        f"{result.counts['positive']} positive, {result.counts['negative']} negative "
        f"({'predicted' if predicted else 'labeled'}) in {printable(out_dir)}" + (f": {how}" if how else ""),
        err=True,
    )
