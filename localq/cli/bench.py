"""`localq bench`: the click command driving the ``localq.bench`` library. Only click is
imported at module level, so that registering it keeps `localq --help` instant."""

from __future__ import annotations

import shlex
import sys
import time
from pathlib import Path

import click

from localq.cli.common import db_option, encoder_options, friendly_errors, json_option
from localq.cli.progress import ProgressLine


def _int_list(_ctx, _param, value: str | None) -> tuple[int, ...]:
    if not value:
        return ()
    try:
        return tuple(int(v) for v in value.split(","))
    except ValueError:
        raise click.BadParameter("give comma-separated integers, e.g. 10,20,50,100") from None


def _str_list(_ctx, _param, value: str | None) -> tuple[str, ...]:
    return tuple(v.strip() for v in value.split(",") if v.strip()) if value else ()


def _command_line(ctx: click.Context) -> str:
    """The command as typed, from the parameters given on the command line (for the report)."""
    from click.core import ParameterSource

    words = ctx.command_path.split()
    for param in ctx.command.params:
        if ctx.get_parameter_source(param.name) != ParameterSource.COMMANDLINE:
            continue
        value = ctx.params[param.name]
        if isinstance(param, click.Argument):
            words.append(str(value))
        elif param.is_flag:
            words.append(param.opts[0])
        elif getattr(param, "multiple", False):
            for item in value:
                words += [param.opts[0], str(item)]
        else:
            raw = ",".join(map(str, value)) if isinstance(value, tuple) else str(value)
            words += [param.opts[0], raw]
    return shlex.join(words)


@click.command("bench")
@click.argument("source", required=False, type=click.Path(path_type=Path))
@db_option(help="Collection to benchmark (with SOURCE: where to index it; default ~/.local/share/localq/bench/NAME).")
@encoder_options(help="With SOURCE: lite0 (built-in) or clip:ARCH with --weights.")
@click.option("--rounds", type=click.IntRange(min=1), default=10, show_default=True, help="Labeling rounds per run.")
@click.option("-k", "k", type=click.IntRange(min=1), default=10, show_default=True, help="Labels per round.")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True, help="First seed.")
@click.option(
    "--repeats",
    type=click.IntRange(min=1),
    default=5,
    show_default=True,
    help="Seeds seed, seed+1, ...: results are mean ± sd over them.",
)
@click.option(
    "--methods",
    callback=_str_list,
    metavar="LIST",
    help="Comma-separated subset of: zero-shot, article, localq-<strategy>, random, full (default: all).",
)
@click.option("--classes", callback=_str_list, metavar="LIST", help="Comma-separated class labels (default: all).")
@click.option("--pool-split", default="train", show_default=True, help="Split the labeler draws from.")
@click.option("--eval-split", metavar="SPLIT", help="Held-out split for AP (default: val, validation or test).")
@click.option(
    "--prompt",
    default="a photo of a {class}",
    show_default=True,
    help='Start prompt; {class} is the class name (a prompt without it, e.g. "a photo", is the same vague start for every class).',
)
@click.option(
    "--prompt-from",
    type=click.Choice(["own", "other-class"]),
    default="own",
    show_default=True,
    help="other-class: each class starts from another class's prompt (a mismatched, cold start).",
)
@click.option(
    "--tune",
    is_flag=True,
    help="Tuning protocol: retrieve from the pool minus its dev part, measure AP on dev; the held-out split is never read.",
)
@click.option(
    "--set",
    "overrides",
    multiple=True,
    metavar="KEY=VALUE",
    help="Override a trainer setting for every loop (e.g. top_share=0.5); repeatable. For --tune runs.",
)
@click.option(
    "--class-names",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="JSON {label: name} for the prompts (WordNet synsets are named automatically).",
)
@click.option(
    "--graded",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="JSON {target: {related class: score}}: graded labeler (default: +1 target, -1 others).",
)
@click.option(
    "--budgets",
    default="10,20,50,100",
    show_default=True,
    callback=_int_list,
    help="Label budgets shown as summary-table columns.",
)
@click.option("--name", help="Data set name in the report (default: SOURCE's or the collection's folder name).")
@click.option("--out", type=click.Path(path_type=Path), help="Report folder (default: DB/bench/NAME).")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@json_option(help="Print the summary as JSON instead of markdown.")
@click.pass_context
@friendly_errors
def bench(ctx, overrides, **options):
    """Label-efficiency benchmark: a simulated labeler drives the training loop.

    Each class of a labeled collection is the target in turn, starting from PROMPT;
    the labeler scores each retrieved batch from the folder labels (+1 target, -1
    others). Methods are compared at equal label budgets by the AP on the held-out
    split. SOURCE (a split/class/file folder or a Hugging Face parquet export) is
    indexed first; embeddings are cached in the collection, so a rerun costs only the loop.

    \b
    Example:
      localq bench ../shared/datasets/imagenette --db data/collections/imagenette
      localq bench --db data/collections/cifar10 --methods localq-top,random --repeats 3
      localq bench --db data/collections/cifar10 --prompt-from other-class
      localq bench --db data/collections/cifar10 --tune --set top_share=0.5 --classes cat,dog
    """
    _run(ctx, overrides=_parse_overrides(overrides), **options)


