"""The `localq` command line: a thin driver of the core API.

Library code raises LocalqError; this module turns it into one line on stderr and exit
status 1. Heavy modules (torch, faiss, the encoders) are imported inside commands so
that `localq --help` starts at once.
"""

from __future__ import annotations

import functools
import json
import sys
from pathlib import Path

import click

from localq import __version__
from localq.display import printable
from localq.errors import LocalqError
from localq.names import check_name
from localq.names import slug as slug  # noqa: PLC0414  (kept importable from here)
from localq.progress import ProgressLine

JSON_SCHEMA_VERSION = 1  # bump when a --json field changes meaning or disappears


def db_option(f):
    return click.option(
        "--db", "db", metavar="DIR", envvar="LOCALQ_HOME", show_envvar=True,
        help="Collection directory (default: the user data dir, e.g. ~/.local/share/localq/default).",
    )(f)


def json_option(f):
    return click.option("--json", "as_json", is_flag=True, help="Machine-readable output (see README, 'JSON output').")(f)


def encoder_options(f):
    f = click.option("--weights", metavar="PATH", help="Local open_clip checkpoint for --encoder clip:ARCH.")(f)
    return click.option(
        "--encoder", metavar="SPEC",
        help="lite0 (built-in, default for a new collection) or clip:ARCH, e.g. clip:ViT-B-32 with --weights.",
    )(f)


def friendly_errors(f):
    """One line on stderr and exit 1 for every error localq raises on purpose."""

    @functools.wraps(f)
    def wrapper(*args, **kwargs):
        import sqlite3

        try:
            return f(*args, **kwargs)
        except LocalqError as exc:
            click.echo(f"error: {printable(exc)}", err=True)
            sys.exit(1)
        except sqlite3.Error as exc:  # damage found mid-command, after the database opened
            from localq.store import sqlite_failure

            click.echo(f"error: {sqlite_failure(_db_path(kwargs.get('db')), exc)}", err=True)
            sys.exit(1)

    return wrapper


class OneLineError(click.ClickException):
    """A click error shown as one `error:` line, like every error localq raises itself."""

    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code

    def show(self, file=None) -> None:
        click.echo(f"error: {printable(self.format_message())}", err=True)


class FiniteFloat(click.ParamType):
    """A float that is a number: 'nan' and 'inf' parse as floats but mean nothing as a threshold."""

    name = "number"

    def convert(self, value, param, ctx):
        import math

        try:
            number = float(value)
        except (TypeError, ValueError):
            self.fail(f"{printable(str(value))!r} is not a number", param, ctx)
        if not math.isfinite(number):
            self.fail(f"{printable(str(value))!r} is not a finite number", param, ctx)
        return number


class LocalqGroup(click.Group):
    """Turns click's multi-line usage errors (bad option values, missing arguments) into
    one line that names the help to read. Usage errors keep click's exit status 2."""

    def make_context(self, *args, **kwargs):
        try:
            return super().make_context(*args, **kwargs)
        except click.ClickException as exc:
            raise _one_line(exc) from None

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except click.ClickException as exc:
            raise _one_line(exc) from None


def _one_line(exc: click.ClickException) -> click.ClickException:
    if isinstance(exc, OneLineError):
        return exc
    message = exc.format_message()
    ctx = getattr(exc, "ctx", None)
    if isinstance(exc, click.UsageError) and ctx is not None:
        message += f" (see `{ctx.command_path} --help`)"
    return OneLineError(message, exc.exit_code)


def count_option(*decls, default=None, **kwargs):
    """An option holding a count: an integer of at least 1 (`-k -5` is an error, not an empty result)."""
    return click.option(*decls, type=click.IntRange(min=1), default=default, **kwargs)


def emit_json(payload: dict) -> None:
    click.echo(json.dumps({"version": JSON_SCHEMA_VERSION, **payload}, indent=2, default=str))


def open_collection(db, *, create: bool = False):
    from localq.collection import Collection

    return Collection.open(db, create=create, on_wait=lambda message: click.echo(message + " ...", err=True))


def _db_path(db) -> Path:
    from localq import paths

    return paths.collection_dir(db) / paths.DB_FILE


