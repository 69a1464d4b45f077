"""The `localq` command line: a thin driver of the core API.

Library code raises LocalqError; common.friendly_errors turns it into one line on stderr
and exit status 1. Heavy modules (torch, faiss, textual, the encoders) are imported
inside commands, so that `localq --help` starts at once. Each module here holds one
family of commands; this one assembles the group.
"""

from __future__ import annotations

import click

from localq import __version__
from localq.cli import bench, classifier_commands, collection_commands, demo, scale, tag_commands
from localq.cli.common import LocalqGroup


@click.group(cls=LocalqGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="localq")
def cli():
    """Train image classifiers by vector search, offline.

    \b
    Example:
      localq index ~/Pictures
      localq search "dogs in the snow" -k 5
    """


for command in (
    collection_commands.index,
    collection_commands.search,
    collection_commands.stats,
    collection_commands.reset,
    collection_commands.skipped,
    collection_commands.check,
    collection_commands.repair,
    classifier_commands.train,
    classifier_commands.classifiers,
    classifier_commands.predict,
    classifier_commands.export,
    classifier_commands.history,
    classifier_commands.undo,
    tag_commands.tag,
    demo.demo,
    bench.bench,
    scale.embed,
    scale.ingest,
):
    cli.add_command(command)


def main() -> None:
    cli(prog_name="localq")
