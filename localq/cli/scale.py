"""`localq embed` and `localq ingest`: the CLI side of scaling out (localq.ingest.embed,
localq.ingest.shard_ingest)."""

from __future__ import annotations

from pathlib import Path

import click

from localq.cli.common import (
    db_option,
    emit_json,
    encoder_options,
    friendly_errors,
    json_option,
    open_collection,
    search_index_option,
)
from localq.cli.progress import ProgressLine


@click.command()
@click.argument("source", type=click.Path(path_type=Path))
@click.option(
    "--out",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Shard directory to write (img_emb/, metadata/, manifest.json).",
)
@click.option(
    "--ray",
    "ray_address",
    metavar="ADDRESS",
    help="Run on Ray: auto (a cluster started with `ray start`), HOST:PORT, or local (start one here).",
)
@encoder_options
@click.option("--shard-size", default=10_000, show_default=True, help="Images per shard.")
@click.option(
    "--dtype",
    type=click.Choice(["float16", "float32"]),
    default="float16",
    show_default=True,
    help="Stored vector type.",
)
@click.option("--workers", type=int, help="With --ray: encoder actors (default: one per cluster CPU).")
@click.option("--batch-size", default=32, show_default=True, help="Images per encoder batch.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@json_option
@friendly_errors
def embed(source, out, ray_address, encoder, weights, shard_size, dtype, workers, batch_size, quiet, as_json):
    """Embed the images under SOURCE (a folder, or a .parquet/.csv list with an
    image_path column) into shards in clip-retrieval's layout.

    Without --ray it runs in this process through the same code. Re-running the same
    command writes only the shards that are missing. Undecodable files are kept as
    rows with a skip reason.

    \b
    Example:
      localq embed ~/Pictures --out /shared/pictures-shards --ray auto
      localq ingest /shared/pictures-shards --db ~/collections/pictures
    """
    from localq.ingest.embed import embed_to_shards

    progress = ProgressLine("embedding", enabled=not quiet and not as_json)
    report = embed_to_shards(
        source,
        out,
        encoder_spec=encoder or "lite0",
        weights=weights,
        shard_size=shard_size,
        dtype=dtype,
        ray_address=ray_address,
        workers=workers,
        batch_size=batch_size,
        progress=progress,
    )
    if as_json:
        emit_json(
            {k: v for k, v in vars(report).items() if k != "skipped"}
            | {"skipped": [{"path": p, "reason": r} for p, r in report.skipped]}
        )
        return
    click.echo(
        f"{report.shards_written} shards written, {report.shards_existing} already there "
        f"({report.shards_total} in all, {report.images} images) in {report.out}; "
        f"{report.embedded} embedded at {report.rate:.1f} img/s ({report.engine}); {len(report.skipped)} skipped"
    )


@click.command()
@click.argument("shards_dir", metavar="SHARDS", type=click.Path(path_type=Path))
@db_option
@encoder_options
@click.option(
    "--labels", "with_labels", is_flag=True, help="Take class label and split from the shards' label/split columns."
)
@search_index_option
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@json_option
@friendly_errors
def ingest(shards_dir, db, encoder, weights, with_labels, search_index, quiet, as_json):
    """Make or extend a collection from embedding shards (img_emb/img_emb_N.npy with
    metadata/metadata_N.parquet), written by `localq embed`, clip-retrieval or any job
    using that layout. Re-running adds only shards not ingested yet.

    Shards without a localq manifest need --encoder (and --weights) naming the model
    that made them, so that text prompts embed in the same space.

    \b
    Example:
      localq ingest /shared/laion-subset/embeddings --db ~/collections/laion --encoder clip:ViT-B-32 --weights ~/models/vit-b-32.bin
    """
    from localq.ingest.shard_ingest import ingest_shards

    enc = None
    if encoder:
        from localq.encoders import load_encoder

        enc = load_encoder(encoder, weights)
    with open_collection(db, create=True) as coll:
        if search_index:
            coll.set_search_index(search_index)
        progress = ProgressLine("ingesting shards", enabled=not quiet and not as_json, unit="shard")
        report = ingest_shards(coll, shards_dir, enc, with_labels=with_labels, progress=progress)
    total = report.images
    if as_json:
        emit_json(
            {
                "collection": str(coll.root),
                **{k: v for k, v in vars(report).items() if k != "skipped"},
                "skipped": [{"path": p, "reason": r} for p, r in report.skipped],
            }
        )
        return
    click.echo(
        f"{report.shards_ingested} shards ingested, {report.shards_already} already in; "
        f"{report.added} added, {report.replaced} changed, {report.present} already present, "
        f"{len(report.skipped)} skipped; {total} images in {coll.root}"
    )