@click.group(cls=LocalqGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="localq")
def cli():
    """Train image classifiers by vector search, offline.

    \b
    Example:
      localq index ~/Pictures
      localq search "dogs in the snow" -k 5
    """


@cli.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@db_option
@encoder_options
@click.option("--labels", "with_labels", is_flag=True, help="Read class label and split from split/class/file folder names.")
@count_option("--batch-size", default=32, show_default=True, help="Images per encoder batch.")
@click.option("--decode-threads", default=1, show_default=True, type=click.IntRange(0, 8),
              help="Threads decoding the next batch while the model runs (0: decode in turn with it).")
@click.option("--ray", "ray_address", metavar="ADDRESS", help="Embed on Ray (auto, HOST:PORT or local), then ingest (see `localq embed`).")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@json_option
@friendly_errors
def index(paths, db, encoder, weights, with_labels, batch_size, decode_threads, ray_address, quiet, as_json):
    """Embed every image under PATHS into the collection.

    Re-running embeds only new or changed files and drops deleted ones; an interrupted
    run resumes where it stopped. Unreadable and corrupt files are skipped and recorded
    (see `localq skipped`).

    \b
    Example:
      localq index ../shared/datasets/imagenette/val --labels
    """
    from localq.encoders import load_encoder
    from localq.indexer import index_paths

    with open_collection(db, create=True) as coll:
        spec = encoder or coll.encoder_spec or "lite0"
        enc = load_encoder(spec, weights if weights else (coll.encoder_weights if spec == coll.encoder_spec else None))
        if ray_address:
            from localq.ingest import index_on_ray

            reports = index_on_ray(coll, list(paths), enc, with_labels=with_labels, address=ray_address, batch_size=batch_size,
                                   progress=ProgressLine("embedding", enabled=not quiet and not as_json))
            total = reports[-1].images
            added, replaced = sum(r.added for r in reports), sum(r.replaced for r in reports)
            skipped = [s for r in reports for s in r.skipped]
            if as_json:
                emit_json({"collection": str(coll.root), "images": total, "added": added, "changed": replaced,
                           "skipped": [{"path": p, "reason": r} for p, r in skipped]})
            else:
                click.echo(f"{added} added, {replaced} changed, {len(skipped)} skipped (on Ray); {total} images in {printable(coll.root)}")
            return
        getattr(enc, "model", None)  # a lazily loaded CNN loads now, outside the timed run (as before)
        progress = ProgressLine("indexing", enabled=not quiet and not as_json)
        report = index_paths(coll, list(paths), enc, with_labels=with_labels, batch_size=batch_size, progress=progress,
                             decode_workers=decode_threads)
        total = coll.count_live()
    if as_json:
        emit_json({"collection": str(coll.root), "images": total, **_report_dict(report)})
    else:
        click.echo(
            f"{report.added} added, {report.replaced} changed, {report.removed} removed, "
            f"{report.unchanged + report.touched} unchanged, {len(report.skipped)} skipped"
            + (f" (+{report.skipped_known} known bad)" if report.skipped_known else "")
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
        "scanned": report.scanned, "added": report.added, "changed": report.replaced,
        "removed": report.removed, "unchanged": report.unchanged + report.touched,
        "reused": report.reused, "embedded": report.embedded,
        "skipped": [{"path": p, "reason": r} for p, r in report.skipped],
        "skipped_known": report.skipped_known, "interrupted": report.interrupted,
        "seconds": round(report.seconds, 3), "images_per_second": round(report.rate, 2),
    }


@cli.command()
@click.argument("text", required=False)
@click.option("--image", type=click.Path(exists=True, dir_okay=False, path_type=Path), help="Search by an example image instead of text.")
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
        emit_json({"query": text or str(image), "k": k, "unseen": unseen,
                   "results": [{"id": h.id, "score": round(h.score, 6), "path": h.path, "label": h.label} for h in hits]})
        return
    for rank, h in enumerate(hits, 1):
        click.echo(f"{rank:3d}  {h.score:+.4f}  {printable(h.path)}" + (f"  [{printable(h.label)}]" if h.label else ""))


def _seen_scope(coll, unseen: bool, classifier: str | None):
    if not unseen:
        return False
    if classifier is None:
        return True
    return coll.classifier_id(classifier)


