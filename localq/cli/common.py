"""What every `localq` command shares: the --db, --json and --encoder options, the error
wrapper that turns a LocalqError into one line on stderr and exit status 1, and the JSON
envelope. Library code never prints; this is where its errors meet the terminal.
"""

from __future__ import annotations

import functools
import json
import os
import sys
from pathlib import Path

import click

from localq.display import printable
from localq.errors import LocalqError, first_line

JSON_SCHEMA_VERSION = 1  # bump when a --json field changes meaning or disappears


def _with_help(make):
    """Lets an option decorator be used bare (``@db_option``) or with its own help text
    (``@db_option(help=...)``), so every command spells the option the same way."""

    def decorator(f=None, *, help: str | None = None):
        if f is None:
            return lambda g: make(g, help)
        return make(f, help)

    return decorator


@_with_help
def db_option(f, help=None):
    return click.option(
        "--db",
        "db",
        metavar="DIR",
        envvar="LOCALQ_HOME",
        show_envvar=True,
        help=help or "Collection directory (default: the user data dir, e.g. ~/.local/share/localq/default).",
    )(f)


@_with_help
def json_option(f, help=None):
    return click.option(
        "--json", "as_json", is_flag=True, help=help or "Machine-readable output (see docs/formats.md)."
    )(f)


@_with_help
def encoder_options(f, help=None):
    f = click.option("--weights", metavar="PATH", help="Local open_clip checkpoint for --encoder clip:ARCH.")(f)
    return click.option(
        "--encoder",
        metavar="SPEC",
        help=help or "lite0 (built-in, default for a new collection) or clip:ARCH, e.g. clip:ViT-B-32 with --weights.",
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
            from localq.storage.store import sqlite_failure

            click.echo(f"error: {sqlite_failure(_db_path(kwargs.get('db')), exc)}", err=True)
            sys.exit(1)
        except OSError as exc:  # a write that found no space or no working disk, wherever it was
            from localq.os_errors import write_failure

            named = exc.filename if isinstance(exc.filename, (str, bytes, os.PathLike)) else None
            failure = write_failure(exc, named or _db_path(kwargs.get("db")).parent)
            if failure is None:  # another refusal (permissions, a name too long): one line all the same
                where = f": {os.fsdecode(exc.filename)}" if named else ""
                failure = f"{exc.strerror or first_line(exc)}{where}"
            click.echo(f"error: {printable(failure)}", err=True)
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

    def format_commands(self, ctx, formatter) -> None:
        """Each command with its whole first sentence, wrapped: click's default cuts it to
        the terminal's width with "...", mid-phrase."""
        rows = []
        for name in self.list_commands(ctx):
            command = self.get_command(ctx, name)
            if command is not None and not command.hidden:
                rows.append((name, command.get_short_help_str(limit=1_000)))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


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


# upkeep.KINDS, spelled out so that `localq --help` does not import NumPy and SQLite
# (tests/search/test_ivf_collection.py checks that the two agree).
SEARCH_INDEX_KINDS = ("auto", "exact", "ivf")


def search_index_option(f):
    return click.option(
        "--index",
        "search_index",
        type=click.Choice(SEARCH_INDEX_KINDS),
        help="Search index, kept for later runs: auto (default: exact, IVF from 2M images), exact, or ivf.",
    )(f)


def emit_json(payload: dict) -> None:
    click.echo(json.dumps({"version": JSON_SCHEMA_VERSION, **payload}, indent=2, default=str))


def open_collection(db, *, create: bool = False):
    from localq.collection.collection import Collection
    from localq.errors import CollectionNotFound

    try:
        return Collection.open(db, create=create, on_wait=lambda message: click.echo(message + " ...", err=True))
    except CollectionNotFound:
        hint = _other_collections(db)
        if hint is None:
            raise
        raise CollectionNotFound(hint) from None


def _other_collections(db) -> str | None:
    """The error for a missing collection when others exist (the demo's, another --db):
    which, how many images each holds, and the --db that opens the first."""
    from localq.collection.stats import images_at
    from localq.storage import paths

    root = paths.collection_dir(db)
    others = paths.collections_near(root)
    if not others:
        return None
    described = []
    for other in others:
        n = images_at(other)  # read-only: naming a neighbour never migrates or locks it
        count = "" if n is None else f" ({n:,} images)"  # a damaged or busy neighbour is still worth naming
        # A neighbour by its name; one elsewhere (the user data dir) by its path.
        shown = other.name if other.parent == root.absolute().parent else str(other)
        described.append(f"{printable(shown)}{count}")
    return (
        f"no collection at {printable(root)}; collections here: {', '.join(described)}; "
        f"use --db {printable(others[0])} (or `localq index PATH` to start one at {printable(root)})"
    )


def _db_path(db) -> Path:
    from localq.storage import paths

    try:
        return paths.collection_dir(db) / paths.DB_FILE
    except LocalqError:  # an unusable --db: name the current folder rather than fail again
        return Path.cwd() / paths.DB_FILE
