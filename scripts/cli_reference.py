"""Write docs/cli.md: every `localq` command's --help, as a person sees it.

    python scripts/cli_reference.py            # rewrites docs/cli.md

tests/test_docs.py fails when a command or option is missing from the docs; rerunning
this after changing the CLI is the quickest way to document it."""

from __future__ import annotations

from pathlib import Path

import click

from localq.cli import cli

ROOT = Path(__file__).resolve().parents[1]


def reference() -> str:
    out = [
        "# Command reference",
        "",
        "Every `localq` command's `--help`, written by `python scripts/cli_reference.py`.",
        "The README shows the loop; this page lists every option.",
        "",
    ]
    with click.Context(cli, info_name="localq", terminal_width=100) as ctx:
        out += ["## localq", "", "```", cli.get_help(ctx), "```", ""]
        for name in sorted(cli.commands):
            command = cli.commands[name]
            with click.Context(command, info_name=name, parent=ctx, terminal_width=100) as sub:
                out += [f"## localq {name}", "", "```", command.get_help(sub), "```", ""]
    return "\n".join(out)


if __name__ == "__main__":
    (ROOT / "docs" / "cli.md").write_text(reference())
    print(f"wrote {ROOT / 'docs' / 'cli.md'}")