@cli.command()
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
    click.echo("on disk     " + ", ".join(f"{n} {_human(b)}" for n, b in info["bytes"].items()) + f" (total {_human(info['bytes_total'])})")


def _human(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


@cli.command()
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


@cli.command()
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


def _open_trainer(coll, name: str):
    from localq.trainer import Trainer

    return Trainer.open(coll, name)


@cli.command()
@click.argument("prompt", required=False)
@click.option("--image", "images", multiple=True, metavar="PATH|ID", help="Start from example image(s): a file or a collection id.")
@click.option("--classifier", "from_classifier", metavar="NAME", help="Continue an existing classifier.")
@click.option("--from-file", type=click.Path(exists=True, dir_okay=False, path_type=Path), help="Start from a classifier file (.safetensors, .npy, torch .pt).")
@click.option("--name", metavar="NAME", help="Name of a new classifier (default: from the prompt).")
@count_option("-k", help="Images per batch (default 10).")
@click.option("--strategy", type=click.Choice(["auto", "top", "boundary", "diverse", "random"]), help="How each batch is chosen.")
@click.option("--thumbnails", type=click.Choice(["auto", "halfblock", "sixel", "kitty"]), default="auto", show_default=True,
              envvar="LOCALQ_THUMBNAILS", help="Image protocol; auto: kitty or sixel where the terminal draws them, else halfblock (always works).")
@click.option("--example", "examples", multiple=True, metavar="PATH|ID",
              help="Label this image +1 (a file is indexed into the collection) before the UI opens; a round each.")
@db_option
@friendly_errors
def train(prompt, images, from_classifier, from_file, name, k, strategy, thumbnails, examples, db):
    """Open the labeling UI: retrieve, score, fit, repeat.

    \b
    Example:
      localq train "a photo of a dog"
      localq train --classifier a-photo-of-a-dog --example ~/Pictures/my-dog.jpg
    """
    _import_ui_meanwhile()
    trainer = _start_or_open(db, prompt, images, from_classifier, from_file, name, k, strategy)
    for item in examples:  # a person breaking a cold start, as the UI's "a" key does
        row = trainer.add_example(item)
        click.echo(f"added {item} as a positive example (round {row.round})", err=True)
    from localq.background import BackgroundIndexer, pending
    from localq.tui.app import run_train

    coll = trainer.collection
    unfinished = pending(coll)  # a demo quit mid-way: resume its indexing behind the UI
    background = None
    if unfinished:
        background = BackgroundIndexer(coll.root, unfinished["roots"], coll.encoder(),
                                       with_labels=bool(unfinished.get("with_labels"))).start()
    try:
        run_train(coll, trainer, k=k, strategy=strategy, thumbnails=thumbnails, background=background)
    finally:
        if background is not None:
            background.stop()


def _import_ui_meanwhile() -> None:
    """Import Textual (~1 s) on a thread while the collection opens and the prompt is encoded."""
    import threading

    def load():
        try:
            import localq.tui.app  # noqa: F401
        except Exception:  # the real import below reports it
            pass

    threading.Thread(target=load, name="localq-import-ui", daemon=True).start()


def _start_or_open(db, prompt, images, from_classifier, from_file, name, k, strategy):
    from localq.trainer import Settings, Trainer

    if sum(bool(x) for x in (prompt, images, from_classifier, from_file)) != 1:
        raise click.UsageError("give one of PROMPT, --image, --classifier or --from-file")
    coll = open_collection(db)
    if from_classifier:
        trainer = Trainer.open(coll, from_classifier)
    else:
        # An explicit --name must be valid as given ('' too); only a missing one is derived.
        name = check_name(name) if name is not None else slug(prompt or (Path(from_file).stem if from_file else "examples"))
        if coll.has_classifier(name):
            trainer = Trainer.open(coll, name)
            click.echo(f"continuing classifier {printable(name)!r} (round {trainer.round})", err=True)
        else:
            settings = Settings(**{key: v for key, v in (("k", k), ("strategy", strategy)) if v})
            trainer = Trainer.create(coll, name, prompt=prompt, images=images, weights_file=from_file, settings=settings)
    if k or strategy:
        trainer.update_settings(**{key: v for key, v in (("k", k), ("strategy", strategy)) if v})
    return trainer


@cli.command()
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

    from localq.trainer import Trainer

    with open_collection(db) as coll:
        rows = [asdict(state) for state in Trainer.states(coll)]
    if as_json:
        emit_json({"classifiers": rows})
        return
    for r in rows:
        ap = f"  AP {r['ap']:.3f} ({r['target']})" if r["ap"] is not None else ""
        click.echo(f"{printable(r['name']):<28} round {r['round']:>3}  +{r['labels_positive']}/-{r['labels_negative']}  "
                   f"{r['strategy']:<8} {r['source']}: {printable(r['prompt'])}{ap}")
    if not rows:
        click.echo("no classifiers yet: start one with `localq train \"a prompt\"`", err=True)


@cli.command()
@click.argument("classifier")
@click.argument("paths", nargs=-1, type=click.Path(exists=True, path_type=Path))
@click.option("--threshold", type=FiniteFloat(), default=0.0, show_default=True, help="Predict positive above this score (w·x + b).")
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
    from localq.imageio import is_image_path

    files = []
    for p in paths:
        files += [str(f) for f in sorted(p.rglob("*")) if is_image_path(f)] if p.is_dir() else [str(p)]
    with open_collection(db) as coll:
        trainer = _open_trainer(coll, classifier)
        if files:  # one undecodable file is left out with a note, never fatal to the others
            preds, bad = trainer.predict_files(files, threshold)
            preds = preds[:limit] if limit else preds
        else:
            preds, bad = trainer.predict(threshold=threshold, split=split, limit=limit), []
    for path, reason in bad:
        click.echo(f"skipped {printable(path)}: {printable(reason)}", err=True)
    if as_json:
        emit_json({"classifier": classifier, "threshold": threshold,
                   "predictions": [{"id": p.id, "path": p.path, "score": round(p.score, 6), "label": p.label} for p in preds]})
    elif as_csv:
        import csv

        writer = csv.writer(sys.stdout)
        writer.writerow(["path", "score", "label"])
        # Escaped like every printed path (a terminal or a pipe); --json carries names losslessly.
        writer.writerows([(printable(p.path), f"{p.score:.6f}", printable(p.label or "")) for p in preds])
    else:
        for p in preds:
            click.echo(f"{p.score:+.4f}  {printable(p.path)}" + (f"  [{printable(p.label)}]" if p.label else ""))
        click.echo(f"{len(preds)} positive above {threshold}", err=True)


@cli.command()
@click.argument("classifier")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), help="Directory (default: ./CLASSIFIER-export).")
@click.option("--format", "fmt", type=click.Choice(["safetensors", "npy"]), default="safetensors", show_default=True)
@db_option
@friendly_errors
def export(classifier, out_dir, fmt, db):
    """Write the classifier file and its labels (CSV and JSONL, with paths and scores).

    \b
    Example:
      localq export a-photo-of-a-dog --out exports/
    """
    from localq.export import export_classifier

    check_name(classifier)  # before it becomes the default folder name
    with open_collection(db) as coll:
        trainer = _open_trainer(coll, classifier)
        written = export_classifier(trainer, out_dir or Path(f"{classifier}-export"), fmt=fmt)
    for path in written:
        click.echo(printable(path))


