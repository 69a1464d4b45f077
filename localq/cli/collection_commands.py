"""Commands on the collection itself: index, search, stats, reset, skipped, check, repair."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from localq.cli.common import (
    count_option,
    db_option,
    emit_json,
    encoder_options,
    friendly_errors,
    json_option,
    open_collection,
    search_index_option,
)
from localq.cli.progress import ProgressLine
from localq.display import printable


@click.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@db_option
@encoder_options
@click.option(
    "--labels", "with_labels", is_flag=True, help="Read class label and split from split/class/file folder names."
)
@count_option("--batch-size", default=32, show_default=True, help="Images per encoder batch.")
@click.option(
    "--decode-threads",
    default=1,
    show_default=True,
    type=click.IntRange(0, 8),
    help="Threads decoding the next batch while the model runs (0: decode in turn with it).",
)
@click.option(
    "--ray",
    "ray_address",
    metavar="ADDRESS",
    help="Embed new and changed files on Ray (auto, HOST:PORT or local), then index as without it (see `localq embed`).",
)
@search_index_option
@click.option(
    "--verify",
    is_flag=True,
    help="Re-read and hash every file, even where size and mtime are unchanged (slower; catches a file "
    "rewritten with its mtime put back).",
)
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@json_option
@friendly_errors
def index(
    paths,
    db,
    encoder,
    weights,
    with_labels,
    batch_size,
    decode_threads,
    ray_address,
    search_index,
    verify,
    quiet,
    as_json,
):
    """Embed every image under PATHS into the collection.

    Re-running embeds only new or changed files and drops deleted ones and ones that no
    longer decode; a file moved or renamed keeps its labels. An interrupted run resumes
    where it stopped. Unreadable and corrupt files are skipped and recorded (see
    `localq skipped`). A file counts as unchanged while its size and mtime are: --verify
    re-reads every file.

    \b
    Example:
      localq index ../shared/datasets/imagenette/val --labels
    """
    from localq.encoders import load_encoder
    from localq.ingest.indexer import check_roots, index_on_ray, index_paths

    check_roots(paths)  # before the collection is created: a mistyped folder writes nothing
    with open_collection(db, create=True) as coll:
        if search_index:
            coll.set_search_index(search_index)
        spec = encoder or coll.encoder_spec or "lite0"
        enc = load_encoder(spec, weights if weights else (coll.encoder_weights if spec == coll.encoder_spec else None))
        progress = ProgressLine("embedding on Ray" if ray_address else "indexing", enabled=not quiet and not as_json)
        if ray_address:
            report = index_on_ray(
                coll,
                list(paths),
                enc,
                address=ray_address,
                with_labels=with_labels,
                batch_size=batch_size,
                progress=progress,
                verify=verify,
            )
        else:
            getattr(enc, "model", None)  # a lazily loaded CNN loads now, outside the timed run
            report = index_paths(
                coll,
                list(paths),
                enc,
                with_labels=with_labels,
                batch_size=batch_size,
                progress=progress,
                decode_workers=decode_threads,
                verify=verify,
            )
        total = coll.count_live()
    if as_json:
        emit_json({"collection": str(coll.root), "images": total, **_report_dict(report)})
    else:
        click.echo(
            f"{report.added} added, {report.replaced} changed, "
            + (f"{report.moved} moved, " if report.moved else "")
            + f"{report.removed} removed, {report.unchanged + report.touched} unchanged, {len(report.skipped)} skipped"
            + (f" (+{report.skipped_known} known bad)" if report.skipped_known else "")
            + (
                f", {report.duplicates} duplicate path{'s' if report.duplicates != 1 else ''} skipped"
                if report.duplicates
                else ""
            )
            + f"; {total} images in {printable(coll.root)}"
            + (f"; {report.embedded} embedded at {report.rate:.1f} img/s" if report.embedded else "")
        )
        for path, reason in report.skipped[:20]:
            click.echo(f"  skipped {printable(path)}: {printable(reason)}", err=True)
        if len(report.skipped) > 20:
            click.echo(f"  ... and {len(report.skipped) - 20} more (localq skipped)", err=True)
    if report.interrupted:
        click.echo("interrupted: everything embedded so far is saved; run the same command to resume", err=True)
        sys.exit(130)


def _report_dict(report) -> dict:
    return {
        "scanned": report.scanned,
        "added": report.added,
        "changed": report.replaced,
        "moved": report.moved,
        "removed": report.removed,
        "unchanged": report.unchanged + report.touched,
        "duplicates": report.duplicates,
        "reused": report.reused,
        "embedded": report.embedded,
        "skipped": [{"path": p, "reason": r} for p, r in report.skipped],
        "skipped_known": report.skipped_known,
        "interrupted": report.interrupted,
        "seconds": round(report.seconds, 3),
        "images_per_second": round(report.rate, 2),
    }


@click.command()
@click.argument("text", required=False)
@click.option(
    "--image",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Search by an example image instead of text.",
)
@count_option("-k", default=10, show_default=True, help="Number of results.")
@click.option("--unseen", is_flag=True, help="Exclude images already seen (by --classifier, or by any classifier).")
@click.option("--classifier", metavar="NAME", help="With --unseen: whose seen flags to use.")
@db_option
@json_option
@friendly_errors
def search(text, image, k, unseen, classifier, db, as_json):
    """Top-k images by similarity to TEXT or to --image.

    \b
    Example:
      localq search "a photo of a church" -k 5
      localq search --image query.jpg --unseen --json
    """
    if bool(text) == bool(image):
        raise click.UsageError("give either TEXT or --image PATH")
    with open_collection(db) as coll:
        exclude = _seen_scope(coll, unseen, classifier)
        hits = coll.search_text(text, k, unseen=exclude) if text else coll.search_image(image, k, unseen=exclude)
    if as_json:
        emit_json(
            {
                "query": text or str(image),
                "k": k,
                "unseen": unseen,
                "results": [{"id": h.id, "score": round(h.score, 6), "path": h.path, "label": h.label} for h in hits],
            }
        )
        return
    for rank, h in enumerate(hits, 1):
        click.echo(f"{rank:3d}  {h.score:+.4f}  {printable(h.path)}" + (f"  [{printable(h.label)}]" if h.label else ""))


def _seen_scope(coll, unseen: bool, classifier: str | None):
    if not unseen:
        return False
    if classifier is None:
        return True
    return coll.classifier_id(classifier)


@click.command()
@db_option
@json_option
@friendly_errors
def stats(db, as_json):
    """Dimension, counts, model and sizes on disk of the collection.

    \b
    Example:
      localq stats --json
    """
    with open_collection(db) as coll:
        info = coll.stats()
    if as_json:
        emit_json(info)
        return
    click.echo(f"collection  {printable(info['path'])}")
    click.echo(f"model       {info['model_id']} ({info['encoder']}), dim {info['dim']}")
    click.echo(f"images      {info['images']} (seen {info['seen']}, skipped files {info['skipped']})")
    click.echo(f"classifiers {info['classifiers']}")
    click.echo(f"search      {info['search']} (setting {info['search_index']}; change with `localq index --index`)")
    click.echo(
        "on disk     "
        + ", ".join(f"{n} {_human(b)}" for n, b in info["bytes"].items())
        + f" (total {_human(info['bytes_total'])})"
    )


def _human(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


@click.command()
@click.option("--classifier", metavar="NAME", help="Reset only this classifier's seen flags (default: all).")
@db_option
@friendly_errors
def reset(classifier, db):
    """Clear seen flags, so that every image can be retrieved again.

    \b
    Example:
      localq reset --classifier dogs
    """
    with open_collection(db) as coll:
        n = coll.reset_seen(classifier)
    click.echo(f"cleared {n} seen flags" + (f" of {printable(classifier)}" if classifier else ""))


@click.command()
@db_option
@json_option
@friendly_errors
def skipped(db, as_json):
    """Files that could not be indexed, with the reason.

    \b
    Example:
      localq skipped
    """
    with open_collection(db) as coll:
        rows = coll.skipped()
    if as_json:
        emit_json({"skipped": [{"path": s.path, "reason": s.reason, "at": s.at} for s in rows]})
        return
    for s in rows:
        click.echo(f"{printable(s.path)}\t{printable(s.reason)}")
    click.echo(f"{len(rows)} skipped", err=True)


@click.command()
@db_option
@json_option
@friendly_errors
def check(db, as_json):
    """Check the collection's integrity; exit 1 if anything is wrong.

    Reads, never writes: SQLite's own integrity check, vectors.npy against SQLite (a row
    per image, finite unit vectors, the recorded digests), the IVF index file where there
    is one (from 2M images), and the classifiers' rounds, labels and seen flags.

    \b
    Example:
      localq check
    """
    with open_collection(db) as coll:
        report = coll.check()
    _print_integrity(report, as_json)
    if not report.ok:
        sys.exit(1)


@click.command()
@db_option
@json_option
@friendly_errors
def repair(db, as_json):
    """Fix what can be rebuilt from other data; never deletes labels or rounds.

    Rows of vectors.npy that no longer match their digests are embedded again from their
    image files; the IVF index file (from 2M images) is rebuilt from vectors.npy; round
    counters, seen flags of deleted images and temp files of killed runs are put right.

    \b
    Example:
      localq repair && localq check
    """
    with open_collection(db) as coll:
        report = coll.repair()
    _print_integrity(report, as_json)
    if not report.ok:
        sys.exit(1)


def _print_integrity(report, as_json: bool) -> None:
    if as_json:
        emit_json(
            {
                "ok": report.ok,
                "repaired": report.repaired,
                "findings": [{"ok": f.ok, "topic": f.topic, "detail": f.detail} for f in report.findings],
            }
        )
        return
    for line in report.repaired:
        click.echo(f"repaired  {line}")
    for f in report.findings:
        click.echo(f"{'ok' if f.ok else 'PROBLEM':<8}  {f.topic:<12} {f.detail}")
    click.echo("collection is consistent" if report.ok else "problems found (see above)", err=True)
