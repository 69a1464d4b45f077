"""`localq demo`: the labeling UI on Imagenette (or a folder) at once, indexed behind it."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from localq.cli.classifier_commands import import_ui_meanwhile, start_from_options
from localq.cli.common import friendly_errors, open_collection
from localq.cli.progress import ProgressLine
from localq.display import printable


def find_demo_data() -> Path | None:
    """Imagenette in ./data, in ../shared/datasets, or beside a source checkout."""
    checkout = Path(__file__).resolve().parents[2]
    for base in (
        Path.cwd() / "data",
        Path.cwd().parent / "shared" / "datasets",
        checkout / "data",
        checkout.parent / "shared" / "datasets",
    ):
        if (base / "imagenette").is_dir():
            return base / "imagenette"
    return None


@click.command()
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
    from localq.encoders import load_encoder
    from localq.ingest.background import BackgroundIndexer
    from localq.ingest.indexer import index_paths
    from localq.storage import paths

    source = folder or find_demo_data()
    if source is None:
        raise click.ClickException(
            "no demo data: put Imagenette in ./data/imagenette (see data/README.md) or name a folder: localq demo FOLDER"
        )
    db = db or paths.user_data_dir() / "demo"
    with open_collection(db, create=True) as coll:
        enc = load_encoder(coll.encoder_spec or "lite0", coll.encoder_weights)
        if index_only:
            click.echo(
                f"indexing {printable(source)} into {printable(coll.root)} (only new files are embedded)", err=True
            )
            report = index_paths(
                coll, [source], enc, with_labels=folder is None, progress=ProgressLine("indexing", True)
            )
            if report.interrupted:
                click.echo("interrupted: run `localq demo` again to resume", err=True)
                sys.exit(130)
            click.echo(f"{coll.count_live()} images, {len(report.skipped)} skipped", err=True)
            return
        coll.bind_encoder(enc)  # a new collection knows its vector space before the first image lands
    # The UI opens at once; new files are indexed behind it (spread over the folders first).
    import_ui_meanwhile()
    background = BackgroundIndexer(db, [source], enc, with_labels=folder is None).start()
    try:
        trainer = start_from_options(db, prompt, (), None, None, None, None, None)
        from localq.tui.app import run_train

        run_train(trainer.collection, trainer, k=None, strategy=None, thumbnails="auto", background=background)
    finally:
        background.stop()