@cli.command()
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
        rows = [{"round": r.round, "labels": r.n_labels, "strategy": r.strategy, "at": r.created_at,
                 "ap": _ap(trainer.evaluate_weights(r.weights, r.bias, split=split))} for r in trainer.history()]
    if as_json:
        emit_json({"classifier": classifier, "rounds": rows})
        return
    for r in rows:
        ap = f"  AP {r['ap']:.3f}" if r["ap"] is not None else ""
        click.echo(f"round {r['round']:>3}  {r['labels']:>4} labels  {r['strategy'] or '-':<8} {r['at']}{ap}")


def _ap(evaluation) -> float | None:
    return round(evaluation.ap, 4) if evaluation else None


@cli.command()
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


@cli.command()
@db_option
@json_option
@friendly_errors
def check(db, as_json):
    """Check the collection: SQLite integrity, every FAISS row against SQLite, vector
    norms, classifiers' rounds, labels and seen flags. Exit 1 if anything is wrong.

    \b
    Example:
      localq check
    """
    from localq.integrity import check as run_check

    with open_collection(db) as coll:
        report = run_check(coll)
    _print_integrity(report, as_json)
    if not report.ok:
        sys.exit(1)


@cli.command()
@db_option
@json_option
@friendly_errors
def repair(db, as_json):
    """Rebuild what is derived from the database (the FAISS file, the vector digests,
    round counters, orphan seen flags, temp files). Never deletes labels or rounds.

    \b
    Example:
      localq repair && localq check
    """
    from localq.integrity import repair as run_repair

    with open_collection(db) as coll:
        report = run_repair(coll)
    _print_integrity(report, as_json)
    if not report.ok:
        sys.exit(1)