def _parse_overrides(items: tuple[str, ...]) -> dict:
    """KEY=VALUE pairs; values parsed as JSON where they parse (numbers, true/false), else text."""
    import json

    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise click.BadParameter(f"expected KEY=VALUE, got {item!r}", param_hint="--set")
        try:
            out[key.strip()] = json.loads(value)
        except ValueError:
            out[key.strip()] = value
    return out


def _run(
    ctx,
    *,
    source,
    db,
    encoder,
    weights,
    rounds,
    k,
    seed,
    repeats,
    methods,
    classes,
    pool_split,
    eval_split,
    prompt,
    prompt_from,
    tune,
    overrides,
    class_names,
    graded,
    budgets,
    name,
    out,
    quiet,
    as_json,
):
    import json

    from localq.bench.datasets import index_source, load_class_names
    from localq.bench.labeler import load_mapping
    from localq.bench.report import summarize, write_reports
    from localq.bench.runner import BenchConfig, resolve_methods, run_benchmark
    from localq.collection.collection import Collection
    from localq.storage import paths

    if rounds < 1 or k < 1 or repeats < 1:
        raise click.BadParameter("--rounds, -k and --repeats must be at least 1")
    resolve_methods(methods)  # fail on a typo before any indexing
    if not prompt.strip():
        raise click.BadParameter("the prompt is empty", param_hint="--prompt")
    name = name or (source.resolve().name if source else None)
    if source and not db:
        db = paths.user_data_dir() / "bench" / name
    coll = Collection.open(db, create=source is not None)
    with coll:
        name = name or coll.root.resolve().name
        if source is not None:
            from localq.encoders import load_encoder

            spec = encoder or coll.encoder_spec or "lite0"
            enc = load_encoder(spec, weights or (coll.encoder_weights if spec == coll.encoder_spec else None))
            report = index_source(coll, source, enc, progress=ProgressLine("indexing", not quiet and not as_json))
            if report.interrupted:
                click.echo("interrupted while indexing: run the same command to resume", err=True)
                sys.exit(130)
        elif encoder:
            raise click.UsageError("--encoder applies when indexing SOURCE; an existing collection keeps its own")
        config = BenchConfig(
            rounds=rounds,
            k=k,
            seeds=tuple(range(seed, seed + repeats)),
            methods=methods,
            classes=classes,
            pool_split=pool_split,
            eval_split=eval_split,
            prompt=prompt,
            names=load_class_names(class_names) if class_names else {},
            graded=load_mapping(graded) if graded else None,
            tune=tune,
            prompt_from=prompt_from,
            settings=overrides,
        )
        command = _command_line(ctx)
        start = time.perf_counter()
        result = run_benchmark(
            coll, config, dataset=name, progress=ProgressLine("bench", not quiet and not as_json, unit="runs")
        )
        seconds = time.perf_counter() - start
    result.timing["total"] = round(seconds, 3)
    out = out or coll.root / "bench" / (
        name + ("-tune" if tune else "") + ("-other-class" if prompt_from != "own" else "")
    )
    written = write_reports(result, out, budgets=budgets, command=command)
    if as_json:
        click.echo(
            json.dumps(
                {
                    "version": 1,
                    "dataset": name,
                    "seconds": round(seconds, 1),
                    "files": {k: str(v) for k, v in written.items()},
                    "summary": summarize(result),
                },
                indent=2,
            )
        )
        return
    click.echo(written["markdown"].read_text())
    click.echo(f"loop: {seconds:.0f} s; reports in {out}: " + ", ".join(p.name for p in written.values()), err=True)
