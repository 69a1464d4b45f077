"""`localq bench`: the label-efficiency benchmark.

A simulated labeler drives the same core API as the TUI and the CLI
(:class:`localq.loop.trainer.Trainer` on an indexed collection) for every class of a labeled
collection, several methods, several seeds and a fixed number of rounds; the report
compares the methods at equal label budgets, on a held-out split.

- ``datasets``: labeled collections from folder layouts or Hugging Face parquet exports,
  and readable class names (WordNet synsets -> words) for the prompts
- ``labeler``: the simulated person (+1 / -1, or graded scores from a mapping file)
- ``supervised``: the full-supervision ceiling
- ``runner``: the loop over classes x methods x seeds x rounds
- ``report``: JSON, CSV, markdown and PNG learning curves

A library only: the `localq bench` command that drives it is ``localq.cli.bench``.
"""