def _print_integrity(report, as_json: bool) -> None:
    if as_json:
        emit_json({"ok": report.ok, "repaired": report.repaired,
                   "findings": [{"ok": f.ok, "topic": f.topic, "detail": f.detail} for f in report.findings]})
        return
    for line in report.repaired:
        click.echo(f"repaired  {line}")
    for f in report.findings:
        click.echo(f"{'ok' if f.ok else 'PROBLEM':<8}  {f.topic:<12} {f.detail}")
    click.echo("collection is consistent" if report.ok else "problems found (see above)", err=True)


def find_demo_data() -> Path | None:
    """Imagenette in ./data, in ../shared/datasets, or beside a source checkout."""
    checkout = Path(__file__).resolve().parents[1]
    for base in (Path.cwd() / "data", Path.cwd().parent / "shared" / "datasets",
                 checkout / "data", checkout.parent / "shared" / "datasets"):
        if (base / "imagenette").is_dir():
            return base / "imagenette"
    return None


@cli.command()
@click.argument("folder", required=False, type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--prompt", default="a photo of a dog", show_default=True, help="Text the first batch is retrieved by.")
@click.option("--index-only", is_flag=True, help="Build the demo collection and stop (no UI).")
@click.option("--db", "db", metavar="DIR", help="Collection directory (default: <user data dir>/demo).")
@friendly_errors
def demo(folder, prompt, index_only, db):
    """Open the labeling UI on Imagenette (or FOLDER) at once, indexing it behind the UI.

    Imagenette is looked for in ./data/imagenette and ../shared/datasets/imagenette.
    Indexing starts with a sample spread over every folder; quitting mid-way keeps
    what is indexed, and the next demo (or `localq train`) resumes it.

    \b
    Example:
      localq demo
      localq demo ~/Pictures --prompt "a photo of a beach"
    """
    from localq import paths
    from localq.background import BackgroundIndexer
    from localq.encoders import load_encoder
    from localq.indexer import index_paths

    source = folder or find_demo_data()
    if source is None:
        raise click.ClickException(
            "no demo data: put Imagenette in ./data/imagenette (see data/README.md) or name a folder: localq demo FOLDER"
        )
    db = db or paths.user_data_dir() / "demo"
    with open_collection(db, create=True) as coll:
        enc = load_encoder(coll.encoder_spec or "lite0", coll.encoder_weights)
        if index_only:
            click.echo(f"indexing {printable(source)} into {printable(coll.root)} (only new files are embedded)", err=True)
            report = index_paths(coll, [source], enc, with_labels=folder is None, progress=ProgressLine("indexing", True))
            if report.interrupted:
                click.echo("interrupted: run `localq demo` again to resume", err=True)
                sys.exit(130)
            click.echo(f"{coll.count_live()} images, {len(report.skipped)} skipped", err=True)
            return
        coll.bind_encoder(enc)  # a new collection knows its vector space before the first image lands
    # The UI opens at once; new files are indexed behind it (spread over the folders first).
    _import_ui_meanwhile()
    background = BackgroundIndexer(db, [source], enc, with_labels=folder is None).start()
    try:
        trainer = _start_or_open(db, prompt, (), None, None, None, None, None)
        from localq.tui.app import run_train

        run_train(trainer.collection, trainer, k=None, strategy=None, thumbnails="auto", background=background)
    finally:
        background.stop()


from localq.bench.command import bench as _bench_command  # noqa: E402  (click-only import)

cli.add_command(_bench_command)

from localq.cli_scale import embed as _embed_command, ingest as _ingest_command  # noqa: E402

cli.add_command(_embed_command)
cli.add_command(_ingest_command)


def main() -> None:
    cli(prog_name="localq")
